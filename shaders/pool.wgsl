// 2-D max pooling, NCHW, as torch.nn.MaxPool2d (implicit -inf padding, floor mode, dilation;
// NaN propagates). One invocation per output element.

#include "lib/common.wgsl"

struct Params {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
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
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

@compute @workgroup_size(WG)
fn maxpool2d(ids: Ids, wg: Wg) {
    let i = group_index(wg) * WG + ids.lid;
    if (i >= p.n * p.c * p.oh * p.ow) {
        return;
    }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let nc = i / (p.ow * p.oh);
    // -inf; through a `let` so it is not a constant expression (WGSL rejects one that
    // evaluates to an infinity).
    let neg_inf_bits = 0xff800000u;
    var m = bitcast<f32>(neg_inf_bits);
    for (var ky = 0u; ky < p.kh; ky += 1u) {
        let iy = i32(oy * p.sh + ky * p.dh) - i32(p.ph);
        if (iy < 0 || iy >= i32(p.h)) {
            continue;
        }
        for (var kx = 0u; kx < p.kw; kx += 1u) {
            let ix = i32(ox * p.sw + kx * p.dw) - i32(p.pw);
            if (ix < 0 || ix >= i32(p.w)) {
                continue;
            }
            let v = x[(nc * p.h + u32(iy)) * p.w + u32(ix)];
            if (v > m || is_nan(v)) {
                m = v;
            }
        }
    }
    out[i] = m;
}

// Max pooling of binary spike maps packed along the flattened H * W axis (32 positions per
// word, rows [N * C]): the max of 0/1 values is an OR. One invocation per output word.
@group(0) @binding(1) var<storage, read> in_bits: array<u32>;
@group(0) @binding(2) var<storage, read_write> out_bits: array<u32>;

fn bit_at(row_base: u32, pos: u32) -> u32 {
    return (in_bits[row_base + pos / 32u] >> (pos % 32u)) & 1u;
}

@compute @workgroup_size(WG)
fn maxpool2d_bits(ids: Ids, wg: Wg) {
    let in_words = (p.h * p.w + 31u) / 32u;
    let out_words = (p.oh * p.ow + 31u) / 32u;
    let i = group_index(wg) * WG + ids.lid;
    if (i >= p.n * p.c * out_words) {
        return;
    }
    let row = i / out_words;
    let wd = i % out_words;
    let base = row * in_words;
    let o0 = wd * 32u;
    let lanes = min(32u, p.oh * p.ow - o0);
    var word = 0u;
    for (var j = 0u; j < lanes; j += 1u) {
        let o = o0 + j;
        let oy = o / p.ow;
        let ox = o % p.ow;
        var m = 0u;
        for (var ky = 0u; ky < p.kh; ky += 1u) {
            let iy = i32(oy * p.sh + ky * p.dh) - i32(p.ph);
            if (iy < 0 || iy >= i32(p.h)) {
                continue;
            }
            for (var kx = 0u; kx < p.kw; kx += 1u) {
                let ix = i32(ox * p.sw + kx * p.dw) - i32(p.pw);
                if (ix < 0 || ix >= i32(p.w)) {
                    continue;
                }
                m |= bit_at(base, u32(iy) * p.w + u32(ix));
            }
        }
        word |= m << j;
    }
    out_bits[i] = word;
}
