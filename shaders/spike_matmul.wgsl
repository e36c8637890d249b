// Spike-input products: packed binary spikes [R, K, W] (W words of 32 positions along the
// last axis, N positions in all) times f32 weights [Cout, K] (a 1x1 conv / Linear over the
// channel axis), plus bias: out[r, co, n] = sum_k w[co, k] * s[r, k, n] + bias[co].
// A spike costs one add; activation traffic is 1 bit per element instead of 32.

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
@group(0) @binding(1) var<storage, read> spikes: array<u32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// One invocation per (r, co, word): 32 outputs along n.
@compute @workgroup_size(WG)
fn spike_linear(ids: Ids, wg: Wg) {
    let i = group_index(wg) * WG + ids.lid;
    if (i >= p.r * p.cout * p.words) {
        return;
    }
    let wd = i % p.words;
    let co = (i / p.words) % p.cout;
    let r = i / (p.words * p.cout);
    var acc: array<f32, 32>;
    for (var j = 0u; j < 32u; j += 1u) {
        acc[j] = 0.0;
    }
    for (var k = 0u; k < p.k; k += 1u) {
        let wv = w[co * p.k + k];
        let word = spikes[(r * p.k + k) * p.words + wd];
        if (word == 0u) {
            continue;
        }
        for (var j = 0u; j < 32u; j += 1u) {
            acc[j] += select(0.0, wv, ((word >> j) & 1u) != 0u);
        }
    }
    var b = 0.0;
    if (p.has_bias != 0u) {
        b = bias[co];
    }
    let n0 = wd * 32u;
    let lanes = min(32u, p.n - n0);
    for (var j = 0u; j < lanes; j += 1u) {
        out[(r * p.cout + co) * p.n + n0 + j] = acc[j] + b;
    }
}

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
