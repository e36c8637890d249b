// Multi-step LIF neurons (SpikingJelly MultiStepLIFNode, decay_input, hard reset), over the
// leading time axis of x [T, B, C, S]: per step h = v + (x - v) / tau, spike = h >= v_th,
// v = spike ? v_reset : h, with v = 0 at t = 0. The BatchNorm affine that feeds the neuron
// (alpha, beta per channel) is fused in front, and `lif` can add a residual to its output.
// x may also be [B, C, S] repeated over T (an image fed to every time step).
// `lif`: f32 output (spike, or spike + residual). `lif_bits`: packed spikes, 32 positions of
// S per u32 word, rows [T, B, C] of ceil(S / 32) words.

#include "lib/common.wgsl"

struct Params {
    t: u32,
    b: u32,
    c: u32,
    s: u32,
    v_th: f32,
    v_reset: f32,
    tau: f32,
    has_bn: u32,
    has_residual: u32,
    words: u32,
    // Elements between time steps of x: B * C * S, or 0 when one input repeats over T.
    x_t_stride: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> alpha: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

fn charge(xv: f32, c: u32) -> f32 {
    if (p.has_bn != 0u) {
        return xv * alpha[c] + beta[c];
    }
    return xv;
}

@compute @workgroup_size(WG)
fn lif(ids: Ids, wg: Wg) {
    let n = p.b * p.c * p.s;
    let i = group_index(wg) * WG + ids.lid;
    if (i >= n) {
        return;
    }
    let c = (i / p.s) % p.c;
    var v = 0.0;
    for (var t = 0u; t < p.t; t += 1u) {
        let j = t * n + i;
        let h = v + (charge(x[t * p.x_t_stride + i], c) - v) / p.tau;
        let spike = h >= p.v_th;
        v = select(h, p.v_reset, spike);
        var o = select(0.0, 1.0, spike);
        if (p.has_residual != 0u) {
            o += residual[j];
        }
        out[j] = o;
    }
}

@group(0) @binding(1) var<storage, read> bx: array<f32>;
@group(0) @binding(2) var<storage, read> balpha: array<f32>;
@group(0) @binding(3) var<storage, read> bbeta: array<f32>;
@group(0) @binding(4) var<storage, read_write> bits: array<u32>;

#include "lib/spike_words.wgsl"

// One invocation per neuron (32 consecutive invocations = one output word, so loads of x are
// coalesced), its membrane in a register over T; each step's spikes are OR-ed into the
// word in workgroup memory, which the word's first lane writes. Every invocation reaches the
// barriers (none returns early: they must stay in uniform control flow).
@compute @workgroup_size(WG)
fn lif_bits(ids: Ids, wg: Wg) {
    let rows = p.b * p.c;
    let slot = group_index(wg) * WG + ids.lid;
    let lane = ids.lid % 32u;
    let wi = slot / 32u;
    let live_word = wi < rows * p.words;
    let row = wi / p.words;
    let w = wi % p.words;
    let si = w * 32u + lane;
    let live = live_word && si < p.s;
    var a = 1.0;
    var b = 0.0;
    if (live && p.has_bn != 0u) {
        a = balpha[row % p.c];
        b = bbeta[row % p.c];
    }
    words_clear(ids.lid);
    var v = 0.0;
    for (var t = 0u; t < p.t; t += 1u) {
        if (live) {
            var xv = bx[t * p.x_t_stride + row * p.s + si];
            if (p.has_bn != 0u) {
                xv = xv * a + b;
            }
            let h = v + (xv - v) / p.tau;
            let spike = h >= p.v_th;
            v = select(h, p.v_reset, spike);
            if (spike) {
                word_or(ids.lid);
            }
        }
        let word = words_end_step(ids.lid);
        if (lane == 0u && live_word) {
            bits[(t * rows + row) * p.words + w] = word;
        }
    }
}

@group(0) @binding(1) var<storage, read> sx: array<f32>;
@group(0) @binding(2) var<storage, read> salpha: array<f32>;
@group(0) @binding(3) var<storage, read> sbeta: array<f32>;
@group(0) @binding(4) var<storage, read_write> sv: array<f32>;
@group(0) @binding(5) var<storage, read_write> sout: array<f32>;

// One time step of b * c * s neurons whose membranes persist in `sv` between calls
// (streaming: each call is the next step).
@compute @workgroup_size(WG)
fn lif_state(ids: Ids, wg: Wg) {
    let n = p.b * p.c * p.s;
    let i = group_index(wg) * WG + ids.lid;
    if (i >= n) {
        return;
    }
    let c = (i / p.s) % p.c;
    var xv = sx[i];
    if (p.has_bn != 0u) {
        xv = xv * salpha[c] + sbeta[c];
    }
    let v = sv[i];
    let h = v + (xv - v) / p.tau;
    let spike = h >= p.v_th;
    sv[i] = select(h, p.v_reset, spike);
    sout[i] = select(0.0, 1.0, spike);
}
