// The tiled GEMM core shared by the GEMM-shaped kernels (matmul.wgsl; conv.wgsl's implicit
// GEMMs): C[BM x BN] += A[BM x K] * B[BN x K]^T for one workgroup's output tile.
//
// Tiles: BN = 64 columns; BM = (WG / 16) * RM rows: 128 x 64 with RM = 8 (`RM8`), 64 x 64 with
// RM = 4, at 256 invocations (64 x 64 and 32 x 64 at 128). Invocation (tx, ty) = (lid % 16,
// lid / 16) owns the RM x 4 micro-tile at rows ty * RM .., columns tx * 4 .. (contiguous
// columns), held in vec4 registers. Per k: one vec4 of B and RM / 4 vec4 of A from workgroup
// memory for 4 * RM FMAs (all 128-bit loads; 16 lanes read 16 consecutive vec4 of B, the A
// vec4s are broadcasts).
//
// k-tiles of BK = 8, double-buffered in workgroup memory and prefetched into registers: the
// global loads of tile t + 1 are issued before tile t's FMAs and stored into the other buffer
// after them, so one barrier per k-tile suffices and the loads' latency hides behind the math.
// Sums are blocked (each 16-deep slice of K summed apart, then added to the total): one running
// sum over all of K lost 2x the accuracy of PyTorch's f32 GEMM at Mamba's shapes.
//
// Operand fetch: each invocation fetches 4 values of A and 4 of B per k-tile, in one of two
// mappings chosen per operand by the layout in global memory, so that adjacent invocations read
// adjacent addresses:
//   - k-major (default): 4 consecutive k of one row (row = lid / 2): rows contiguous along k;
//   - row-major (`A_ROWS` / `B_ROWS`): 4 consecutive rows at one k: operands stored k-outer
//     (a [K, M] activation, torch.bmm's right operand, a 1x1 conv's channels).
// k-major tiles are stored transposed (k outer) with rows padded by 4 words: the 32 lanes of a
// warp then hit 32 distinct banks; row-major fetches store whole vec4s.
//
// The including shader defines `fetch_a(m0, k0, lim) -> vec4<f32>` and `fetch_b(n0, k0, lim)`
// (this invocation's 4 values of the k-tile at k0 from the slots `a_slot()` / `b_slot()`,
// zeros outside the operand or at k >= lim) and `store_row(i, row, col, v)`, then calls
// `gemm_tile(lid, m0, n0, k_begin, k_end)` and `gemm_store(m0, n0)` in uniform control flow.

#ifdef RM8
const RM: u32 = 8u;
#else
const RM: u32 = 4u;
#endif
const BN: u32 = 64u;
const GTY: u32 = WG / 16u;
const BM: u32 = GTY * RM;
const BK: u32 = 8u;
// Padded rows of the shared tiles, in vec4s.
const PA4: u32 = BM / 4u + 1u;
const PB4: u32 = BN / 4u + 1u;

// A row-major fetch stores whole vec4s; a k-major one stores 4 scalars into 4 k-rows, so its
// tile is an array of f32 (a run-time-indexed component store into a vec4 in workgroup memory
// becomes a read-modify-write of the whole vector in HLSL, racing with the lanes that store
// the other three components) read back as 4 consecutive 16-byte-aligned words.
#ifdef A_ROWS
var<workgroup> sa: array<vec4<f32>, 2u * BK * PA4>;
fn a_quad(i: u32) -> vec4<f32> {
    return sa[i];
}
#else
var<workgroup> sa: array<f32, 8u * BK * PA4>;
fn a_quad(i: u32) -> vec4<f32> {
    let j = 4u * i;
    return vec4<f32>(sa[j], sa[j + 1u], sa[j + 2u], sa[j + 3u]);
}
#endif
#ifdef B_ROWS
var<workgroup> sb: array<vec4<f32>, 2u * BK * PB4>;
fn b_quad(i: u32) -> vec4<f32> {
    return sb[i];
}
#else
var<workgroup> sb: array<f32, 8u * BK * PB4>;
fn b_quad(i: u32) -> vec4<f32> {
    let j = 4u * i;
    return vec4<f32>(sb[j], sb[j + 1u], sb[j + 2u], sb[j + 3u]);
}
#endif

var<private> g_lid: u32;
var<private> acc0: vec4<f32>;
var<private> acc1: vec4<f32>;
var<private> acc2: vec4<f32>;
var<private> acc3: vec4<f32>;
var<private> part0: vec4<f32>;
var<private> part1: vec4<f32>;
var<private> part2: vec4<f32>;
var<private> part3: vec4<f32>;
#ifdef RM8
var<private> acc4: vec4<f32>;
var<private> acc5: vec4<f32>;
var<private> acc6: vec4<f32>;
var<private> acc7: vec4<f32>;
var<private> part4: vec4<f32>;
var<private> part5: vec4<f32>;
var<private> part6: vec4<f32>;
var<private> part7: vec4<f32>;
#endif

// (row, k, in use) of this invocation's first fetched value in a tile of `rows` rows.
fn slot(rows: u32, by_rows: bool) -> vec3<u32> {
    if (by_rows) {
        let q = rows / 4u;
        return vec3<u32>(4u * (g_lid % q), g_lid / q, u32(g_lid / q < BK));
    }
    return vec3<u32>(g_lid / 2u, 4u * (g_lid % 2u), u32(g_lid / 2u < rows));
}

