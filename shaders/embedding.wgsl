// Embedding gather: out[r, :] = table[ids[r] - first, :] for the ids this table holds
// (rows first .. first + vocab: one block of a table split across bindings); other rows are
// left alone, except that ids >= zero_from get a zero row. Ids are checked against the
// vocabulary at the boundary (loader/CLI); an id out of range never reads out of bounds.
// PAIR: two consecutive blocks in one dispatch (table_b holds the vocab_b rows after
// table's), so a table split in two bindings (lavapipe's 128 MiB) is still one gather.
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
    first: u32,
    zero_from: u32,
    // PAIR: rows in table_b.
    vocab_b: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> token_ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<TT>;
#ifdef PAIR
@group(0) @binding(3) var<storage, read> table_b: array<TT>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
#else
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
#endif

@compute @workgroup_size(WG)
fn gather_rows(ids: Ids, wg: Wg) {
    let i = group_index(wg) * WG + ids.lid;
    if (i >= p.rows * p.dim) {
        return;
    }
    let r = i / p.dim;
    let c = i % p.dim;
    let t = token_ids[r];
    if (t >= p.first && t - p.first < p.vocab) {
        out[i] = f32(table[(t - p.first) * p.dim + c]);
        return;
    }
#ifdef PAIR
    // (t - first >= vocab here, or the branch above returned.)
    if (t >= p.first && t - p.first - p.vocab < p.vocab_b) {
        out[i] = f32(table_b[(t - p.first - p.vocab) * p.dim + c]);
        return;
    }
#endif
    if (t >= p.zero_from) {
        out[i] = 0.0;
    }
}
