// Mamba's selective scan (S6), fused: for one channel d of one sequence b,
//   delta_t = softplus(dt_t + dt_bias[d])            (PyTorch's threshold 20)
//   h_t     = exp(delta_t * A[d, :]) * h_{t-1} + delta_t * B_t * u_t      (h: N states, f32)
//   y_t     = (sum_n h_t[n] * C_t[n] + D[d] * u_t) * silu(z_t)
// Inputs are strided views ([b, t, channel] with row strides) so the in_proj / x_proj
// outputs are read where they lie; [B, L, D, N] is never materialised.
// - `selective_scan` (prompts, N <= 16): each thread owns one channel's 4 states (a vec4 in
//   registers) and runs sequentially over time; a workgroup is 16 channels x 4 state groups.
//   Per chunk of ST tokens (an override: 16, or 32 for half the chunks and barriers) the
//   workgroup stages delta (softplus once per (t, d)), u, B and C in shared memory with
//   loads coalesced across channels, scans, and writes y from the 4 groups' partial sums:
//   2 barriers per chunk, every input read once from memory.
// - `selective_scan_channel` (N <= 16, a measured alternative): each thread owns one
//   channel's 16 states (4 vec4 registers), 64 channels a workgroup; per chunk of ST tokens
//   only B and C are staged (every thread needs them), u, dt and z are read from memory by
//   the channel's own thread (adjacent threads, adjacent channels) and y is its own sum: no
//   cross-thread reduction, 2 barriers per chunk.
// - `selective_scan_wide` (16 < N <= 64, and any N when a caller picks it): one workgroup
//   per (b, d); threads are (state n, time t) pairs over chunks of TC tokens, the affine
//   recurrence (a, b) combined as a parallel (Hillis-Steele) scan,
//   (a1, b1) o (a0, b0) = (a1 a0, a1 b0 + b1), and the carry h from the previous chunk
//   applied to the prefix.
// - `selective_state_update` (decode): one token, dt_proj fused in, the state read and
//   written in place.

#include "lib/common.wgsl"
#include "lib/math.wgsl"

// selective_scan_wide: padded state count (a power of two >= N); TC = WG / NS tokens per chunk.
override NS: u32 = 16u;

