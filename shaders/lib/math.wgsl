// Elementary functions accurate to a few ulp on every device, for per-channel
// activations (softplus, SiLU, sigmoid). WGSL leaves `exp` and `log` loose (Vulkan allows exp
// 3 + 2|x| ulp; llvmpipe's `log` carries an absolute error near 1, which made softplus(-15)
// 2x wrong, and its `exp` is 8-30 ulp off at |x| = 20..30). These use only +, *, fma, round
// and exponent-field bitcasts. The scan's per-state exp(delta A) stays the native `exp`: it
// is the hot loop, and measured at the mamba-130m shape it did not change the logits' error.

// e^x: x = k ln2 + r (Cody-Waite: ln2 split in a 15-bit head and a tail, so k * head is
// exact even where fma is unfused), e^r by its Taylor series to r^7 on |r| <= ln2 / 2 (error
// below 0.15 ulp), times 2^k built from two exponent fields (ldexp(p, 128) overflows on
// back ends that lower it to p * exp2(k)). NaN stays NaN (select, not min, which would drop
// it); below -87.5 the result is 0 and above 88.7 it saturates at 3.4e38.
fn exp_f32(x: f32) -> f32 {
    if (x < -87.5) {
        return 0.0;
    }
    let xc = select(x, 88.7, x > 88.7);
    let k = round(xc * 1.4426950408889634);
    var r = fma(-k, 0.693145751953125, xc);
    r = fma(-k, 1.4286068203094173e-6, r);
    let poly = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0
        + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let ki = i32(k);
    let h = ki / 2;
    return poly * bitcast<f32>(u32(h + 127) << 23u) * bitcast<f32>(u32(ki - h + 127) << 23u);
}

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp_f32(-x));
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp_f32(-x));
}

// log(1 + e) for e in [0, 1]: 2 atanh(s) with s = e / (2 + e) <= 1/3, its series to s^15
// (the first term left out is below 2e-9 of the sum).
fn log1p_unit(e: f32) -> f32 {
    let s = e / (2.0 + e);
    let t = s * s;
    let poly = 1.0 + t * (1.0 / 3.0 + t * (1.0 / 5.0 + t * (1.0 / 7.0 + t * (1.0 / 9.0
        + t * (1.0 / 11.0 + t * (1.0 / 13.0 + t * (1.0 / 15.0)))))));
    return 2.0 * s * poly;
}

// PyTorch's softplus (beta 1, threshold 20): log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|));
// NaN in, NaN out.
fn softplus(x: f32) -> f32 {
    if (x > 20.0) {
        return x;
    }
    return select(0.0, x, x > 0.0) + log1p_unit(exp_f32(-abs(x)));
}
