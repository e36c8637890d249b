// Mamba's causal depthwise conv1d (width K <= 8) with bias and SiLU, over x [B, L, D] read
// with a row stride (the x half of in_proj's output), continuing from a conv state
// [B, D, K - 1] (the previous K - 1 inputs; zeros for a fresh sequence):
//   out[b, t, c] = silu(bias[c] + sum_k w[c, k] * x[b, t - (K - 1) + k, c])
// `causal_conv1d` also writes the new state (the last K - 1 inputs) to state_out;
// `causal_conv1d_step` (decode, L = 1) updates the state in place (lib/conv_step.wgsl, which
// matmul.wgsl's skinny projection also runs in its epilogue).

#include "lib/common.wgsl"
#include "lib/math.wgsl"

struct Params {
    batch: u32,
    len: u32,
    d: u32,
    k: u32,
    x_stride: u32,
    has_state: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> state_in: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> state_out: array<f32>;

// Input at position `pos` of the sequence extended to the left by the state (pos may be
// negative down to -(K - 1)).
fn x_at(b: u32, pos: i32, c: u32) -> f32 {
    if (pos >= 0) {
        return x[(b * p.len + u32(pos)) * p.x_stride + c];
    }
    if (p.has_state == 0u) {
        return 0.0;
    }
    let km1 = i32(p.k) - 1;
    return state_in[(b * p.d + c) * u32(km1) + u32(km1 + pos)];
}

@compute @workgroup_size(WG)
fn causal_conv1d(ids: Ids, wg: Wg) {
    let i = group_index(wg) * WG + ids.lid;
    if (i >= p.batch * p.len * p.d) {
        return;
    }
    let c = i % p.d;
    let t = (i / p.d) % p.len;
    let b = i / (p.d * p.len);
    var acc = bias[c];
    for (var j = 0u; j < p.k; j += 1u) {
        acc += w[c * p.k + j] * x_at(b, i32(t) - i32(p.k - 1u) + i32(j), c);
    }
    out[i] = silu(acc);
    // The last K - 1 positions become the new state.
    let km1 = p.k - 1u;
    if (t == p.len - 1u) {
        for (var j = 0u; j < km1; j += 1u) {
            state_out[(b * p.d + c) * km1 + j] = x_at(b, i32(p.len) - i32(km1) + i32(j), c);
        }
    }
}

@group(0) @binding(1) var<storage, read> sx: array<f32>;
@group(0) @binding(2) var<storage, read> cv_w: array<f32>;
@group(0) @binding(3) var<storage, read> cv_bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> sout: array<f32>;
@group(0) @binding(5) var<storage, read_write> cv_state: array<f32>;

#include "lib/conv_step.wgsl"

@compute @workgroup_size(WG)
fn causal_conv1d_step(ids: Ids, wg: Wg) {
    let i = group_index(wg) * WG + ids.lid;
    if (i >= p.batch * p.d) {
        return;
    }
    let c = i % p.d;
    let b = i / p.d;
    sout[i] = conv_step(b, c, p.d, p.k, sx[b * p.x_stride + c]);
}