fn a_slot() -> vec3<u32> {
#ifdef A_ROWS
    return slot(BM, true);
#else
    return slot(BM, false);
#endif
}

fn b_slot() -> vec3<u32> {
#ifdef B_ROWS
    return slot(BN, true);
#else
    return slot(BN, false);
#endif
}

// Stores this invocation's fetched values into buffer `buf`. (No early returns in these
// helpers: the barriers after their calls must stay in uniform control flow for Tint.)
fn put_a(buf: u32, v: vec4<f32>) {
    let s = a_slot();
    if (s.z != 0u) {
#ifdef A_ROWS
        sa[(buf * BK + s.y) * PA4 + s.x / 4u] = v;
#else
        // Word (k, row) of the transposed tile: k * PA4 * 4 + row.
        let i = (buf * BK + s.y) * PA4 * 4u + s.x;
        sa[i] = v.x;
        sa[i + PA4 * 4u] = v.y;
        sa[i + 8u * PA4] = v.z;
        sa[i + 12u * PA4] = v.w;
#endif
    }
}

fn put_b(buf: u32, v: vec4<f32>) {
    let s = b_slot();
    if (s.z != 0u) {
#ifdef B_ROWS
        sb[(buf * BK + s.y) * PB4 + s.x / 4u] = v;
#else
        let i = (buf * BK + s.y) * PB4 * 4u + s.x;
        sb[i] = v.x;
        sb[i + PB4 * 4u] = v.y;
        sb[i + 8u * PB4] = v.z;
        sb[i + 12u * PB4] = v.w;
#endif
    }
}

// The FMAs of one k-tile from buffer `buf`.
fn mac(buf: u32) {
    let tx = g_lid % 16u;
    let ty = g_lid / 16u;
    for (var kk = 0u; kk < BK; kk += 1u) {
        let bv = b_quad((buf * BK + kk) * PB4 + tx);
        let ia = (buf * BK + kk) * PA4 + ty * (RM / 4u);
        let a0 = a_quad(ia);
        part0 = fma(vec4<f32>(a0.x), bv, part0);
        part1 = fma(vec4<f32>(a0.y), bv, part1);
        part2 = fma(vec4<f32>(a0.z), bv, part2);
        part3 = fma(vec4<f32>(a0.w), bv, part3);
#ifdef RM8
        let a1 = a_quad(ia + 1u);
        part4 = fma(vec4<f32>(a1.x), bv, part4);
        part5 = fma(vec4<f32>(a1.y), bv, part5);
        part6 = fma(vec4<f32>(a1.z), bv, part6);
        part7 = fma(vec4<f32>(a1.w), bv, part7);
#endif
    }
}

fn flush() {
    let z = vec4<f32>(0.0);
    acc0 += part0;
    acc1 += part1;
    acc2 += part2;
    acc3 += part3;
    part0 = z;
    part1 = z;
    part2 = z;
    part3 = z;
#ifdef RM8
    acc4 += part4;
    acc5 += part5;
    acc6 += part6;
    acc7 += part7;
    part4 = z;
    part5 = z;
    part6 = z;
    part7 = z;
#endif
}

// Accumulates the tile over k in [k_begin, k_end). Every invocation of the workgroup calls it
// with the same (uniform) arguments.
fn gemm_tile(lid: u32, m0: u32, n0: u32, k_begin: u32, k_end: u32) {
    g_lid = lid;
    let z = vec4<f32>(0.0);
    acc0 = z;
    acc1 = z;
    acc2 = z;
    acc3 = z;
#ifdef RM8
    acc4 = z;
    acc5 = z;
    acc6 = z;
    acc7 = z;
#endif
    flush();
    put_a(0u, fetch_a(m0, k_begin, k_end));
    put_b(0u, fetch_b(n0, k_begin, k_end));
    workgroupBarrier();
    for (var k0 = k_begin; k0 < k_end; k0 += 2u * BK) {
        var va = z;
        var vb = z;
        if (k0 + BK < k_end) {
            va = fetch_a(m0, k0 + BK, k_end);
            vb = fetch_b(n0, k0 + BK, k_end);
        }
        mac(0u);
        put_a(1u, va);
        put_b(1u, vb);
        workgroupBarrier();
        va = z;
        vb = z;
        if (k0 + 2u * BK < k_end) {
            va = fetch_a(m0, k0 + 2u * BK, k_end);
            vb = fetch_b(n0, k0 + 2u * BK, k_end);
        }
        mac(1u);
        flush();
        put_a(0u, va);
        put_b(0u, vb);
        workgroupBarrier();
    }
}

// Hands each of this invocation's RM rows (4 contiguous columns) to the includer's store_row.
fn gemm_store(m0: u32, n0: u32) {
    let r = m0 + (g_lid / 16u) * RM;
    let c = n0 + (g_lid % 16u) * 4u;
    store_row(r, c, acc0);
    store_row(r + 1u, c, acc1);
    store_row(r + 2u, c, acc2);
    store_row(r + 3u, c, acc3);
#ifdef RM8
    store_row(r + 4u, c, acc4);
    store_row(r + 5u, c, acc5);
    store_row(r + 6u, c, acc6);
    store_row(r + 7u, c, acc7);
#endif
}
