// Matrix products with weights in PyTorch's [out, in] layout (or any strides):
//   out[b, m, n] = sum_k x[b, m, k] * w[b, n, k] + bias[n]
// (output rows may be strided: a column block of a wider matrix).
// `matmul`: the tiled GEMM of lib/gemm.wgsl (128 x 64 tiles with `RM8`, else 64 x 64; 128
// columns with `CN8`; vec4 register micro-tiles, double-buffered k-tiles), with operand
// fetches chosen by layout:
//   A_ROWS / B_ROWS: the operand is read 4 rows at one k (its rows are contiguous, stride 1);
//   else 4 k of one row (k contiguous). A_VEC / B_VEC: those 4 values are one aligned 128-bit
//   load (the contiguous axis has stride 1 and every other stride and offset is a multiple of 4).
//   OUT_VEC: rows are written as vec4s. UNCHECKED: the shape is a multiple of the tile (m of BM,
//   n of BN, k of 16), so no bounds are checked.
//   Split-K (p.splits > 1): workgroup z = batch * splits + split sums k_chunk of K into its own
//   slice of a scratch output; `splitk_reduce` adds the slices and the bias.
// `gemv`: one output row per 64 invocations, for a single activation row (decode, heads),
//   any strides.
// `skinny`: 1 to 32 activation rows against k-contiguous weights (decode at batch <= 32,
//   short prompts, LM heads): every weight is read once for all rows (see below). CONV_STEP:
//   Mamba's decode conv step fused into its epilogue (in_proj; ops::matmul::linear_conv_step).
//   NORM_X: the rows of x RMS-normalised, the norm's weight in the bias binding (Mamba's
//   pre-norm in front of in_proj, the final norm in front of the LM head): the products take
//   x * weight, the lanes add up each row's squares as they stream it, and the reduce
//   scales each sum by its row's 1 / rms (ops::matmul::linear_conv_step, gemm_norm_into).
// F16 with A_F16 / B_F16: that operand (the weight) is stored as f16; products accumulate in f32.
// B_BITS (with B_ROWS): w is packed binary spikes, `[batch, K, ceil(n / 32)]` words (ws_b and
// ws_k in words), expanded to 0/1 while the tile is fetched: a spike linear / 1x1 spike conv
// on the same tiles as the dense GEMM.
#ifdef F16
enable f16;
#endif

#include "lib/common.wgsl"

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    xs_b: u32,
    xs_m: u32,
    xs_k: u32,
    ws_b: u32,
    ws_n: u32,
    ws_k: u32,
    // 0: no bias; 1: bias[n] (a Linear layer); 2: bias[m] (channels on rows); 3: bias
    // [batch * m, n], one value per output (a residual added in the epilogue).
    has_bias: u32,
    // Elements of x before its first row.
    x_offset: u32,
    // Output row r (of batch * m) starts at out_offset + r * out_stride.
    out_stride: u32,
    out_offset: u32,
    // Split-K: slices of K (1: none) of k_chunk elements each (a multiple of 16).
    splits: u32,
    k_chunk: u32,
    // NORM_X: RMSNorm's epsilon (inside the root).
    eps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

#ifdef A_F16
#ifdef A_VEC
@group(0) @binding(1) var<storage, read> x: array<vec4<f16>>;
fn ax4(i: u32) -> vec4<f32> {
    return vec4<f32>(x[i]);
}
fn ax(i: u32) -> f32 {
    return f32(x[i / 4u][i % 4u]);
}
#else
@group(0) @binding(1) var<storage, read> x: array<f16>;
fn ax(i: u32) -> f32 {
    return f32(x[i]);
}
#endif
#else
#ifdef A_VEC
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
fn ax4(i: u32) -> vec4<f32> {
    return x[i];
}
fn ax(i: u32) -> f32 {
    return x[i / 4u][i % 4u];
}
#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
fn ax(i: u32) -> f32 {
    return x[i];
}
#endif
#endif

