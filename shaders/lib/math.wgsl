// Elementary functions accurate to about one ulp on every device, for per-channel
// activations (softplus, SiLU, sigmoid). WGSL leaves `exp` and `log` loose (Vulkan allows exp
// 3 + 2|x| ulp; llvmpipe's `log` carries an absolute error near 1, which made softplus(-15)
// 2x wrong, and its `exp` is 8-30 ulp off at |x| = 20..30). These use only +, *, fma and
// ldexp. The scan's per-state exp(delta A) stays the native `exp`: it is the hot loop, and
// measured at the mamba-130m shape it did not change the logits' error.

// e^x: x = k ln2 + r (Cody-Waite: ln2 split in a 16-bit head and a tail, so k * head is
// exact), e^r by its Taylor series to r^7 on |r| <= ln2 / 2 (error below 6e-9), times 2^k.
fn exp_f32(x: f32) -> f32 {
    if (x < -87.5) {
        return 0.0;
    }
    let xc = min(x, 88.7);
    let k = round(xc * 1.4426950408889634);
    var r = fma(-k, 0.693145751953125, xc);
    r = fma(-k, 1.4286068203094173e-6, r);
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0
        + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    return ldexp(p, i32(k));
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
    let p = 1.0 + t * (1.0 / 3.0 + t * (1.0 / 5.0 + t * (1.0 / 7.0 + t * (1.0 / 9.0
        + t * (1.0 / 11.0 + t * (1.0 / 13.0 + t * (1.0 / 15.0)))))));
    return 2.0 * s * p;
}

// PyTorch's softplus (beta 1, threshold 20): log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)).
fn softplus(x: f32) -> f32 {
    if (x > 20.0) {
        return x;
    }
    return max(x, 0.0) + log1p_unit(exp_f32(-abs(x)));
}
