// LayerNorm over the last dimension, one workgroup per row, two passes (mean, then the
// variance of x - mean) for accuracy; biased variance as PyTorch.

#include "lib/common.wgsl"

struct Params {
    rows: u32,
    d: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn layer_norm(ids: Ids, wg: Wg) {
    let row = group_index(wg);
    if (row >= p.rows) {
        return;
    }
    let o = row * p.d;
    var s = 0.0;
    for (var i = ids.lid; i < p.d; i += WG) {
        s += x[o + i];
    }
    let mean = block_sum(s, ids) / f32(p.d);
    var q = 0.0;
    for (var i = ids.lid; i < p.d; i += WG) {
        let c = x[o + i] - mean;
        q += c * c;
    }
    let rstd = 1.0 / sqrt(block_sum(q, ids) / f32(p.d) + p.eps);
    for (var i = ids.lid; i < p.d; i += WG) {
        out[o + i] = (x[o + i] - mean) * rstd * gamma[i] + beta[i];
    }
}