#ifdef B_BITS
// Packed binary spikes [batch, K, words] (bit j of word i is position 32 i + j along n).
@group(0) @binding(2) var<storage, read> w: array<u32>;
#else
#ifdef B_F16
#ifdef B_VEC
@group(0) @binding(2) var<storage, read> w: array<vec4<f16>>;
fn bw4(i: u32) -> vec4<f32> {
    return vec4<f32>(w[i]);
}
fn bw(i: u32) -> f32 {
    return f32(w[i / 4u][i % 4u]);
}
#else
@group(0) @binding(2) var<storage, read> w: array<f16>;
fn bw(i: u32) -> f32 {
    return f32(w[i]);
}
#endif
#else
#ifdef B_VEC
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
fn bw4(i: u32) -> vec4<f32> {
    return w[i];
}
fn bw(i: u32) -> f32 {
    return w[i / 4u][i % 4u];
}
#else
@group(0) @binding(2) var<storage, read> w: array<f32>;
fn bw(i: u32) -> f32 {
    return w[i];
}
#endif
#endif
#endif

// The bias binding; with NORM_X the norm weight, read 4 k at a time (vec4s where x is: k is
// then a multiple of 4).
#ifdef NORM_X
#ifdef A_VEC
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
fn bias_at(i: u32) -> f32 {
    return bias[i / 4u][i % 4u];
}
#else
@group(0) @binding(3) var<storage, read> bias: array<f32>;
fn bias_at(i: u32) -> f32 {
    return bias[i];
}
#endif
#else
@group(0) @binding(3) var<storage, read> bias: array<f32>;
fn bias_at(i: u32) -> f32 {
    return bias[i];
}
#endif
#ifdef CONV_STEP
// `skinny` with Mamba's decode conv step in its epilogue (out is in_proj's [B, 2 D]; its
// first D columns also go through lib/conv_step.wgsl into cv_out [B, D], the conv state
// [B, D, CONV_K - 1] updated in place).
@group(0) @binding(4) var<storage, read> cv_w: array<f32>;
@group(0) @binding(5) var<storage, read> cv_bias: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read_write> cv_state: array<f32>;
@group(0) @binding(8) var<storage, read_write> cv_out: array<f32>;
override CONV_K: u32 = 4u;
#include "lib/math.wgsl"
#include "lib/conv_step.wgsl"
#else
#ifdef OUT_VEC
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
#else
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
#endif
#endif

#include "lib/gemm.wgsl"

// This workgroup's batch entry and K slice.
var<private> g_b: u32;
var<private> g_split: u32;

