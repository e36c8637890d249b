// RMSNorm over the last dimension (eps inside the root, as Mamba's), one workgroup per row.
// `add_rms_norm` first forms residual_out = x + residual and normalises that (Mamba's
// fused add + norm); `rms_norm` normalises x alone.

#include "lib/common.wgsl"

struct Params {
    rows: u32,
    d: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn rms_norm(ids: Ids, wg: Wg) {
    let row = group_index(wg);
    if (row >= p.rows) {
        return;
    }
    let o = row * p.d;
    var q = 0.0;
    for (var i = ids.lid; i < p.d; i += WG) {
        let v = x[o + i];
        q += v * v;
    }
    let r = 1.0 / sqrt(block_sum(q, ids) / f32(p.d) + p.eps);
    for (var i = ids.lid; i < p.d; i += WG) {
        out[o + i] = x[o + i] * r * weight[i];
    }
}

@group(0) @binding(1) var<storage, read> ax: array<f32>;
@group(0) @binding(2) var<storage, read> ares: array<f32>;
@group(0) @binding(3) var<storage, read> aweight: array<f32>;
@group(0) @binding(4) var<storage, read_write> aout: array<f32>;
@group(0) @binding(5) var<storage, read_write> ares_out: array<f32>;

@compute @workgroup_size(WG)
fn add_rms_norm(ids: Ids, wg: Wg) {
    let row = group_index(wg);
    if (row >= p.rows) {
        return;
    }
    let o = row * p.d;
    var q = 0.0;
    for (var i = ids.lid; i < p.d; i += WG) {
        let v = ax[o + i] + ares[o + i];
        ares_out[o + i] = v;
        q += v * v;
    }
    let r = 1.0 / sqrt(block_sum(q, ids) / f32(p.d) + p.eps);
    for (var i = ids.lid; i < p.d; i += WG) {
        let v = ax[o + i] + ares[o + i];
        aout[o + i] = v * r * aweight[i];
    }
}
