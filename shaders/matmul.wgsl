// Matrix products with weights in PyTorch's [out, in] layout (or any strides):
//   out[b, m, n] = sum_k x[b, m, k] * w[b, n, k] + bias[n]
// (output rows may be strided: a column block of a wider matrix)
// `matmul`: 64x64 output tiles, 16-deep k tiles in workgroup memory, 4x4 outputs per invocation
// (8x4 in the 128-invocation variant).
// `gemv`: one output row per 64 invocations, for a single activation row (decode, heads).
// F16: weights stored as f16, products accumulated in f32.
#ifdef F16
enable f16;
#endif

#include "lib/common.wgsl"

#ifdef F16
alias WT = f16;
#else
alias WT = f32;
#endif

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
    // 0: no bias; 1: bias[n] (a Linear layer); 2: bias[m] (channels on rows).
    has_bias: u32,
    // Elements of x before its first row.
    x_offset: u32,
    // Output row r (of batch * m) starts at out_offset + r * out_stride.
    out_stride: u32,
    out_offset: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<WT>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;
// Invocations as 16 columns x TY rows; each owns RM rows x 4 columns of the tile (4 x 4 with
// 256 invocations, 8 x 4 with 128).
const TY: u32 = WG / 16u;
const RM: u32 = TM / TY;
// Rows of the shared tiles are padded by two: the loads store k = 0..15 of rows r and r + 1
// from 32 consecutive invocations; a stride of 64 puts each row's 16 in one memory bank, 65
// still pairs them, 66 spreads the 32 over all banks (bank = (2k + r) mod 32).
const TP: u32 = TM + 2u;

var<workgroup> xs: array<f32, 1056>; // [TK][TP]
var<workgroup> ws: array<f32, 1056>; // [TK][TP]

@compute @workgroup_size(WG)
fn matmul(ids: Ids, wg: Wg) {
    let b = wg.wid.z;
    let m0 = wg.wid.y * TM;
    let n0 = wg.wid.x * TN;
    let tx = ids.lid % 16u;
    let ty = ids.lid / 16u;
    var acc: array<f32, RM * 4u>;
    for (var i = 0u; i < RM * 4u; i += 1u) {
        acc[i] = 0.0;
    }
    let xb = b * p.xs_b + p.x_offset;
    let wb = b * p.ws_b;
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        for (var e = 0u; e < TK * TM / WG; e += 1u) {
            let idx = ids.lid + e * WG;
            let r = idx / TK;
            let kk = idx % TK;
            let gk = k0 + kk;
            let gm = m0 + r;
            var xv = 0.0;
            if (gm < p.m && gk < p.k) {
                xv = x[xb + gm * p.xs_m + gk * p.xs_k];
            }
            xs[kk * TP + r] = xv;
            let gn = n0 + r;
            var wv = 0.0;
            if (gn < p.n && gk < p.k) {
                wv = f32(w[wb + gn * p.ws_n + gk * p.ws_k]);
            }
            ws[kk * TP + r] = wv;
        }
        workgroupBarrier();
        // Each K tile is summed apart and then added to the total (blocked summation): one
        // running sum over all of K lost 2x the accuracy of PyTorch's f32 GEMM at Mamba's
        // shapes (K = 768..1536), and the error compounds over the layers.
        var part: array<f32, RM * 4u>;
        for (var i = 0u; i < RM * 4u; i += 1u) {
            part[i] = 0.0;
        }
        for (var kk = 0u; kk < TK; kk += 1u) {
            var a: array<f32, RM>;
            var c: array<f32, 4>;
            for (var i = 0u; i < RM; i += 1u) {
                a[i] = xs[kk * TP + ty + TY * i];
            }
            for (var j = 0u; j < 4u; j += 1u) {
                c[j] = ws[kk * TP + tx + 16u * j];
            }
            for (var i = 0u; i < RM; i += 1u) {
                for (var j = 0u; j < 4u; j += 1u) {
                    part[i * 4u + j] = fma(a[i], c[j], part[i * 4u + j]);
                }
            }
        }
        for (var i = 0u; i < RM * 4u; i += 1u) {
            acc[i] += part[i];
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < RM; i += 1u) {
        let gm = m0 + ty + TY * i;
        for (var j = 0u; j < 4u; j += 1u) {
            let gn = n0 + tx + 16u * j;
            if (gm < p.m && gn < p.n) {
                var v = acc[i * 4u + j];
                if (p.has_bias == 1u) {
                    v += bias[gn];
                } else if (p.has_bias == 2u) {
                    v += bias[gm];
                }
                out[p.out_offset + (b * p.m + gm) * p.out_stride + gn] = v;
            }
        }
    }
}

const GEMV_LANES: u32 = 64u;
const GEMV_ROWS: u32 = WG / GEMV_LANES;

var<workgroup> gsum: array<f32, WG>;

// Grid: (x, y) fold ceil(n / GEMV_ROWS) row groups; z = batch * m (one activation row each).
@compute @workgroup_size(WG)
fn gemv(ids: Ids, wg: Wg) {
    let row = wg.wid.z;
    let b = row / p.m;
    let mi = row % p.m;
    let seg = ids.lid / GEMV_LANES;
    let lane = ids.lid % GEMV_LANES;
    let n = group_index(wg) * GEMV_ROWS + seg;
    var acc = 0.0;
    if (n < p.n) {
        let xo = b * p.xs_b + mi * p.xs_m + p.x_offset;
        let wo = b * p.ws_b + n * p.ws_n;
        for (var k = lane; k < p.k; k += GEMV_LANES) {
            acc = fma(x[xo + k * p.xs_k], f32(w[wo + k * p.ws_k]), acc);
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
        var v = gsum[ids.lid];
        if (p.has_bias == 1u) {
            v += bias[n];
        } else if (p.has_bias == 2u) {
            v += bias[mi];
        }
        out[p.out_offset + row * p.out_stride + n] = v;
    }
}