fn fetch_a(m0: u32, k0: u32, lim: u32) -> vec4<f32> {
    let s = a_slot();
    let gm = m0 + s.x;
    let gk = k0 + s.y;
    let base = g_b * p.xs_b + p.x_offset;
    var v = vec4<f32>(0.0);
    if (s.z == 0u) {
        return v;
    }
#ifdef A_ROWS
    let i = base + gm * p.xs_m + gk * p.xs_k;
#ifdef A_VEC
#ifndef UNCHECKED
    if (gm >= p.m || gk >= lim) {
        return v;
    }
#endif
    return ax4(i / 4u);
#else
    // Rows gm .. gm + 3 at k = gk.
#ifndef UNCHECKED
    if (gk >= lim) {
        return v;
    }
    if (gm < p.m) {
        v.x = ax(i);
    }
    if (gm + 1u < p.m) {
        v.y = ax(i + p.xs_m);
    }
    if (gm + 2u < p.m) {
        v.z = ax(i + 2u * p.xs_m);
    }
    if (gm + 3u < p.m) {
        v.w = ax(i + 3u * p.xs_m);
    }
    return v;
#else
    return vec4<f32>(ax(i), ax(i + p.xs_m), ax(i + 2u * p.xs_m), ax(i + 3u * p.xs_m));
#endif
#endif
#else
    let i = base + gm * p.xs_m + gk * p.xs_k;
#ifdef A_VEC
#ifndef UNCHECKED
    if (gm >= p.m || gk >= lim) {
        return v;
    }
#endif
    return ax4(i / 4u);
#else
    // k = gk .. gk + 3 of row gm.
#ifndef UNCHECKED
    if (gm >= p.m) {
        return v;
    }
    if (gk < lim) {
        v.x = ax(i);
    }
    if (gk + 1u < lim) {
        v.y = ax(i + p.xs_k);
    }
    if (gk + 2u < lim) {
        v.z = ax(i + 2u * p.xs_k);
    }
    if (gk + 3u < lim) {
        v.w = ax(i + 3u * p.xs_k);
    }
    return v;
#else
    return vec4<f32>(ax(i), ax(i + p.xs_k), ax(i + 2u * p.xs_k), ax(i + 3u * p.xs_k));
#endif
#endif
#endif
}
fn fetch_b(n0: u32, k0: u32, lim: u32) -> vec4<f32> {
    let s = b_slot();
    let gn = n0 + s.x;
    let gk = k0 + s.y;
    let base = g_b * p.ws_b;
    var v = vec4<f32>(0.0);
    if (s.z == 0u) {
        return v;
    }
#ifdef B_BITS
    // Positions gn .. gn + 3 (gn a multiple of 4) at k = gk: one nibble of one word, expanded
    // to 0/1 (exact). Bits past n only reach output columns that are never stored.
#ifndef UNCHECKED
    if (gn >= p.n || gk >= lim) {
        return v;
    }
#endif
    let nib = w[base + gk * p.ws_k + gn / 32u] >> (gn % 32u);
    return vec4<f32>(vec4<u32>(nib, nib >> 1u, nib >> 2u, nib >> 3u) & vec4<u32>(1u));
#else
#ifdef B_ROWS
    let i = base + gn * p.ws_n + gk * p.ws_k;
#ifdef B_VEC
#ifndef UNCHECKED
    if (gn >= p.n || gk >= lim) {
        return v;
    }
#endif
    return bw4(i / 4u);
#else
    // Rows gn .. gn + 3 at k = gk.
#ifndef UNCHECKED
    if (gk >= lim) {
        return v;
    }
    if (gn < p.n) {
        v.x = bw(i);
    }
    if (gn + 1u < p.n) {
        v.y = bw(i + p.ws_n);
    }
    if (gn + 2u < p.n) {
        v.z = bw(i + 2u * p.ws_n);
    }
    if (gn + 3u < p.n) {
        v.w = bw(i + 3u * p.ws_n);
    }
    return v;
#else
    return vec4<f32>(bw(i), bw(i + p.ws_n), bw(i + 2u * p.ws_n), bw(i + 3u * p.ws_n));
#endif
#endif
#else
    let i = base + gn * p.ws_n + gk * p.ws_k;
#ifdef B_VEC
#ifndef UNCHECKED
    if (gn >= p.n || gk >= lim) {
        return v;
    }
#endif
    return bw4(i / 4u);
#else
    // k = gk .. gk + 3 of row gn.
#ifndef UNCHECKED
    if (gn >= p.n) {
        return v;
    }
    if (gk < lim) {
        v.x = bw(i);
    }
    if (gk + 1u < lim) {
        v.y = bw(i + p.ws_k);
    }
    if (gk + 2u < lim) {
        v.z = bw(i + 2u * p.ws_k);
    }
    if (gk + 3u < lim) {
        v.w = bw(i + 3u * p.ws_k);
    }
    return v;
#else
    return vec4<f32>(bw(i), bw(i + p.ws_k), bw(i + 2u * p.ws_k), bw(i + 3u * p.ws_k));
#endif
#endif
#endif
#endif
}

// Output (r, c) of batch entry g_b in split g_split's slice of the scratch output
// [splits, batch * m, n] (split-K; the reduce adds the bias).
fn part_at(r: u32, c: u32) -> u32 {
    return (g_split * p.batch + g_b) * p.m * p.n + r * p.n + c;
}

