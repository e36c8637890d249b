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
@compute @workgroup_size(256)
fn spike_linear(ids: Ids) {
    let i = group_index(ids) * 256u + ids.lid;
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
@compute @workgroup_size(256)
fn pack_bits(ids: Ids) {
    let i = group_index(ids) * 256u + ids.lid;
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
@compute @workgroup_size(256)
fn unpack_bits(ids: Ids) {
    let i = group_index(ids) * 256u + ids.lid;
    if (i >= p.r * p.n) {
        return;
    }
    let row = i / p.n;
    let j = i % p.n;
    let word = src_bits[row * p.words + j / 32u];
    unpacked[i] = f32((word >> (j % 32u)) & 1u);
}

// 2-D convolution of packed binary spike maps: spikes [N, Cin, H * W] (bits along the
// flattened H * W of each channel), weights [Cout, Cin / groups, KH, KW] f32, zero padding,
// stride, dilation, groups; f32 output [N, Cout, OH, OW]. One invocation per output.
struct ConvParams {
    n: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    dh: u32,
    dw: u32,
    groups: u32,
    has_bias: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> cp: ConvParams;
@group(0) @binding(1) var<storage, read> conv_bits: array<u32>;
@group(0) @binding(2) var<storage, read> conv_w: array<f32>;
@group(0) @binding(3) var<storage, read> conv_bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> conv_out: array<f32>;

@compute @workgroup_size(256)
fn spike_conv2d(ids: Ids) {
    let i = group_index(ids) * 256u + ids.lid;
    if (i >= cp.n * cp.cout * cp.oh * cp.ow) {
        return;
    }
    let ox = i % cp.ow;
    let oy = (i / cp.ow) % cp.oh;
    let co = (i / (cp.ow * cp.oh)) % cp.cout;
    let b = i / (cp.ow * cp.oh * cp.cout);
    let cin_g = cp.cin / cp.groups;
    let g = co / (cp.cout / cp.groups);
    let words = (cp.h * cp.w + 31u) / 32u;
    var acc = 0.0;
    for (var ci = 0u; ci < cin_g; ci += 1u) {
        let row = (b * cp.cin + g * cin_g + ci) * words;
        let wc = (co * cin_g + ci) * cp.kh;
        for (var ky = 0u; ky < cp.kh; ky += 1u) {
            let iy = i32(oy * cp.sh + ky * cp.dh) - i32(cp.ph);
            if (iy < 0 || iy >= i32(cp.h)) {
                continue;
            }
            for (var kx = 0u; kx < cp.kw; kx += 1u) {
                let ix = i32(ox * cp.sw + kx * cp.dw) - i32(cp.pw);
                if (ix < 0 || ix >= i32(cp.w)) {
                    continue;
                }
                let pos = u32(iy) * cp.w + u32(ix);
                if (((conv_bits[row + pos / 32u] >> (pos % 32u)) & 1u) != 0u) {
                    acc += conv_w[(wc + ky) * cp.kw + kx];
                }
            }
        }
    }
    if (cp.has_bias != 0u) {
        acc += conv_bias[co];
    }
    conv_out[i] = acc;
}
