// The tiled GEMM core shared by the GEMM-shaped kernels (matmul.wgsl; conv.wgsl's implicit
// GEMMs): C[BM x BN] += A[BM x K] * B[BN x K]^T for one workgroup's output tile.
//
// Tiles: BN = 64 columns; BM = (WG / 16) * RM rows: 128 x 64 with RM = 8 (`RM8`), 64 x 64 with
// RM = 4, at 256 invocations (64 x 64 and 32 x 64 at 128). Invocation (tx, ty) = (lid % 16,
// lid / 16) owns the RM x 4 micro-tile at rows ty * RM .., columns tx * 4 .. (contiguous
// columns), held in vec4 registers. Per k: one vec4 of B and RM / 4 vec4 of A from workgroup
// memory for 4 * RM FMAs (all 128-bit loads; 16 lanes read 16 consecutive vec4 of B, the A
// vec4s are broadcasts).
// `CN8` (256 invocations only): BN = 128, each invocation's micro-tile RM x 8 (columns
// tx * 4 .. and 64 + tx * 4 ..): 128 x 128 with RM8, an 8 x 8 micro-tile that takes 2 vec4 of
// A and 2 of B per k for 64 FMAs (half the workgroup-memory traffic per FMA of RM x 4). Its
// tiles are unpadded (2 x 8 KiB at 128 x 128: exactly WebGPU's 16 KiB); k-major tiles are
// XOR-swizzled instead (rows of k >= 4 within a k-tile shifted by 16 words), so the
// transposed stores of the two k halves hit distinct banks.
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
#ifdef CN8
const BN: u32 = 128u;
// Rows of the shared tiles, in vec4s (unpadded: swizzled).
const PAD4: u32 = 0u;
#else
const BN: u32 = 64u;
// Padded rows of the shared tiles, in vec4s.
const PAD4: u32 = 1u;
#endif
const GTY: u32 = WG / 16u;
const BM: u32 = GTY * RM;
const BK: u32 = 8u;
const PA4: u32 = BM / 4u + PAD4;
const PB4: u32 = BN / 4u + PAD4;

// Word offset of row `row` (a multiple of 4 for reads) at k `k` of a k-major (transposed) tile
// whose k-rows are `stride` words: under CN8 the rows of the k-tile's second half (k % 8 >= 4)
// are XOR-shifted by 16 words (a multiple of 4: a quad of rows stays contiguous and aligned).
fn kword(k: u32, row: u32, stride: u32) -> u32 {
#ifdef CN8
    return k * stride + (row ^ ((k & 4u) << 2u));
#else
    return k * stride + row;
#endif
}

// A row-major fetch stores whole vec4s; a k-major one stores 4 scalars into 4 k-rows, so its
// tile is an array of f32 (a run-time-indexed component store into a vec4 in workgroup memory
// becomes a read-modify-write of the whole vector in HLSL, racing with the lanes that store
// the other three components) read back as 4 consecutive 16-byte-aligned words.
// a_quad(kb, row) / b_quad(kb, col): the 4 values at rows (columns) row .. row + 3 (a multiple
// of 4) of k-row kb (buffer * BK + k) of the shared tile.
#ifdef A_ROWS
var<workgroup> sa: array<vec4<f32>, 2u * BK * PA4>;
fn a_quad(kb: u32, row: u32) -> vec4<f32> {
    return sa[kb * PA4 + row / 4u];
}
#else
var<workgroup> sa: array<f32, 8u * BK * PA4>;
fn a_quad(kb: u32, row: u32) -> vec4<f32> {
    let j = kword(kb, row, 4u * PA4);
    return vec4<f32>(sa[j], sa[j + 1u], sa[j + 2u], sa[j + 3u]);
}
#endif
#ifdef B_ROWS
var<workgroup> sb: array<vec4<f32>, 2u * BK * PB4>;
fn b_quad(kb: u32, col: u32) -> vec4<f32> {
    return sb[kb * PB4 + col / 4u];
}
#else
var<workgroup> sb: array<f32, 8u * BK * PB4>;
fn b_quad(kb: u32, col: u32) -> vec4<f32> {
    let j = kword(kb, col, 4u * PB4);
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
// CN8: the micro-tile's second 4 columns (64 + tx * 4 ..), rows as above.
#ifdef CN8
var<private> bcc0: vec4<f32>;
var<private> bcc1: vec4<f32>;
var<private> bcc2: vec4<f32>;
var<private> bcc3: vec4<f32>;
var<private> bart0: vec4<f32>;
var<private> bart1: vec4<f32>;
var<private> bart2: vec4<f32>;
var<private> bart3: vec4<f32>;
#ifdef RM8
var<private> bcc4: vec4<f32>;
var<private> bcc5: vec4<f32>;
var<private> bcc6: vec4<f32>;
var<private> bcc7: vec4<f32>;
var<private> bart4: vec4<f32>;
var<private> bart5: vec4<f32>;
var<private> bart6: vec4<f32>;
var<private> bart7: vec4<f32>;
#endif
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
        // Words (k .. k + 3, row) of the transposed tile.
        let kb = buf * BK + s.y;
        sa[kword(kb, s.x, 4u * PA4)] = v.x;
        sa[kword(kb + 1u, s.x, 4u * PA4)] = v.y;
        sa[kword(kb + 2u, s.x, 4u * PA4)] = v.z;
        sa[kword(kb + 3u, s.x, 4u * PA4)] = v.w;
#endif
    }
}

