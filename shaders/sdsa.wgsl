// Spike-driven self-attention (Spike-driven Transformer V1) on packed spikes [T, B, C, W]:
// kv[t, b, c] = sum_n k[c, n] AND v[c, n] (popcount), an LIF over T on kv (threshold v_th,
// hard reset), then out = q AND kv_spike (the whole row of q, or nothing).

#include "lib/common.wgsl"

struct Params {
    t: u32,
    b: u32,
    c: u32,
    words: u32,
    v_th: f32,
    tau: f32,
    v_reset: f32,
    _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<u32>;
@group(0) @binding(2) var<storage, read> k: array<u32>;
@group(0) @binding(3) var<storage, read> v: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(WG)
fn sdsa(ids: Ids, wg: Wg) {
    let i = group_index(wg) * WG + ids.lid;
    if (i >= p.b * p.c) {
        return;
    }
    var mem = 0.0;
    for (var t = 0u; t < p.t; t += 1u) {
        let row = (t * p.b * p.c + i) * p.words;
        var s = 0u;
        for (var w = 0u; w < p.words; w += 1u) {
            s += countOneBits(k[row + w] & v[row + w]);
        }
        let h = mem + (f32(s) - mem) / p.tau;
        let spike = h >= p.v_th;
        mem = select(h, p.v_reset, spike);
        let mask = select(0u, 0xffffffffu, spike);
        for (var w = 0u; w < p.words; w += 1u) {
            out[row + w] = q[row + w] & mask;
        }
    }
}
