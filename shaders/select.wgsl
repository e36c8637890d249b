// Top-k per row (argmax is k = 1), one workgroup per row: k rounds, each picking the best
// element ranked after the previous pick. Order: larger value first, NaN above everything
// (as torch.topk / torch.argmax), ties to the smaller index. Only the first n entries of each
// row count (a padded vocabulary's extra rows never win).

#include "lib/common.wgsl"

struct Params {
    rows: u32,
    // Entries considered per row (a prefix of the row) and the row length.
    n: u32,
    k: u32,
    stride: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out_idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> out_val: array<f32>;

var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;

fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// True when (av, ai) ranks before (bv, bi).
fn before(av: f32, ai: u32, bv: f32, bi: u32) -> bool {
    let an = is_nan(av);
    let bn = is_nan(bv);
    if (an != bn) {
        return an;
    }
    if (!an && av != bv) {
        return av > bv;
    }
    return ai < bi;
}

const NONE: u32 = 0xffffffffu;

@compute @workgroup_size(WG)
fn topk(ids: Ids, wg: Wg) {
    let row = group_index(wg);
    if (row >= p.rows) {
        return;
    }
    let o = row * p.stride;
    var prev_v = 0.0;
    var prev_i = NONE;
    for (var j = 0u; j < p.k; j += 1u) {
        var bv = 0.0;
        var bi = NONE;
        for (var e = ids.lid; e < p.n; e += WG) {
            let v = x[o + e];
            let eligible = prev_i == NONE || before(prev_v, prev_i, v, e);
            if (eligible && (bi == NONE || before(v, e, bv, bi))) {
                bv = v;
                bi = e;
            }
        }
        best_v[ids.lid] = bv;
        best_i[ids.lid] = bi;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s = s >> 1u) {
            if (ids.lid < s) {
                let ov = best_v[ids.lid + s];
                let oi = best_i[ids.lid + s];
                if (oi != NONE && (best_i[ids.lid] == NONE || before(ov, oi, best_v[ids.lid], best_i[ids.lid]))) {
                    best_v[ids.lid] = ov;
                    best_i[ids.lid] = oi;
                }
            }
            workgroupBarrier();
        }
        prev_v = best_v[0];
        prev_i = best_i[0];
        workgroupBarrier();
        if (ids.lid == 0u) {
            out_idx[row * p.k + j] = prev_i;
            out_val[row * p.k + j] = prev_v;
        }
    }
}