fn store_row(r: u32, c: u32, v: vec4<f32>) {
#ifndef UNCHECKED
    if (r >= p.m || c >= p.n) {
        return;
    }
#endif
    var o = v;
    var base = 0u;
    if (p.splits > 1u) {
        base = part_at(r, c);
    } else {
        if (p.has_bias == 1u) {
            o.x += bias_at(c);
            if (c + 1u < p.n) {
                o.y += bias_at(c + 1u);
            }
            if (c + 2u < p.n) {
                o.z += bias_at(c + 2u);
            }
            if (c + 3u < p.n) {
                o.w += bias_at(c + 3u);
            }
        } else if (p.has_bias == 2u) {
            o += vec4<f32>(bias_at(r));
        } else if (p.has_bias == 3u) {
            let rb = (g_b * p.m + r) * p.n + c;
            o.x += bias_at(rb);
            if (c + 1u < p.n) {
                o.y += bias_at(rb + 1u);
            }
            if (c + 2u < p.n) {
                o.z += bias_at(rb + 2u);
            }
            if (c + 3u < p.n) {
                o.w += bias_at(rb + 3u);
            }
        }
        base = p.out_offset + (g_b * p.m + r) * p.out_stride + c;
    }
#ifdef OUT_VEC
    out[base / 4u] = o;
#else
    out[base] = o.x;
    if (c + 1u < p.n) {
        out[base + 1u] = o.y;
    }
    if (c + 2u < p.n) {
        out[base + 2u] = o.z;
    }
    if (c + 3u < p.n) {
        out[base + 3u] = o.w;
    }
#endif
}

// Grid: (ceil(n / BN), ceil(m / BM), batch * splits).
@compute @workgroup_size(WG)
fn matmul(ids: Ids, wg: Wg) {
    // The K range from uniform values only (Tint takes a private variable as non-uniform).
    let split = wg.wid.z % p.splits;
    g_b = wg.wid.z / p.splits;
    g_split = split;
    let m0 = wg.wid.y * BM;
    let n0 = wg.wid.x * BN;
    let kb = split * p.k_chunk;
    gemm_tile(ids.lid, m0, n0, kb, min(p.k, kb + p.k_chunk));
    gemm_store(m0, n0);
}

@group(0) @binding(1) var<storage, read> parts: array<f32>;
@group(0) @binding(2) var<storage, read> rbias: array<f32>;
@group(0) @binding(3) var<storage, read_write> rout: array<f32>;

// Split-K's second pass: out = sum over the slices + bias, one invocation per output.
@compute @workgroup_size(WG)
fn splitk_reduce(ids: Ids, wg: Wg) {
    let i = group_index(wg) * WG + ids.lid;
    let total = p.batch * p.m * p.n;
    if (i >= total) {
        return;
    }
    var v = 0.0;
    for (var s = 0u; s < p.splits; s += 1u) {
        v += parts[s * total + i];
    }
    let row = i / p.n;
    let col = i % p.n;
    if (p.has_bias == 1u) {
        v += rbias[col];
    } else if (p.has_bias == 2u) {
        v += rbias[row % p.m];
    } else if (p.has_bias == 3u) {
        v += rbias[i];
    }
    rout[p.out_offset + row * p.out_stride + col] = v;
}

#ifndef OUT_VEC
#ifndef B_BITS
const GEMV_LANES: u32 = 64u;
const GEMV_ROWS: u32 = WG / GEMV_LANES;

var<workgroup> gsum: array<f32, WG>;

// One output (r, c) of batch entry g_b: a split's partial sum, or the sum plus the bias
// (returned as stored).
fn store_one(r: u32, c: u32, v: f32) -> f32 {
    if (p.splits > 1u) {
        out[part_at(r, c)] = v;
        return v;
    }
    var o = v;
    if (p.has_bias == 1u) {
        o += bias_at(c);
    } else if (p.has_bias == 2u) {
        o += bias_at(r);
    } else if (p.has_bias == 3u) {
        o += bias_at((g_b * p.m + r) * p.n + c);
    }
    out[p.out_offset + (g_b * p.m + r) * p.out_stride + c] = o;
    return o;
}

