// Packing between 0/1 maps and packed binary spikes (32 positions per u32 word along the
// last axis). The products of packed spikes and weights run on the tiled GEMM (matmul.wgsl's
// B_BITS variant, the spikes expanded to 0/1 as its tiles are fetched).

#include "lib/common.wgsl"

struct Params {
    r: u32,
    k: u32,
    cout: u32,
    n: u32,
    words: u32,
    has_bias: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dense: array<f32>;
@group(0) @binding(2) var<storage, read_write> packed: array<u32>;

// Packs a 0/1 map [R, N] into words [R, W] (any non-zero counts as a spike).
@compute @workgroup_size(WG)
fn pack_bits(ids: Ids, wg: Wg) {
    let i = group_index(wg) * WG + ids.lid;
    if (i >= p.r * p.words) {
        return;
    }
    let row = i / p.words;
    let wd = i % p.words;
    let n0 = wd * 32u;
    let lanes = min(32u, p.n - n0);
    var word = 0u;
    for (var j = 0u; j < lanes; j += 1u) {
        word |= select(0u, 1u << j, dense[row * p.n + n0 + j] != 0.0);
    }
    packed[i] = word;
}

@group(0) @binding(1) var<storage, read> src_bits: array<u32>;
@group(0) @binding(2) var<storage, read_write> unpacked: array<f32>;

// Unpacks words [R, W] into a 0/1 map [R, N].
@compute @workgroup_size(WG)
fn unpack_bits(ids: Ids, wg: Wg) {
    let i = group_index(wg) * WG + ids.lid;
    if (i >= p.r * p.n) {
        return;
    }
    let row = i / p.n;
    let j = i % p.n;
    let word = src_bits[row * p.words + j / 32u];
    unpacked[i] = f32((word >> (j % 32u)) & 1u);
}
