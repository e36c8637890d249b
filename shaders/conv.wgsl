// 2-D convolution, NCHW, weights [Cout, Cin / groups, KH, KW] as PyTorch: stride, padding,
// dilation and groups (depthwise when groups = Cin = Cout). Padding is zeros, or one value per
// input channel (`has_pad_values`: a BatchNorm-and-pad layer's border, BN(0)). Conv1d runs here
// with H = 1. The input is f32, or packed binary spikes [N, Cin, H * W] (32 positions per u32
// word) with `SPIKES` / in `spike_conv2d`.
//
// `GEMM`: the convolution as an implicit GEMM on the tiles of lib/gemm.wgsl, per (image,
// group): rows = the group's output channels, columns = output positions oy * OW + ox,
// k = (ci, ky, kx) in the weight's own order, so A is the weight tensor itself (k contiguous;
// `A_VEC`: 128-bit loads) and B is gathered from the input as the tile is fetched (4
// consecutive positions at one tap: adjacent invocations read adjacent pixels; spikes are
// expanded to 0/1, exact). `OUT_VEC`: rows written as vec4s. Split-K (p.splits > 1) writes
// slices [splits, N, Cout, OH * OW] that matmul.wgsl's `splitk_reduce` adds with the bias.
// Without `GEMM`: direct kernels, one invocation per output (depthwise and other thin groups,
// where a tile of rows would be mostly idle).

#ifdef F16
enable f16;
#endif

#include "lib/common.wgsl"

