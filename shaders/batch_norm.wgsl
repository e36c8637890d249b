// Eval-mode BatchNorm as a per-channel affine y = x * alpha[c] + beta[c] over [N, C, S],
// with alpha = weight / sqrt(var + eps) and beta = bias - mean * alpha computed at load time
// in f32, the way PyTorch's CPU inference path folds them.

#include "lib/common.wgsl"

struct Params {
    n: u32,
    c: u32,
    s: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> alpha: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn channel_affine(ids: Ids, wg: Wg) {
    let i = group_index(wg) * WG + ids.lid;
    if (i >= p.n) {
        return;
    }
    let c = (i / p.s) % p.c;
    out[i] = x[i] * alpha[c] + beta[c];
}
