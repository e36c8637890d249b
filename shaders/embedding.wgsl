// Embedding gather: out[r, :] = table[ids[r], :]. Ids are checked against the vocabulary at
// the boundary (loader/CLI); an id out of range here yields a zero row, never a stray read.
#ifdef F16
enable f16;
#endif

#include "lib/common.wgsl"

#ifdef F16
alias TT = f16;
#else
alias TT = f32;
#endif

struct Params {
    rows: u32,
    dim: u32,
    vocab: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> token_ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<TT>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn gather_rows(ids: Ids) {
    let i = group_index(ids) * 256u + ids.lid;
    if (i >= p.rows * p.dim) {
        return;
    }
    let r = i / p.dim;
    let c = i % p.dim;
    let t = token_ids[r];
    var v = 0.0;
    if (t < p.vocab) {
        v = f32(table[t * p.dim + c]);
    }
    out[i] = v;
}