struct Params {
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
    has_pad_values: u32,
    // Split-K (GEMM only): slices of K (1: none) of k_chunk taps each (a multiple of 16).
    splits: u32,
    k_chunk: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#ifdef GEMM
#ifdef SPIKES
@group(0) @binding(1) var<storage, read> x: array<u32>;
#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
#endif
// Weights, f32 or (A_F16) f16, as 4 values at a 4-aligned index (A_VEC) or one value.
#ifdef A_F16
#ifdef A_VEC
@group(0) @binding(2) var<storage, read> wt: array<vec4<f16>>;
fn w4(i: u32) -> vec4<f32> {
    return vec4<f32>(wt[i / 4u]);
}
#else
@group(0) @binding(2) var<storage, read> wt: array<f16>;
fn w1(i: u32) -> f32 {
    return f32(wt[i]);
}
#endif
#else
#ifdef A_VEC
@group(0) @binding(2) var<storage, read> wt: array<vec4<f32>>;
fn w4(i: u32) -> vec4<f32> {
    return wt[i / 4u];
}
#else
@group(0) @binding(2) var<storage, read> wt: array<f32>;
fn w1(i: u32) -> f32 {
    return wt[i];
}
#endif
#endif
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> pad_values: array<f32>;
#ifdef OUT_VEC
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
#else
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
#endif

#include "lib/gemm.wgsl"

// This workgroup's image, group and K slice.
var<private> g_img: u32;
var<private> g_grp: u32;
var<private> g_split: u32;

fn cout_g() -> u32 {
    return p.cout / p.groups;
}

// Taps per output: the GEMM's K.
fn taps() -> u32 {
    return (p.cin / p.groups) * p.kh * p.kw;
}

// Weights: 4 consecutive taps of output channel m0 + row.
fn fetch_a(m0: u32, k0: u32, lim: u32) -> vec4<f32> {
    let s = a_slot();
    let gm = m0 + s.x;
    let gk = k0 + s.y;
    var v = vec4<f32>(0.0);
    if (s.z == 0u || gm >= cout_g()) {
        return v;
    }
    let i = (g_grp * cout_g() + gm) * taps() + gk;
#ifdef A_VEC
    if (gk >= lim) {
        return v;
    }
    return w4(i);
#else
    if (gk < lim) {
        v.x = w1(i);
    }
    if (gk + 1u < lim) {
        v.y = w1(i + 1u);
    }
    if (gk + 2u < lim) {
        v.z = w1(i + 2u);
    }
    if (gk + 3u < lim) {
        v.w = w1(i + 3u);
    }
    return v;
#endif
}

// The input under tap (ky, kx) of output position `pos` in input plane `plane` (image and
// channel), or the border value outside the image.
fn tap(plane: u32, pos: u32, ky: u32, kx: u32, border: f32) -> f32 {
    let iy = i32((pos / p.ow) * p.sh + ky * p.dh) - i32(p.ph);
    let ix = i32((pos % p.ow) * p.sw + kx * p.dw) - i32(p.pw);
    if (iy < 0 || iy >= i32(p.h) || ix < 0 || ix >= i32(p.w)) {
        return border;
    }
    let at = u32(iy) * p.w + u32(ix);
#ifdef SPIKES
    let words = (p.h * p.w + 31u) / 32u;
    return f32((x[plane * words + at / 32u] >> (at % 32u)) & 1u);
#else
    return x[plane * p.h * p.w + at];
#endif
}

// The im2col operand: positions gn .. gn + 3 at tap gk (zeros past the last position).
fn fetch_b(n0: u32, k0: u32, lim: u32) -> vec4<f32> {
    let s = b_slot();
    let gn = n0 + s.x;
    let gk = k0 + s.y;
    let npos = p.oh * p.ow;
    var v = vec4<f32>(0.0);
    if (s.z == 0u || gk >= lim || gn >= npos) {
        return v;
    }
    let kx = gk % p.kw;
    let ky = (gk / p.kw) % p.kh;
    let ci = g_grp * (p.cin / p.groups) + gk / (p.kw * p.kh);
    let plane = g_img * p.cin + ci;
    var border = 0.0;
#ifndef SPIKES
    if (p.has_pad_values != 0u) {
        border = pad_values[ci];
    }
#endif
    v.x = tap(plane, gn, ky, kx, border);
    if (gn + 1u < npos) {
        v.y = tap(plane, gn + 1u, ky, kx, border);
    }
    if (gn + 2u < npos) {
        v.z = tap(plane, gn + 2u, ky, kx, border);
    }
    if (gn + 3u < npos) {
        v.w = tap(plane, gn + 3u, ky, kx, border);
    }
    return v;
}

fn store_row(r: u32, c: u32, v: vec4<f32>) {
    let npos = p.oh * p.ow;
    if (r >= cout_g() || c >= npos) {
        return;
    }
    let co = g_grp * cout_g() + r;
    var o = v;
    var base = (g_img * p.cout + co) * npos + c;
    if (p.splits > 1u) {
        // A slice of the scratch [splits, N, Cout, OH * OW]; the reduce adds the bias.
        base += g_split * p.n * p.cout * npos;
    } else if (p.has_bias != 0u) {
        o += vec4<f32>(bias[co]);
    }
#ifdef OUT_VEC
    out[base / 4u] = o;
#else
    out[base] = o.x;
    if (c + 1u < npos) {
        out[base + 1u] = o.y;
    }
    if (c + 2u < npos) {
        out[base + 2u] = o.z;
    }
    if (c + 3u < npos) {
        out[base + 3u] = o.w;
    }
#endif
}

// Grid: (ceil(OH * OW / BN), ceil(Cout / groups / BM), N * groups * splits).
@compute @workgroup_size(WG)
fn conv_gemm(ids: Ids, wg: Wg) {
    let split = wg.wid.z % p.splits;
    let image_group = wg.wid.z / p.splits;
    g_img = image_group / p.groups;
    g_grp = image_group % p.groups;
    g_split = split;
    let m0 = wg.wid.y * BM;
    let n0 = wg.wid.x * BN;
    let kb = split * p.k_chunk;
    gemm_tile(ids.lid, m0, n0, kb, min(taps(), kb + p.k_chunk));
    gemm_store(m0, n0);
}
#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> pad_values: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

// (ox, oy, co, b) of output element i.
fn out_coords(i: u32) -> vec4<u32> {
    return vec4<u32>(i % p.ow, (i / p.ow) % p.oh, (i / (p.ow * p.oh)) % p.cout, i / (p.ow * p.oh * p.cout));
}

@compute @workgroup_size(WG)
fn conv2d(ids: Ids, wg: Wg) {
    let i = group_index(wg) * WG + ids.lid;
    let total = p.n * p.cout * p.oh * p.ow;
    if (i >= total) {
        return;
    }
    let o = out_coords(i);
    let ox = o.x;
    let oy = o.y;
    let co = o.z;
    let b = o.w;
    let cin_g = p.cin / p.groups;
    let g = co / (p.cout / p.groups);
    var acc = 0.0;
    for (var ci = 0u; ci < cin_g; ci += 1u) {
        let xc = (b * p.cin + g * cin_g + ci) * p.h;
        let wc = (co * cin_g + ci) * p.kh;
        var border = 0.0;
        if (p.has_pad_values != 0u) {
            border = pad_values[g * cin_g + ci];
        }
        for (var ky = 0u; ky < p.kh; ky += 1u) {
            let iy = i32(oy * p.sh + ky * p.dh) - i32(p.ph);
            let wrow = (wc + ky) * p.kw;
            let row_in = iy >= 0 && iy < i32(p.h);
            for (var kx = 0u; kx < p.kw; kx += 1u) {
                let ix = i32(ox * p.sw + kx * p.dw) - i32(p.pw);
                var v = border;
                if (row_in && ix >= 0 && ix < i32(p.w)) {
                    v = x[(xc + u32(iy)) * p.w + u32(ix)];
                } else if (p.has_pad_values == 0u) {
                    continue;
                }
                acc = fma(v, wt[wrow + kx], acc);
            }
        }
    }
    if (p.has_bias != 0u) {
        acc += bias[co];
    }
    out[i] = acc;
}

@group(0) @binding(1) var<storage, read> bits: array<u32>;
@group(0) @binding(2) var<storage, read> swt: array<f32>;
@group(0) @binding(3) var<storage, read> sbias: array<f32>;
@group(0) @binding(4) var<storage, read_write> sout: array<f32>;

@compute @workgroup_size(WG)
fn spike_conv2d(ids: Ids, wg: Wg) {
    let i = group_index(wg) * WG + ids.lid;
    if (i >= p.n * p.cout * p.oh * p.ow) {
        return;
    }
    let o = out_coords(i);
    let cin_g = p.cin / p.groups;
    let g = o.z / (p.cout / p.groups);
    let words = (p.h * p.w + 31u) / 32u;
    var acc = 0.0;
    for (var ci = 0u; ci < cin_g; ci += 1u) {
        let row = (o.w * p.cin + g * cin_g + ci) * words;
        let wc = (o.z * cin_g + ci) * p.kh;
        for (var ky = 0u; ky < p.kh; ky += 1u) {
            let iy = i32(o.y * p.sh + ky * p.dh) - i32(p.ph);
            if (iy < 0 || iy >= i32(p.h)) {
                continue;
            }
            for (var kx = 0u; kx < p.kw; kx += 1u) {
                let ix = i32(o.x * p.sw + kx * p.dw) - i32(p.pw);
                if (ix < 0 || ix >= i32(p.w)) {
                    continue;
                }
                let pos = u32(iy) * p.w + u32(ix);
                if (((bits[row + pos / 32u] >> (pos % 32u)) & 1u) != 0u) {
                    acc += swt[(wc + ky) * p.kw + kx];
                }
            }
        }
    }
    if (p.has_bias != 0u) {
        acc += sbias[o.z];
    }
    sout[i] = acc;
}
#endif
