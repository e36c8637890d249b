// RMSNorm over the last dimension (eps inside the root, as Mamba's), one workgroup per row.
// `add_rms_norm` first forms residual_out = x + residual and normalises that (Mamba's
// fused add + norm); `rms_norm` normalises x alone. `rms_norm_segments` normalises up to
// four column ranges of every row in place, each on its own and without a weight
// (Falcon-Mamba's dt, B and C norms), one workgroup per (row, segment).

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

struct SegParams {
    rows: u32,
    // Elements from one row to the next.
    stride: u32,
    // Segments per row, 1..=4.
    segments: u32,
    eps: f32,
    // Segment j covers columns offset[j] .. offset[j] + len[j] of each row.
    offset: vec4<u32>,
    len: vec4<u32>,
}

@group(0) @binding(0) var<uniform> sp: SegParams;

@group(0) @binding(1) var<storage, read_write> sx: array<f32>;

// Workgroup g takes segment g % segments of row g / segments; both come from the workgroup
// id, so the early return and the reduction's barriers stay in uniform control flow. Each
// invocation rewrites only the elements it read; columns outside the segments are never
// touched.
@compute @workgroup_size(WG)
fn rms_norm_segments(ids: Ids, wg: Wg) {
    let g = group_index(wg);
    if (g >= sp.rows * sp.segments) {
        return;
    }
    let row = g / sp.segments;
    let j = g % sp.segments;
    let n = sp.len[j];
    let o = row * sp.stride + sp.offset[j];
    var q = 0.0;
    for (var i = ids.lid; i < n; i += WG) {
        let v = sx[o + i];
        q += v * v;
    }
    let r = 1.0 / sqrt(block_sum(q, ids) / f32(n) + sp.eps);
    for (var i = ids.lid; i < n; i += WG) {
        sx[o + i] = sx[o + i] * r;
    }
}