struct Params {
    batch: u32,
    len: u32,
    d: u32,
    n: u32,
    // Row strides (elements per token) and column offsets of the strided inputs.
    u_stride: u32,
    dt_stride: u32,
    bc_stride: u32,
    b_offset: u32,
    c_offset: u32,
    z_stride: u32,
    z_offset: u32,
    has_h0: u32,
    // selective_state_update: dt_proj's rank R and the column of dt in x_dbl's rows.
    dt_rank: u32,
    dt_offset: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> u: array<f32>;
@group(0) @binding(2) var<storage, read> dt: array<f32>;
@group(0) @binding(3) var<storage, read> bc: array<f32>;
@group(0) @binding(4) var<storage, read> z: array<f32>;
// The per-channel constants in one binding (default WebGPU limits allow 8 storage buffers
// per stage): row d of [D, N + 2] is A[d, 0..N], dt_proj's bias, D.
@group(0) @binding(5) var<storage, read> cw: array<f32>;
@group(0) @binding(6) var<storage, read> h0: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;
@group(0) @binding(8) var<storage, read_write> h_out: array<f32>;

// selective_scan: channels per workgroup, state groups (vec4 each); tokens per chunk (16 or
// 32, selective_scan_channel's too).
const SC: u32 = 16u;
const SG: u32 = 4u;
override ST: u32 = 16u;

// [ST][SC] delta and u; [ST][SG] B and C; [ST][PR] partial sums of C h, a token's SG x SC.
// The y pass reads rows g and g + 1 in one warp, so they must lie 16 banks apart: with
// ST = 16, rows of PR = 80 words (9 KiB in all); with ST = 32, rows of 64 words (16 KiB in
// all, WebGPU's guaranteed limit) and the 4 groups' slots rotated by one in odd rows (PROT).
override PR: u32 = select(64u, 80u, ST <= 16u);
override PROT: u32 = select(1u, 0u, ST <= 16u);
var<workgroup> t_delta: array<f32, ST * SC>;
var<workgroup> t_u: array<f32, ST * SC>;
var<workgroup> t_b: array<vec4<f32>, ST * SG>;
var<workgroup> t_c: array<vec4<f32>, ST * SG>;
var<workgroup> t_part: array<f32, ST * PR>;

// Slot of group j's partial sum for token row r, channel c, in t_part.
fn part_at(r: u32, j: u32, c: u32) -> u32 {
    return r * PR + ((j + PROT * (r & 1u)) & 3u) * SC + c;
}

// Element i of the per-channel constants, 0 where `ok` is false.
fn cw_or0(i: u32, ok: bool) -> f32 {
    if (ok) {
        return cw[i];
    }
    return 0.0;
}

fn h0_or0(i: u32, ok: bool) -> f32 {
    if (ok) {
        return h0[i];
    }
    return 0.0;
}

fn bc_or0(i: u32, ok: bool) -> f32 {
    if (ok) {
        return bc[i];
    }
    return 0.0;
}

// 4 consecutive states from n0 of row `base` (N per row), zeros past N.
fn cw4(base: u32, n0: u32, live: bool) -> vec4<f32> {
    return vec4<f32>(
        cw_or0(base + n0, live && n0 < p.n),
        cw_or0(base + n0 + 1u, live && n0 + 1u < p.n),
        cw_or0(base + n0 + 2u, live && n0 + 2u < p.n),
        cw_or0(base + n0 + 3u, live && n0 + 3u < p.n));
}

fn h04(base: u32, n0: u32, live: bool) -> vec4<f32> {
    return vec4<f32>(
        h0_or0(base + n0, live && n0 < p.n),
        h0_or0(base + n0 + 1u, live && n0 + 1u < p.n),
        h0_or0(base + n0 + 2u, live && n0 + 2u < p.n),
        h0_or0(base + n0 + 3u, live && n0 + 3u < p.n));
}

fn bc4(base: u32, n0: u32, live: bool) -> vec4<f32> {
    return vec4<f32>(
        bc_or0(base + n0, live && n0 < p.n),
        bc_or0(base + n0 + 1u, live && n0 + 1u < p.n),
        bc_or0(base + n0 + 2u, live && n0 + 2u < p.n),
        bc_or0(base + n0 + 3u, live && n0 + 3u < p.n));
}

// B and C of the chunk from token k0 of sequence b into t_b, t_c: entry i is token i / SG,
// states 4 (i % SG) ..; tokens past L stage zeros. 64 threads, ST * SG entries.
fn stage_bc(lid: u32, b: u32, k0: u32) {
    for (var i = lid; i < ST * SG; i += 64u) {
        let tok = k0 + i / SG;
        let ok = tok < p.len;
        let row = (b * p.len + tok) * p.bc_stride;
        t_b[i] = bc4(row + p.b_offset, 4u * (i % SG), ok);
        t_c[i] = bc4(row + p.c_offset, 4u * (i % SG), ok);
    }
}

@compute @workgroup_size(64)
fn selective_scan(ids: Ids, wg: Wg) {
    let blocks = (p.d + SC - 1u) / SC;
    let gi = group_index(wg);
    if (gi >= p.batch * blocks) {
        return;
    }
    let b = gi / blocks;
    // Thread (c, g): channel ch0 + c, states 4g..4g+3. A warp holds consecutive channels.
    let c = ids.lid % SC;
    let g = ids.lid / SC;
    let ch = (gi % blocks) * SC + c;
    let live = ch < p.d;
    let cw_row = ch * (p.n + 2u);
    // A log2(e): exp(delta A) as exp2(delta A log2 e), one multiply fewer per state and step.
    let a4 = cw4(cw_row, 4u * g, live) * 1.4426950408889634;
    let bias = cw_or0(cw_row + p.n, live);
    let dsk = cw_or0(cw_row + p.n + 1u, live);
    let hrow = (b * p.d + ch) * p.n;
    var h = h04(hrow, 4u * g, live && p.has_h0 != 0u);
    let chunks = (p.len + ST - 1u) / ST;
    for (var k = 0u; k < chunks; k += 1u) {
        let k0 = k * ST;
        // Stage the chunk. Thread (c, g) loads rows g, g + 4, g + 8, g + 12 of its channel:
        // the rows it writes y for below, so t_u needs no barrier between the two. Tokens
        // past L stage delta = u = B = C = 0 (h unchanged).
        for (var r = g; r < ST; r += SG) {
            let tok = k0 + r;
            let ok = live && tok < p.len;
            var dv = 0.0;
            var uv = 0.0;
            if (ok) {
                let row = b * p.len + tok;
                uv = u[row * p.u_stride + ch];
                dv = softplus(dt[row * p.dt_stride + ch] + bias);
            }
            t_delta[r * SC + c] = dv;
            t_u[r * SC + c] = uv;
        }
        stage_bc(ids.lid, b, k0);
        workgroupBarrier();
        let steps = min(ST, p.len - k0);
        for (var r = 0u; r < steps; r += 1u) {
            let dv = t_delta[r * SC + c];
            let bv = t_b[r * SG + g];
            h = exp2(dv * a4) * h + (dv * t_u[r * SC + c]) * bv;
            t_part[part_at(r, g, c)] = dot(h, t_c[r * SG + g]);
        }
        workgroupBarrier();
        // y of rows g, g + 4, ...: the 4 groups' partial sums, the skip, the gate.
        if (live) {
            for (var r = g; r < steps; r += SG) {
                let row = b * p.len + k0 + r;
                let s = (t_part[part_at(r, 0u, c)] + t_part[part_at(r, 1u, c)])
                    + (t_part[part_at(r, 2u, c)] + t_part[part_at(r, 3u, c)]);
                let zz = z[row * p.z_stride + p.z_offset + ch];
                y[row * p.d + ch] = (s + dsk * t_u[r * SC + c]) * silu(zz);
            }
        }
    }
    store_h4(hrow, 4u * g, live, h);
}

// 64 channels a workgroup, a thread per channel: states 4j..4j+3 in hvj, A log2(e) in aj.
@compute @workgroup_size(64)
fn selective_scan_channel(ids: Ids, wg: Wg) {
    let blocks = (p.d + 63u) / 64u;
    let gi = group_index(wg);
    if (gi >= p.batch * blocks) {
        return;
    }
    let b = gi / blocks;
    let ch = (gi % blocks) * 64u + ids.lid;
    let live = ch < p.d;
    let cw_row = ch * (p.n + 2u);
    let a0 = cw4(cw_row, 0u, live) * 1.4426950408889634;
    let a1 = cw4(cw_row, 4u, live) * 1.4426950408889634;
    let a2 = cw4(cw_row, 8u, live) * 1.4426950408889634;
    let a3 = cw4(cw_row, 12u, live) * 1.4426950408889634;
    let bias = cw_or0(cw_row + p.n, live);
    let dsk = cw_or0(cw_row + p.n + 1u, live);
    let hrow = (b * p.d + ch) * p.n;
    let with_h0 = live && p.has_h0 != 0u;
    var hv0 = h04(hrow, 0u, with_h0);
    var hv1 = h04(hrow, 4u, with_h0);
    var hv2 = h04(hrow, 8u, with_h0);
    var hv3 = h04(hrow, 12u, with_h0);
    let chunks = (p.len + ST - 1u) / ST;
    for (var k = 0u; k < chunks; k += 1u) {
        let k0 = k * ST;
        stage_bc(ids.lid, b, k0);
        workgroupBarrier();
        for (var r = 0u; r < ST; r += 1u) {
            let tok = k0 + r;
            if (live && tok < p.len) {
                let row = b * p.len + tok;
                let uv = u[row * p.u_stride + ch];
                let dv = softplus(dt[row * p.dt_stride + ch] + bias);
                let zz = z[row * p.z_stride + p.z_offset + ch];
                let du = dv * uv;
                let i = r * SG;
                hv0 = exp2(dv * a0) * hv0 + du * t_b[i];
                hv1 = exp2(dv * a1) * hv1 + du * t_b[i + 1u];
                hv2 = exp2(dv * a2) * hv2 + du * t_b[i + 2u];
                hv3 = exp2(dv * a3) * hv3 + du * t_b[i + 3u];
                // The register path's order: the 4 groups' dots, summed in pairs.
                let s = (dot(hv0, t_c[i]) + dot(hv1, t_c[i + 1u]))
                    + (dot(hv2, t_c[i + 2u]) + dot(hv3, t_c[i + 3u]));
                y[row * p.d + ch] = (s + dsk * uv) * silu(zz);
            }
        }
        // t_b and t_c are restaged next chunk.
        workgroupBarrier();
    }
    store_h4(hrow, 0u, live, hv0);
    store_h4(hrow, 4u, live, hv1);
    store_h4(hrow, 8u, live, hv2);
    store_h4(hrow, 12u, live, hv3);
}

// States n0..n0+3 of h into h_out's row `base`, those below N.
fn store_h4(base: u32, n0: u32, live: bool, h: vec4<f32>) {
    if (live && n0 < p.n) {
        h_out[base + n0] = h.x;
    }
    if (live && n0 + 1u < p.n) {
        h_out[base + n0 + 1u] = h.y;
    }
    if (live && n0 + 2u < p.n) {
        h_out[base + n0 + 2u] = h.z;
    }
    if (live && n0 + 3u < p.n) {
        h_out[base + n0 + 3u] = h.w;
    }
}

var<workgroup> sa: array<f32, WG>;
var<workgroup> sb: array<f32, WG>;
var<workgroup> carry: array<f32, 64>;

@compute @workgroup_size(WG)
fn selective_scan_wide(ids: Ids, wg: Wg) {
    let tc = WG / NS;
    let bd = group_index(wg);
    if (bd >= p.batch * p.d) {
        return;
    }
    let b = bd / p.d;
    let ch = bd % p.d;
    let n = ids.lid % NS;
    let t = ids.lid / NS;
    let active_n = n < p.n;
    let cw_row = ch * (p.n + 2u);
    var a_n = 0.0;
    if (active_n) {
        a_n = cw[cw_row + n];
    }
    if (ids.lid < NS) {
        var h = 0.0;
        if (p.has_h0 != 0u && active_n) {
            h = h0[(b * p.d + ch) * p.n + n];
        }
        carry[n] = h;
    }
    workgroupBarrier();
    let bias = cw[cw_row + p.n];
    let dsk = cw[cw_row + p.n + 1u];
    let chunks = (p.len + tc - 1u) / tc;
    for (var k = 0u; k < chunks; k += 1u) {
        let tok = k * tc + t;
        let live = tok < p.len && active_n;
        var ea = 1.0;
        var eb = 0.0;
        var uv = 0.0;
        var cv = 0.0;
        if (live) {
            let row = b * p.len + tok;
            uv = u[row * p.u_stride + ch];
            let delta = softplus(dt[row * p.dt_stride + ch] + bias);
            ea = exp(delta * a_n);
            eb = delta * bc[row * p.bc_stride + p.b_offset + n] * uv;
            cv = bc[row * p.bc_stride + p.c_offset + n];
        }
        sa[ids.lid] = ea;
        sb[ids.lid] = eb;
        workgroupBarrier();
        // Inclusive scan over t for each n (stride NS between consecutive t).
        for (var s = 1u; s < tc; s = s << 1u) {
            var pa = 1.0;
            var pb = 0.0;
            if (t >= s) {
                pa = sa[ids.lid - s * NS];
                pb = sb[ids.lid - s * NS];
            }
            workgroupBarrier();
            if (t >= s) {
                let ca = sa[ids.lid];
                sb[ids.lid] = ca * pb + sb[ids.lid];
                sa[ids.lid] = ca * pa;
            }
            workgroupBarrier();
        }
        let h = sa[ids.lid] * carry[n] + sb[ids.lid];
        workgroupBarrier();
        // y_t = sum_n h[n] C_t[n]: reduce across the NS lanes of token t.
        sa[ids.lid] = select(0.0, h * cv, live);
        workgroupBarrier();
        for (var s = NS / 2u; s > 0u; s = s >> 1u) {
            if (n < s) {
                sa[ids.lid] += sa[ids.lid + s];
            }
            workgroupBarrier();
        }
        if (n == 0u && tok < p.len) {
            let row = b * p.len + tok;
            let uu = u[row * p.u_stride + ch];
            let zz = z[row * p.z_stride + p.z_offset + ch];
            y[row * p.d + ch] = (sa[ids.lid] + dsk * uu) * silu(zz);
        }
        // The chunk's last token carries into the next chunk.
        let last = min(tc, p.len - k * tc) - 1u;
        if (t == last && active_n) {
            carry[n] = h;
        }
        workgroupBarrier();
    }
    if (ids.lid < p.n) {
        h_out[(b * p.d + ch) * p.n + ids.lid] = carry[ids.lid];
    }
}

// One token per sequence, the state [B, D, N] updated in place, dt_proj fused in: for
// channel d, dt = dt_proj.weight[d, 0..R] . x_dbl[b, dt_offset..+R] (its bias is in the
// packed constants). Threads: WG / NS channels x NS lanes; the lanes split dt_proj's dot
// product (coalesced along the weight row), then own one state each; 2 barriers.
@group(0) @binding(1) var<storage, read> su: array<f32>;
@group(0) @binding(2) var<storage, read> swdt: array<f32>;
@group(0) @binding(3) var<storage, read> sbc: array<f32>;
@group(0) @binding(4) var<storage, read> sz: array<f32>;
@group(0) @binding(5) var<storage, read> scw: array<f32>;
@group(0) @binding(6) var<storage, read_write> sy: array<f32>;
@group(0) @binding(7) var<storage, read_write> state: array<f32>;

// The NS lanes' partial dt_proj sums and C h products of each channel.
var<workgroup> red: array<f32, WG>;
var<workgroup> red_y: array<f32, WG>;

@compute @workgroup_size(WG)
fn selective_state_update(ids: Ids, wg: Wg) {
    let per = WG / NS;
    let n = ids.lid % NS;
    let local_ch = ids.lid / NS;
    let gi = group_index(wg) * per + local_ch;
    let b = gi / p.d;
    let ch = gi % p.d;
    let live_ch = b < p.batch;
    let cw_row = ch * (p.n + 2u);
    let xrow = b * p.bc_stride;
    var dot = 0.0;
    if (live_ch) {
        for (var r = n; r < p.dt_rank; r += NS) {
            dot = fma(swdt[ch * p.dt_rank + r], sbc[xrow + p.dt_offset + r], dot);
        }
    }
    red[ids.lid] = dot;
    workgroupBarrier();
    // Every lane sums its channel's NS partials itself (no tree, one barrier).
    var dts = 0.0;
    for (var i = 0u; i < NS; i += 1u) {
        dts += red[local_ch * NS + i];
    }
    let delta = softplus(dts + scw[cw_row + p.n]);
    var contrib = 0.0;
    if (live_ch && n < p.n) {
        let uv = su[b * p.u_stride + ch];
        let si = (b * p.d + ch) * p.n + n;
        let h = exp(delta * scw[cw_row + n]) * state[si]
            + delta * sbc[xrow + p.b_offset + n] * uv;
        state[si] = h;
        contrib = h * sbc[xrow + p.c_offset + n];
    }
    red_y[ids.lid] = contrib;
    workgroupBarrier();
    if (n == 0u && live_ch) {
        let uv = su[b * p.u_stride + ch];
        let zz = sz[b * p.z_stride + p.z_offset + ch];
        var acc = 0.0;
        for (var i = 0u; i < NS; i += 1u) {
            acc += red_y[ids.lid + i];
        }
        sy[b * p.d + ch] = (acc + scw[cw_row + p.n + 1u] * uv) * silu(zz);
    }
}
