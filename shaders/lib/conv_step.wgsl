// One decode step of Mamba's causal depthwise conv1d (width k) for sequence b and channel c
// of d: silu(bias[c] + w[c, k - 1] * xn + sum_j w[c, j] * state[b, c, j]), the state
// [B, D, K - 1] (the previous K - 1 inputs) shifted in place and xn appended. The including
// shader declares f32 arrays cv_w [D, K], cv_bias [D] (read) and cv_state (read_write), and
// includes lib/math.wgsl (silu). Used by causal_conv1d.wgsl's step and by the projection
// that fuses it into its epilogue (matmul.wgsl's `skinny` with CONV_STEP).
fn conv_step(b: u32, c: u32, d: u32, k: u32, xn: f32) -> f32 {
    let km1 = k - 1u;
    let base = (b * d + c) * km1;
    var acc = cv_bias[c] + cv_w[c * k + km1] * xn;
    for (var j = 0u; j < km1; j += 1u) {
        acc += cv_w[c * k + j] * cv_state[base + j];
    }
    for (var j = 0u; j + 1u < km1; j += 1u) {
        cv_state[base + j] = cv_state[base + j + 1u];
    }
    if (km1 > 0u) {
        cv_state[base + km1 - 1u] = xn;
    }
    return silu(acc);
}
