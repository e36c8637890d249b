// Token-axis data movement for sequence models laid out [N tokens, B, C] (token-major).
//
// `unfold`: the im2col of a 1-D convolution along tokens (kernel K, zero padding `pad`),
//   out[t, b, k·C + c] = x(b, t + k - pad, c), zero outside 0..N; x is read with element
//   strides (b, t) so a [B, N, C] input needs no transpose. A GEMM with the weight laid out
//   [Cout, K, Cin] then gives the convolution.
// `window_push`: the same window for streaming, one token at a time: shifts each row of
//   w [S, K·C] left by C and appends x [S, C].
// `copy_cols`: dst[r·ds + doff + c] = src[r·ss + soff + c] (concatenation along the last axis).
// `running_mean`: out[t, r] = (sum_{s <= t} x[s, r]) / (t + 1), over x [N, R].
// `running_mean_step`: sum[r] += x[r]; out[r] = sum[r] / count (the same arithmetic, per token).

#include "lib/common.wgsl"

struct Params {
    n: u32,
    b: u32,
    c: u32,
    k: u32,
    pad: u32,
    xs_b: u32,
    xs_t: u32,
    count: u32,
    src_stride: u32,
    src_off: u32,
    dst_stride: u32,
    dst_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> ux: array<f32>;
@group(0) @binding(2) var<storage, read_write> uout: array<f32>;

@compute @workgroup_size(WG)
fn unfold(ids: Ids, wg: Wg) {
    let idx = group_index(wg) * WG + ids.lid;
    let kc = p.k * p.c;
    if (idx >= p.n * p.b * kc) {
        return;
    }
    let col = idx % kc;
    let row = idx / kc;
    let c = col % p.c;
    let k = col / p.c;
    let b = row % p.b;
    let t = i32(row / p.b) + i32(k) - i32(p.pad);
    var v = 0.0;
    if (t >= 0 && t < i32(p.n)) {
        v = ux[b * p.xs_b + u32(t) * p.xs_t + c];
    }
    uout[idx] = v;
}

@group(0) @binding(1) var<storage, read> wx: array<f32>;
@group(0) @binding(2) var<storage, read_write> win: array<f32>;

@compute @workgroup_size(WG)
fn window_push(ids: Ids, wg: Wg) {
    let idx = group_index(wg) * WG + ids.lid;
    if (idx >= p.b * p.c) {
        return;
    }
    let c = idx % p.c;
    let s = idx / p.c;
    let row = s * p.k * p.c;
    for (var k = 0u; k + 1u < p.k; k += 1u) {
        win[row + k * p.c + c] = win[row + (k + 1u) * p.c + c];
    }
    win[row + (p.k - 1u) * p.c + c] = wx[idx];
}

@group(0) @binding(1) var<storage, read> csrc: array<f32>;
@group(0) @binding(2) var<storage, read_write> cdst: array<f32>;

// n rows of c columns.
@compute @workgroup_size(WG)
fn copy_cols(ids: Ids, wg: Wg) {
    let idx = group_index(wg) * WG + ids.lid;
    if (idx >= p.n * p.c) {
        return;
    }
    let c = idx % p.c;
    let r = idx / p.c;
    cdst[r * p.dst_stride + p.dst_off + c] = csrc[r * p.src_stride + p.src_off + c];
}

@group(0) @binding(1) var<storage, read> mx: array<f32>;
@group(0) @binding(2) var<storage, read_write> mout: array<f32>;

// x [n, c] (c = every column: batch x channels).
@compute @workgroup_size(WG)
fn running_mean(ids: Ids, wg: Wg) {
    let r = group_index(wg) * WG + ids.lid;
    if (r >= p.c) {
        return;
    }
    var s = 0.0;
    for (var t = 0u; t < p.n; t += 1u) {
        s += mx[t * p.c + r];
        mout[t * p.c + r] = s / f32(t + 1u);
    }
}

@group(0) @binding(1) var<storage, read> sx: array<f32>;
@group(0) @binding(2) var<storage, read_write> ssum: array<f32>;
@group(0) @binding(3) var<storage, read_write> sout: array<f32>;

@compute @workgroup_size(WG)
fn running_mean_step(ids: Ids, wg: Wg) {
    let r = group_index(wg) * WG + ids.lid;
    if (r >= p.c) {
        return;
    }
    let s = ssum[r] + sx[r];
    ssum[r] = s;
    sout[r] = s / f32(p.count);
}