// Grid: (x, y) fold ceil(n / GEMV_ROWS) row groups; z = batch * m (one activation row each).
@compute @workgroup_size(WG)
fn gemv(ids: Ids, wg: Wg) {
    let row = wg.wid.z;
    let b = row / p.m;
    let mi = row % p.m;
    g_b = b;
    let seg = ids.lid / GEMV_LANES;
    let lane = ids.lid % GEMV_LANES;
    let n = group_index(wg) * GEMV_ROWS + seg;
    var acc = 0.0;
    if (n < p.n) {
        let xo = b * p.xs_b + mi * p.xs_m + p.x_offset;
        let wo = b * p.ws_b + n * p.ws_n;
        for (var k = lane; k < p.k; k += GEMV_LANES) {
            acc = fma(ax(xo + k * p.xs_k), bw(wo + k * p.ws_k), acc);
        }
    }
    gsum[ids.lid] = acc;
    workgroupBarrier();
    for (var s = GEMV_LANES / 2u; s > 0u; s = s >> 1u) {
        if (lane < s) {
            gsum[ids.lid] += gsum[ids.lid + s];
        }
        workgroupBarrier();
    }
    if (lane == 0u && n < p.n) {
        store_one(mi, n, gsum[ids.lid]);
    }
}

#ifndef A_ROWS
#ifndef B_ROWS
// The skinny product: SKL lanes along k per weight row (n), WG / SKL weight rows per
// workgroup. A lane loads 4 consecutive k of its weight row (SKL lanes read SKL * 16
// contiguous bytes of the row: whole cache lines) and the same 4 k of each activation row
// (x is small and stays in cache), accumulating one vec4 per quad of rows in registers:
// SKQ quads (4 * SKQ rows) per pass, ceil(m / 8) passes (the first reads the weights from
// memory, the others from cache). The quads are named
// variables updated by uniform branches (rows past m are skipped), never an array indexed at
// run time. The partial sums meet in workgroup memory, two quads at a time: each lane stores
// 8 values (weight rows padded by one word), then one invocation per (weight row,
// activation row) adds its row's SKL values, adjacent invocations storing adjacent output
// columns. Banks: a 32-wide subgroup's reads fall on 32 distinct words (SKL = 8: rows 9
// words apart; SKL = 32: the activation rows' planes SK_PAD = 8 mod 32 words apart, which
// WG + WG / 8 + WG / 32 is at WG = 256).
// SKL: lanes along k per weight row, 32 (512 contiguous bytes of a row per subgroup load)
// or 8 (k under 128, where 32 lanes would idle). SKQ: 1 (m <= 4) or 2 (m <= 8) quads of
// activation rows in one pass, 4: passes of 2 quads over m > 8 rows.
override SKL: u32 = 8u;
override SKQ: u32 = 1u;
const SK_PAD: u32 = WG + WG / 8u + WG / 32u;
var<workgroup> skred: array<f32, 8u * SK_PAD>;

// 4 values of x from element i (k index kk of a row, k-contiguous), zero from lim on.
fn sk_x(i: u32, kk: u32, lim: u32) -> vec4<f32> {
#ifdef A_VEC
    return ax4(i / 4u);
#else
    var v = vec4<f32>(0.0);
    if (kk < lim) {
        v.x = ax(i);
    }
    if (kk + 1u < lim) {
        v.y = ax(i + 1u);
    }
    if (kk + 2u < lim) {
        v.z = ax(i + 2u);
    }
    if (kk + 3u < lim) {
        v.w = ax(i + 3u);
    }
    return v;
#endif
}
fn sk_w(i: u32, kk: u32, lim: u32) -> vec4<f32> {
#ifdef B_VEC
    return bw4(i / 4u);
#else
    var v = vec4<f32>(0.0);
    if (kk < lim) {
        v.x = bw(i);
    }
    if (kk + 1u < lim) {
        v.y = bw(i + 1u);
    }
    if (kk + 2u < lim) {
        v.z = bw(i + 2u);
    }
    if (kk + 3u < lim) {
        v.w = bw(i + 3u);
    }
    return v;
#endif
}