fn put_b(buf: u32, v: vec4<f32>) {
    let s = b_slot();
    if (s.z != 0u) {
#ifdef B_ROWS
        sb[(buf * BK + s.y) * PB4 + s.x / 4u] = v;
#else
        let kb = buf * BK + s.y;
        sb[kword(kb, s.x, 4u * PB4)] = v.x;
        sb[kword(kb + 1u, s.x, 4u * PB4)] = v.y;
        sb[kword(kb + 2u, s.x, 4u * PB4)] = v.z;
        sb[kword(kb + 3u, s.x, 4u * PB4)] = v.w;
#endif
    }
}

// The FMAs of one k-tile from buffer `buf`.
fn mac(buf: u32) {
    let tx = g_lid % 16u;
    let ty = g_lid / 16u;
    for (var kk = 0u; kk < BK; kk += 1u) {
        let kb = buf * BK + kk;
        let bv = b_quad(kb, 4u * tx);
        let a0 = a_quad(kb, ty * RM);
        part0 = fma(vec4<f32>(a0.x), bv, part0);
        part1 = fma(vec4<f32>(a0.y), bv, part1);
        part2 = fma(vec4<f32>(a0.z), bv, part2);
        part3 = fma(vec4<f32>(a0.w), bv, part3);
#ifdef CN8
        let bw = b_quad(kb, 64u + 4u * tx);
        bart0 = fma(vec4<f32>(a0.x), bw, bart0);
        bart1 = fma(vec4<f32>(a0.y), bw, bart1);
        bart2 = fma(vec4<f32>(a0.z), bw, bart2);
        bart3 = fma(vec4<f32>(a0.w), bw, bart3);
#endif
#ifdef RM8
        let a1 = a_quad(kb, ty * RM + 4u);
        part4 = fma(vec4<f32>(a1.x), bv, part4);
        part5 = fma(vec4<f32>(a1.y), bv, part5);
        part6 = fma(vec4<f32>(a1.z), bv, part6);
        part7 = fma(vec4<f32>(a1.w), bv, part7);
#ifdef CN8
        bart4 = fma(vec4<f32>(a1.x), bw, bart4);
        bart5 = fma(vec4<f32>(a1.y), bw, bart5);
        bart6 = fma(vec4<f32>(a1.z), bw, bart6);
        bart7 = fma(vec4<f32>(a1.w), bw, bart7);
#endif
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
#ifdef CN8
    bcc0 += bart0;
    bcc1 += bart1;
    bcc2 += bart2;
    bcc3 += bart3;
    bart0 = z;
    bart1 = z;
    bart2 = z;
    bart3 = z;
#ifdef RM8
    bcc4 += bart4;
    bcc5 += bart5;
    bcc6 += bart6;
    bcc7 += bart7;
    bart4 = z;
    bart5 = z;
    bart6 = z;
    bart7 = z;
#endif
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
#ifdef CN8
    bcc0 = z;
    bcc1 = z;
    bcc2 = z;
    bcc3 = z;
#ifdef RM8
    bcc4 = z;
    bcc5 = z;
    bcc6 = z;
    bcc7 = z;
#endif
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

// Hands each of this invocation's RM rows (4 contiguous columns; under CN8 also the 4 at
// 64 columns on) to the includer's store_row.
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
#ifdef CN8
    store_row(r, c + 64u, bcc0);
    store_row(r + 1u, c + 64u, bcc1);
    store_row(r + 2u, c + 64u, bcc2);
    store_row(r + 3u, c + 64u, bcc3);
#ifdef RM8
    store_row(r + 4u, c + 64u, bcc4);
    store_row(r + 5u, c + 64u, bcc5);
    store_row(r + 6u, c + 64u, bcc6);
    store_row(r + 7u, c + 64u, bcc7);
#endif
#endif
}
