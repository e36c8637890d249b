// 2-D convolution, NCHW, weights [Cout, Cin / groups, KH, KW] as PyTorch: stride, padding,
// dilation and groups (depthwise when groups = Cin = Cout). Padding is zeros, or one value per
// input channel (`has_pad_values`: a BatchNorm-and-pad layer's border, BN(0)). Conv1d runs here
// with H = 1. The input is f32, or packed binary spikes [N, Cin, H * W] (32 positions per u32
// word) with `SPIKES` / in `spike_conv2d`.
//
// `GEMM`: the convolution as an implicit GEMM on the tiles of lib/gemm.wgsl, per group:
// rows = the group's output channels, columns = (image, oy, ox) over the whole batch,
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

// This workgroup's group and K slice.
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

// Output column `col` as (image, oy, ox): the batch is folded into the columns (the
// weights, A, are the same for every image), so small images still fill whole tiles.
fn column(col: u32) -> vec3<u32> {
    let pos = col % (p.oh * p.ow);
    return vec3<u32>(col / (p.oh * p.ow), pos / p.ow, pos % p.ow);
}

// The column after `c`.
fn next_column(c: vec3<u32>) -> vec3<u32> {
    var n = vec3<u32>(c.x, c.y, c.z + 1u);
    if (n.z == p.ow) {
        n.z = 0u;
        n.y += 1u;
        if (n.y == p.oh) {
            n.y = 0u;
            n.x += 1u;
        }
    }
    return n;
}

// The input under tap (ky, kx) of output column `c` in input channel `ci`, or the border
// value outside the image.
fn tap(ci: u32, c: vec3<u32>, ky: u32, kx: u32, border: f32) -> f32 {
    let iy = i32(c.y * p.sh + ky * p.dh) - i32(p.ph);
    let ix = i32(c.z * p.sw + kx * p.dw) - i32(p.pw);
    if (iy < 0 || iy >= i32(p.h) || ix < 0 || ix >= i32(p.w)) {
        return border;
    }
    let plane = c.x * p.cin + ci;
    let at = u32(iy) * p.w + u32(ix);
#ifdef SPIKES
    let words = (p.h * p.w + 31u) / 32u;
    return f32((x[plane * words + at / 32u] >> (at % 32u)) & 1u);
#else
    return x[plane * p.h * p.w + at];
#endif
}

// The im2col operand: columns gn .. gn + 3 at tap gk (zeros past the last column). The
// column is decoded once and stepped for the other three.
fn fetch_b(n0: u32, k0: u32, lim: u32) -> vec4<f32> {
    let s = b_slot();
    let gn = n0 + s.x;
    let gk = k0 + s.y;
    let cols = p.n * p.oh * p.ow;
    var v = vec4<f32>(0.0);
    if (s.z == 0u || gk >= lim || gn >= cols) {
        return v;
    }
    let kx = gk % p.kw;
    let ky = (gk / p.kw) % p.kh;
    let ci = g_grp * (p.cin / p.groups) + gk / (p.kw * p.kh);
    var border = 0.0;
#ifndef SPIKES
    if (p.has_pad_values != 0u) {
        border = pad_values[ci];
    }
#endif
    var c = column(gn);
    v.x = tap(ci, c, ky, kx, border);
    if (gn + 1u < cols) {
        c = next_column(c);
        v.y = tap(ci, c, ky, kx, border);
    }
    if (gn + 2u < cols) {
        c = next_column(c);
        v.z = tap(ci, c, ky, kx, border);
    }
    if (gn + 3u < cols) {
        c = next_column(c);
        v.w = tap(ci, c, ky, kx, border);
    }
    return v;
}

// Where output channel `co` of column `col` goes: [N, Cout, OH * OW], or with split-K this
// workgroup's slice of the scratch [splits, N, Cout, OH * OW] (the reduce adds the bias).
fn out_index(co: u32, col: u32) -> u32 {
    let npos = p.oh * p.ow;
    return ((g_split * p.n + col / npos) * p.cout + co) * npos + col % npos;
}

fn store_row(r: u32, c: u32, v: vec4<f32>) {
    let cols = p.n * p.oh * p.ow;
    if (r >= cout_g() || c >= cols) {
        return;
    }
    let co = g_grp * cout_g() + r;
    var o = v;
    if (p.splits == 1u && p.has_bias != 0u) {
        o += vec4<f32>(bias[co]);
    }
#ifdef OUT_VEC
    // OH * OW is a multiple of 4: the 4 columns are in one image.
    out[out_index(co, c) / 4u] = o;
#else
    out[out_index(co, c)] = o.x;
    if (c + 1u < cols) {
        out[out_index(co, c + 1u)] = o.y;
    }
    if (c + 2u < cols) {
        out[out_index(co, c + 2u)] = o.z;
    }
    if (c + 3u < cols) {
        out[out_index(co, c + 3u)] = o.w;
    }
#endif
}

// Grid: (ceil(N * OH * OW / BN), ceil(Cout / groups / BM), groups * splits).
@compute @workgroup_size(WG)
fn conv_gemm(ids: Ids, wg: Wg) {
    let split = wg.wid.z % p.splits;
    g_grp = wg.wid.z / p.splits;
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