// acc + x . w, the 4 products summed before they meet the accumulator (blocked summation:
// chained as 4 fused multiply-adds into acc instead, the mamba-130m-precision fixture's
// logits were twice as far from float64, 2.6e-4 against 1.3e-4, past PyTorch float32's 2.1e-4).
fn sk_dot(acc: f32, x: vec4<f32>, w: vec4<f32>) -> f32 {
    return acc + dot(x, w);
}

#ifdef NORM_X
// NORM_X: the squares of each pass's 8 activation rows summed by weight row 0's SKL lanes
// ([row][lane]), added up in the reduce.
var<workgroup> sk_sq: array<f32, 8u * SKL>;
#endif

// acc plus rows 4q .. 4q + 3 (those under m) of x at k = kk, each dotted with w4; NORM_X:
// x * g4 (the norm weight at kk) dotted, and its squares added to sq.
fn sk_quad(
    acc: vec4<f32>,
    q: u32,
    xb: u32,
    kk: u32,
    lim: u32,
    w4: vec4<f32>,
    g4: vec4<f32>,
    sq: ptr<function, vec4<f32>>
) -> vec4<f32> {
    let r = 4u * q;
    let i = xb + r * p.xs_m + kk;
    var d = acc;
    let x0 = sk_x(i, kk, lim);
#ifdef NORM_X
    (*sq).x += dot(x0, x0);
    d.x = sk_dot(d.x, x0 * g4, w4);
#else
    d.x = sk_dot(d.x, x0, w4);
#endif
    if (r + 1u < p.m) {
        let x1 = sk_x(i + p.xs_m, kk, lim);
#ifdef NORM_X
        (*sq).y += dot(x1, x1);
        d.y = sk_dot(d.y, x1 * g4, w4);
#else
        d.y = sk_dot(d.y, x1, w4);
#endif
    }
    if (r + 2u < p.m) {
        let x2 = sk_x(i + 2u * p.xs_m, kk, lim);
#ifdef NORM_X
        (*sq).z += dot(x2, x2);
        d.z = sk_dot(d.z, x2 * g4, w4);
#else
        d.z = sk_dot(d.z, x2, w4);
#endif
    }
    if (r + 3u < p.m) {
        let x3 = sk_x(i + 3u * p.xs_m, kk, lim);
#ifdef NORM_X
        (*sq).w += dot(x3, x3);
        d.w = sk_dot(d.w, x3 * g4, w4);
#else
        d.w = sk_dot(d.w, x3, w4);
#endif
    }
    return d;
}

// The norm weight at kk .. kk + 3 (zeros from lim on): NORM_X's weight is in the bias binding.
fn sk_g(kk: u32, lim: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
#ifdef NORM_X
#ifdef A_VEC
    // One 128-bit load (kk is a multiple of 4 below k, itself a multiple of 4).
    v = bias[kk / 4u];
#else
    if (kk < lim) {
        v.x = bias[kk];
    }
    if (kk + 1u < lim) {
        v.y = bias[kk + 1u];
    }
    if (kk + 2u < lim) {
        v.z = bias[kk + 2u];
    }
    if (kk + 3u < lim) {
        v.w = bias[kk + 3u];
    }
#endif
#endif
    return v;
}

