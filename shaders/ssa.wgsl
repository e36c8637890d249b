// Spiking self-attention (Spikformer SSA, and Meta-SpikeFormer's linear spike attention) on
// packed spikes q, k, v [T, B, C, W] (bits along the N tokens; heads split channels as
// c = h * d + j). Exact integer arithmetic:
//   `ssa_kv`:   kv[t, b, h, j1, j2] = sum_n k[j1, n] v[j2, n]      (popcount of k AND v)
//   `ssa_attn`: a[n, j2] = (sum_j1 q[j1, n] kv[j1, j2]) * scale, then the attention LIF over T
//               (threshold v_th, hard reset), written as packed spikes [T, B, C, W].
// Counts stay far below 2^24, so this equals the float computation bit for bit.

#include "lib/common.wgsl"

struct Params {
    t: u32,
    b: u32,
    heads: u32,
    d: u32,
    n: u32,
    words: u32,
    scale: f32,
    v_th: f32,
    tau: f32,
    v_reset: f32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> k_bits: array<u32>;
@group(0) @binding(2) var<storage, read> v_bits: array<u32>;
@group(0) @binding(3) var<storage, read_write> kv: array<u32>;

@compute @workgroup_size(WG)
fn ssa_kv(ids: Ids, wg: Wg) {
    let dd = p.d * p.d;
    let i = group_index(wg) * WG + ids.lid;
    if (i >= p.t * p.b * p.heads * dd) {
        return;
    }
    let j2 = i % p.d;
    let j1 = (i / p.d) % p.d;
    let tbh = i / dd;
    let h = tbh % p.heads;
    let tb = tbh / p.heads;
    let c = p.heads * p.d;
    let krow = (tb * c + h * p.d + j1) * p.words;
    let vrow = (tb * c + h * p.d + j2) * p.words;
    var s = 0u;
    for (var w = 0u; w < p.words; w += 1u) {
        s += countOneBits(k_bits[krow + w] & v_bits[vrow + w]);
    }
    kv[i] = s;
}

@group(0) @binding(1) var<storage, read> q_bits: array<u32>;
@group(0) @binding(2) var<storage, read> kv_in: array<u32>;
@group(0) @binding(3) var<storage, read_write> attn_bits: array<u32>;

#include "lib/spike_words.wgsl"

// One invocation per (b, h, j2, token): 32 consecutive invocations are the 32 tokens of one
// output word, each with its membrane in a register over T and its sum over j1 a scalar (the
// q word and kv entry it reads are the same for all 32: broadcasts). Each step's spikes are
// OR-ed into the word in workgroup memory and written by its first lane. No invocation
// returns early: the barriers stay in uniform control flow.
@compute @workgroup_size(WG)
fn ssa_attn(ids: Ids, wg: Wg) {
    let slot = group_index(wg) * WG + ids.lid;
    let lane = ids.lid % 32u;
    let i = slot / 32u;
    let live_word = i < p.b * p.heads * p.d * p.words;
    let w = i % p.words;
    let j2 = (i / p.words) % p.d;
    let bh = i / (p.words * p.d);
    let h = bh % p.heads;
    let b = bh / p.heads;
    let c = p.heads * p.d;
    let live = live_word && w * 32u + lane < p.n;
    words_clear(ids.lid);
    var v = 0.0;
    for (var t = 0u; t < p.t; t += 1u) {
        let tb = t * p.b + b;
        if (live) {
            let kv_base = ((tb * p.heads + h) * p.d) * p.d;
            var acc = 0u;
            for (var j1 = 0u; j1 < p.d; j1 += 1u) {
                let bit = (q_bits[(tb * c + h * p.d + j1) * p.words + w] >> lane) & 1u;
                acc += bit * kv_in[kv_base + j1 * p.d + j2];
            }
            let x = f32(acc) * p.scale;
            let hm = v + (x - v) / p.tau;
            let spike = hm >= p.v_th;
            v = select(hm, p.v_reset, spike);
            if (spike) {
                word_or(ids.lid);
            }
        }
        let word = words_end_step(ids.lid);
        if (lane == 0u && live_word) {
            attn_bits[(tb * c + h * p.d + j2) * p.words + w] = word;
        }
    }
}