// Quads 2 * pair and 2 * pair + 1 (a and b): summed over each weight row's SKL lanes and
// stored; NORM_X: scaled by 1 / sqrt(mean(x^2) + eps) of their rows, from the squares sa,
// sb of weight row 0's lanes (rsqrt as rms_norm.wgsl: 1 / sqrt). Called in uniform control
// flow.
fn sk_reduce(
    lid: u32,
    pair: u32,
    n0: u32,
    a: vec4<f32>,
    b: vec4<f32>,
    sa: vec4<f32>,
    sb: vec4<f32>
) {
#ifdef NORM_X
    if (lid < SKL) {
        sk_sq[lid] = sa.x;
        sk_sq[SKL + lid] = sa.y;
        sk_sq[2u * SKL + lid] = sa.z;
        sk_sq[3u * SKL + lid] = sa.w;
        sk_sq[4u * SKL + lid] = sb.x;
        sk_sq[5u * SKL + lid] = sb.y;
        sk_sq[6u * SKL + lid] = sb.z;
        sk_sq[7u * SKL + lid] = sb.w;
    }
#endif
    let slot = lid + lid / SKL;
    skred[slot] = a.x;
    skred[SK_PAD + slot] = a.y;
    skred[2u * SK_PAD + slot] = a.z;
    skred[3u * SK_PAD + slot] = a.w;
    skred[4u * SK_PAD + slot] = b.x;
    skred[5u * SK_PAD + slot] = b.y;
    skred[6u * SK_PAD + slot] = b.z;
    skred[7u * SK_PAD + slot] = b.w;
    workgroupBarrier();
    let rows_n = WG / SKL;
    if (lid < 8u * rows_n) {
        let wr = lid % rows_n;
        let c = lid / rows_n;
        let r = 8u * pair + c;
        let col = n0 + wr;
        if (r < p.m && col < p.n) {
            let at = c * SK_PAD + wr * (SKL + 1u);
            var v = 0.0;
            for (var l = 0u; l < SKL; l += 1u) {
                v += skred[at + l];
            }
#ifdef NORM_X
            var q = 0.0;
            for (var l = 0u; l < SKL; l += 1u) {
                q += sk_sq[c * SKL + l];
            }
            v *= 1.0 / sqrt(q / f32(p.k) + p.eps);
#endif
            let o = store_one(r, col, v);
#ifdef CONV_STEP
            // Row r is sequence r (batch 1, contiguous rows, one K slice); the x half
            // continues through the conv step.
            let d = p.n / 2u;
            if (col < d) {
                cv_out[r * d + col] = conv_step(r, col, d, CONV_K, o);
            }
#endif
        }
    }
    workgroupBarrier();
}

// Grid: (x, y) fold ceil(n / (WG / SKL)) groups of weight rows; z = batch * splits.
@compute @workgroup_size(WG)
fn skinny(ids: Ids, wg: Wg) {
    let split = wg.wid.z % p.splits;
    g_b = wg.wid.z / p.splits;
    g_split = split;
    let n0 = group_index(wg) * (WG / SKL);
    let wr = ids.lid / SKL;
    let lane = ids.lid % SKL;
    let n = n0 + wr;
    let kb = split * p.k_chunk;
    let ke = min(p.k, kb + p.k_chunk);
    let xb = g_b * p.xs_b + p.x_offset;
    // Activation rows in passes of 8 (two quads of accumulators per lane, whatever m): with
    // all 32 rows' accumulators held at once, 32 rows ran 6x slower than 8 on an H200
    // (mamba-130m's in_proj: 243 us against 39); passes after the first re-read this
    // workgroup's weight rows from cache.
    // SKQ 4 (m > 8) runs ceil(m / 8) passes; SKQ 1 or 2 exactly one, a constant when the
    // pipeline is made, so the loop (and the barriers in it) can fold away.
    let passes = select(1u, (p.m + 7u) / 8u, SKQ > 2u);
    for (var rp = 0u; rp < passes; rp += 1u) {
        var q0 = vec4<f32>(0.0);
        var q1 = vec4<f32>(0.0);
        // NORM_X: the rows' squares (weight row 0's lanes stream every k of every row).
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        if (n < p.n) {
            let wb = g_b * p.ws_b + n * p.ws_n;
            for (var kk = kb + 4u * lane; kk < ke; kk += 4u * SKL) {
                let w4 = sk_w(wb + kk, kk, ke);
                let g4 = sk_g(kk, ke);
                q0 = sk_quad(q0, 2u * rp, xb, kk, ke, w4, g4, &s0);
                if (SKQ > 1u && p.m > 8u * rp + 4u) {
                    q1 = sk_quad(q1, 2u * rp + 1u, xb, kk, ke, w4, g4, &s1);
                }
            }
        }
        sk_reduce(ids.lid, rp, n0, q0, q1, s0, s1);
    }
}
#endif
#endif
#endif
#endif
