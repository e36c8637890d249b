//! Matrix products (`shaders/matmul.wgsl`): `linear` with PyTorch `[out, in]` weights and an
//! optional bias, batched products with any strides, and a GEMV path for one activation row.
//! f16 weights (shader-f16) accumulate in f32; their plain twin stores the same values as f32.

use bytemuck::{Pod, Zeroable};

use super::causal_conv1d::{self, causal_conv1d_step, check_step, ConvLayout, ConvStep};
use super::elementwise::{binary_into, Binary};
use super::rms_norm::rms_norm;
use super::{expect_dtype, expect_float, grid_rows};
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, output, Case, Feature};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::Recorder;
use crate::spikes::{words_for, PackedSpikes};
use crate::tensor::{DType, Tensor};

/// `out[b, m, n] = sum_k x[b, m, k] * w[b, n, k] (+ bias[n])`, with element strides for each
/// operand (a batch stride of 0 shares the operand across the batch). Output row `r` of
/// the `batch * m` rows starts at `out_offset + r * out_row_stride` (contiguous `[batch, m, n]`
/// by default; a wider stride writes a column block of a larger matrix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gemm {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Strides of x for (batch, m, k).
    pub x_strides: [usize; 3],
    /// Strides of w for (batch, n, k).
    pub w_strides: [usize; 3],
    /// The bias is indexed by m (one per row) instead of n.
    pub bias_on_rows: bool,
    /// Elements of x skipped before its first row (e.g. a sequence's last position).
    pub x_offset: usize,
    /// Elements between consecutive output rows (`n` for a contiguous output).
    pub out_row_stride: usize,
    /// Elements of `out` before the first output (a column block's first column).
    pub out_offset: usize,
}

impl Gemm {
    /// `x [.., k] · w[n, k]ᵀ` over `rows` rows (a Linear layer).
    pub fn linear(rows: usize, n: usize, k: usize) -> Self {
        Self {
            batch: 1,
            m: rows,
            n,
            k,
            x_strides: [0, k, 1],
            w_strides: [0, k, 1],
            bias_on_rows: false,
            x_offset: 0,
            out_row_stride: n,
            out_offset: 0,
        }
    }
    /// A 1x1 conv over the channel axis: `out[r, co, n] = sum_ci W[co, ci] act[r, ci, n]`, with
    /// the weight as the x operand (`[cout, cin]`) and the activation `[r, cin, n]` as w.
    pub fn channels(r: usize, cout: usize, cin: usize, n: usize) -> Self {
        Self {
            batch: r,
            m: cout,
            n,
            k: cin,
            x_strides: [0, cin, 1],
            w_strides: [cin * n, 1, n],
            bias_on_rows: true,
            x_offset: 0,
            out_row_stride: n,
            out_offset: 0,
        }
    }
    /// [`Gemm::channels`] over packed spikes `[r, cin, n]` (the w operand of
    /// [`spike_gemm_planned`]): its strides count words.
    pub fn spike_channels(r: usize, cout: usize, cin: usize, n: usize) -> Self {
        let words = words_for(n);
        Self {
            w_strides: [cin * words, 1, words],
            ..Self::channels(r, cout, cin, n)
        }
    }
    /// `a [batch, m, k] @ b [batch, k, n]` (torch.bmm layout).
    pub fn bmm(batch: usize, m: usize, n: usize, k: usize) -> Self {
        Self {
            batch,
            m,
            n,
            k,
            x_strides: [m * k, k, 1],
            w_strides: [k * n, 1, n],
            bias_on_rows: false,
            x_offset: 0,
            out_row_stride: n,
            out_offset: 0,
        }
    }
    fn max_offset(len: [usize; 3], s: [usize; 3]) -> usize {
        (0..3).map(|i| len[i].saturating_sub(1) * s[i]).sum()
    }
    pub fn flops(&self) -> u64 {
        2 * (self.batch * self.m * self.n * self.k) as u64
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    xs: [u32; 3],
    ws: [u32; 3],
    has_bias: u32,
    x_offset: u32,
    out_stride: u32,
    out_offset: u32,
    splits: u32,
    k_chunk: u32,
    eps: f32,
    _pad: [u32; 3],
}

/// Workgroups a grid should reach before a larger tile or an unsplit K is worth it: one per
/// compute unit of the largest GPUs (132 SMs on an H100/H200, 96–128 CUs on big AMD parts).
pub const GRID_FILL: usize = 132;

/// How [`gemm_into`] runs one product: the kernel variant chosen for its shape class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// One activation row per batch entry (m ≤ 4) of strided operands: the GEMV kernel.
    pub gemv: bool,
    /// 1 to 32 activation rows, both operands k-contiguous: the skinny kernel, with (lanes
    /// along k per weight row, quads of activation rows held per lane: 1 or 2 in one pass,
    /// 4 for passes of 8 rows). Every weight is read from memory once for all rows.
    /// `a_vec` / `b_vec` (set together) select its 128-bit loads.
    pub skinny: Option<(usize, usize)>,
    /// Output tile rows x columns (128 x 64 or 64 x 64 at 256 invocations; the wide tiles
    /// 128 x 128 and 64 x 128 of [`plan_wide`], at 256 only).
    pub tile: (usize, usize),
    /// x (A) is fetched 4 rows at one k (its m stride is 1), else 4 k of one row.
    pub a_rows: bool,
    /// Those 4 values are one aligned 128-bit load.
    pub a_vec: bool,
    pub b_rows: bool,
    pub b_vec: bool,
    /// Output rows written as vec4s.
    pub out_vec: bool,
    /// Every dimension a multiple of the tile (m of its rows, n of its columns, k of 16): no
    /// bounds checks.
    pub unchecked: bool,
    /// Slices of K summed apart into a scratch output, then added by a second pass (1: none).
    pub splits: usize,
    pub k_chunk: usize,
}

impl Plan {
    /// The variant's short name, as the profiler and the ops matrix print it.
    pub fn describe(&self) -> String {
        if self.gemv {
            return "gemv".into();
        }
        if let Some((lanes, quads)) = self.skinny {
            return format!(
                "skinny {lanes} lanes x {}{}{}",
                if quads > 2 {
                    "8-row passes".to_string()
                } else {
                    format!("{} rows", 4 * quads)
                },
                if self.a_vec { " vec4" } else { "" },
                if self.splits > 1 {
                    format!(" split-k {}x{}", self.splits, self.k_chunk)
                } else {
                    String::new()
                }
            );
        }
        let lay = |rows: bool, vec: bool| match (rows, vec) {
            (false, false) => "k",
            (false, true) => "k4",
            (true, false) => "r",
            (true, true) => "r4",
        };
        format!(
            "{}x{} a={} b={}{}{}{}",
            self.tile.0,
            self.tile.1,
            lay(self.a_rows, self.a_vec),
            lay(self.b_rows, self.b_vec),
            if self.out_vec { " out4" } else { "" },
            if self.unchecked { " unchecked" } else { "" },
            if self.splits > 1 {
                format!(" split-k {}x{}", self.splits, self.k_chunk)
            } else {
                String::new()
            }
        )
    }
}

/// The variant for `g` on a device of `wg` invocations per workgroup (256 or 128).
pub fn plan(g: &Gemm, wg: usize) -> Plan {
    plan_with(g, wg, None, None)
}

/// [`plan`] with the tile rows (the large `wg / 2` or the small `wg / 4`) and the K slices
/// forced (tests and benchmarks of each variant); the rest follows from the shape. Forced
/// tile rows also force the tiled kernel where the skinny one would serve.
pub fn plan_with(g: &Gemm, wg: usize, rows: Option<usize>, slices: Option<usize>) -> Plan {
    if rows.is_none() {
        if let Some(pl) = skinny_plan(g, wg, slices) {
            return pl;
        }
    }
    plan_inner(g, wg, rows, 64, slices, false)
}

/// Columns of [`plan_wide`]'s tiles: 128 at 256 invocations (each invocation an RM x 8
/// micro-tile), 64 elsewhere (the tile loaders need 256 invocations for 128 columns).
pub fn wide_cols(wg: usize) -> usize {
    if wg == 256 {
        128
    } else {
        64
    }
}

/// The tiled plan on the wide tiles ([`wide_cols`] columns; `rows` forces the large or small
/// rows as in [`plan_with`]): 128 x 128 tiles with 8 x 8 micro-tiles, half the workgroup-memory
/// loads per FMA of the 128 x 64 tile. Not chosen by [`plan`] yet: the GPU runs of
/// `spikescan bench --kernels` time it beside the default at the ceiling's shape. Where one
/// activation row would take the GEMV, that stays.
pub fn plan_wide(g: &Gemm, wg: usize, rows: Option<usize>, slices: Option<usize>) -> Plan {
    plan_inner(
        g,
        wg,
        rows.or(Some((wg / 16) * 8)),
        wide_cols(wg),
        slices,
        false,
    )
}

/// Most activation rows the skinny kernel takes (in passes of 8 rows).
pub const SKINNY_ROWS: usize = 32;

/// The skinny kernel's plan for `g`, where it serves: 1 to [`SKINNY_ROWS`] rows, x and w
/// contiguous along k. 32 lanes per weight row (512 contiguous bytes of one row per subgroup
/// load, 8 weight rows per workgroup), 8 where k is under 128 (32 lanes would idle). Each
/// lane holds the accumulators of one pass of 8 rows (2 quads; 1 for m ≤ 4) and the kernel
/// runs ceil(m / 8) passes, so the register count does not grow with m. K is split only
/// where the grid leaves most compute units idle (under a quarter of [`GRID_FILL`]) and K
/// is long (≥ 2048): a split costs a second dispatch (the reduce), and decode is bounded by
/// dispatches at these sizes; `slices` forces the count.
fn skinny_plan(g: &Gemm, wg: usize, slices: Option<usize>) -> Option<Plan> {
    if g.m == 0 || g.m > SKINNY_ROWS || g.x_strides[2] != 1 || g.w_strides[2] != 1 {
        return None;
    }
    let (a4, b4) = k_vec(g);
    let vec = a4 && b4;
    let lanes = if g.k >= 128 { 32 } else { 8 };
    // Quads in the pass (1 or 2), or 4: passes of 2 quads over m > 8 rows.
    let quads = match g.m {
        0..=4 => 1,
        5..=8 => 2,
        _ => 4,
    };
    let grid = g.n.div_ceil(wg / lanes) * g.batch;
    let want = slices.unwrap_or(if grid < GRID_FILL / 4 && g.k >= 2048 {
        GRID_FILL.div_ceil(grid).min(g.k / 512).min(16)
    } else {
        1
    });
    let (splits, k_chunk) = k_slices(g.k, want);
    Some(Plan {
        gemv: false,
        skinny: Some((lanes, quads)),
        tile: (0, 0),
        a_rows: false,
        a_vec: vec,
        b_rows: false,
        b_vec: vec,
        out_vec: false,
        unchecked: false,
        splits,
        k_chunk,
    })
}

/// [`plan_with`] for a product whose w operand is packed spikes ([`spike_gemm_planned`]):
/// always the tiled kernel, the spikes fetched 4 positions (one nibble) at a k.
pub fn plan_spikes(g: &Gemm, wg: usize, rows: Option<usize>, slices: Option<usize>) -> Plan {
    plan_inner(g, wg, rows, 64, slices, true)
}

/// Tile rows and K slices of an `m x n` product over `k`, `batch` times, on tiles of `cols`
/// columns (64; 128 for the wide tiles) and `wg / 2` (large) or `wg / 4` (small) rows: the large tile where its grid still
/// reaches [`GRID_FILL`]; K split into slices of at least 256 (multiples of 16) where the
/// grid is under two workgroups per compute unit (one 256-invocation workgroup per SM is 8 of
/// its 64 warps: too few to hide memory latency). `rows` / `slices` force either (a forced
/// tile that is neither size is ignored). Returns (rows, splits, k_chunk).
#[allow(clippy::too_many_arguments)]
pub(crate) fn tiling(
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    wg: usize,
    cols: usize,
    rows: Option<usize>,
    slices: Option<usize>,
) -> (usize, usize, usize) {
    let big = (wg / 16) * 8;
    let grid = |rows: usize| m.div_ceil(rows) * n.div_ceil(cols) * batch;
    let rows = rows.filter(|&r| r == big || r == big / 2).unwrap_or(
        if m >= big && grid(big) >= GRID_FILL {
            big
        } else {
            big / 2
        },
    );
    let tiles = grid(rows);
    let want = slices.unwrap_or(if tiles < 2 * GRID_FILL && k >= 512 {
        (2 * GRID_FILL).div_ceil(tiles).min(k / 256).min(16)
    } else {
        1
    });
    let (splits, k_chunk) = k_slices(k, want);
    (rows, splits, k_chunk)
}

/// K in about `want` slices of a multiple of 16 each: `(splits, k_chunk)`, `(1, k)` where
/// that leaves one.
fn k_slices(k: usize, want: usize) -> (usize, usize) {
    if want > 1 {
        let k_chunk = k.div_ceil(want).div_ceil(16) * 16;
        let splits = k.div_ceil(k_chunk);
        if splits > 1 {
            return (splits, k_chunk);
        }
    }
    (1, k)
}

/// Whether x (A) and w (B), each read as 4 consecutive k of a row, allow 128-bit loads: k
/// contiguous, and k, the row stride, the offset and (past one batch entry) the batch stride
/// multiples of 4.
fn k_vec(g: &Gemm) -> (bool, bool) {
    let m4 = |v: usize| v.is_multiple_of(4);
    let bs = |s: usize| g.batch == 1 || m4(s);
    (
        m4(g.x_offset)
            && bs(g.x_strides[0])
            && g.x_strides[2] == 1
            && m4(g.x_strides[1])
            && m4(g.k),
        bs(g.w_strides[0]) && g.w_strides[2] == 1 && m4(g.w_strides[1]) && m4(g.k),
    )
}

fn plan_inner(
    g: &Gemm,
    wg: usize,
    rows: Option<usize>,
    cols: usize,
    slices: Option<usize>,
    bits: bool,
) -> Plan {
    let gemv = !bits && g.m * g.batch <= 65_535 && g.m <= 4;
    let m4 = |v: usize| v.is_multiple_of(4);
    // An operand's batch stride matters only with more than one batch entry.
    let bs = |s: usize| g.batch == 1 || m4(s);
    // A (x: rows m) and B (w: rows n): fetch 4 consecutive rows where rows are contiguous
    // (and k is not), else 4 consecutive k; a 128-bit load where the 4 are contiguous and
    // aligned.
    let a_rows = g.x_strides[1] == 1 && g.x_strides[2] != 1 && g.m > 1;
    let (a_k4, b_k4) = k_vec(g);
    let a_vec = if a_rows {
        m4(g.x_offset) && bs(g.x_strides[0]) && m4(g.x_strides[2]) && m4(g.m)
    } else {
        a_k4
    };
    let b_rows = bits || (g.w_strides[1] == 1 && g.w_strides[2] != 1 && g.n > 1);
    let b_vec = !bits
        && if b_rows {
            bs(g.w_strides[0]) && m4(g.w_strides[2]) && m4(g.n)
        } else {
            b_k4
        };
    let (rows, splits, k_chunk) = if gemv {
        ((wg / 16) * 4, 1, g.k)
    } else {
        tiling(g.m, g.n, g.k, g.batch, wg, cols, rows, slices)
    };
    let cols = if gemv { 64 } else { cols };
    let out_vec = m4(g.n) && m4(g.out_offset) && m4(g.out_row_stride);
    Plan {
        gemv,
        skinny: None,
        tile: (rows, cols),
        a_rows,
        a_vec,
        b_rows,
        b_vec,
        out_vec,
        unchecked: g.m.is_multiple_of(rows) && g.n.is_multiple_of(cols) && g.k.is_multiple_of(16),
        splits,
        k_chunk,
    }
}

/// Records `g` into `out`. Picks GEMV for a single activation row per batch entry, else the
/// tiled GEMM variant of [`plan`].
pub fn gemm_into(
    rec: &mut Recorder,
    g: &Gemm,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    out: &Tensor,
) -> Result<()> {
    gemm_planned(rec, g, plan(g, rec.device().wg() as usize), x, w, bias, out)
}

/// [`gemm_into`] with the variant `pl` (from [`plan`] or [`plan_with`] for this `g`).
pub fn gemm_planned(
    rec: &mut Recorder,
    g: &Gemm,
    pl: Plan,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    out: &Tensor,
) -> Result<()> {
    check_w(g, w)?;
    record(rec, g, pl, x, w, false, bias, out, Fuse::default())
}

/// A float weight operand large enough for `g`'s strides.
fn check_w(g: &Gemm, w: &Tensor) -> Result<()> {
    expect_float("matmul", "w", w)?;
    if Gemm::max_offset([g.batch, g.n, g.k], g.w_strides) >= w.numel() {
        return Err(shape_err(
            "matmul",
            format!("w {:?} is too small for {g:?}", w.shape()),
        ));
    }
    Ok(())
}

/// Where a product takes an RMSNorm of its rows (`norm`): inside the product where `fuse`
/// (the norm returned, for [`Fuse::norm`]), else by an RMSNorm pass first, whose output
/// (returned) stands in for x.
pub(crate) fn split_norm<'a>(
    rec: &mut Recorder,
    x: &Tensor,
    norm: Option<PreNorm<'a>>,
    fuse: bool,
) -> Result<(Option<Tensor>, Option<PreNorm<'a>>)> {
    match norm {
        Some(nm) if !fuse => Ok((Some(rms_norm(rec, x, nm.weight, nm.eps)?), None)),
        _ => Ok((None, norm)),
    }
}

/// [`gemm_into`] of a Linear product (`g` as [`Gemm::linear`] makes it, any output row
/// stride and offset) whose x rows are RMS-normalised first (`norm`): inside the skinny
/// kernel where it serves (f32 rows: one dispatch, the norm weight in the bias binding, so no
/// bias), else by an RMSNorm pass before the product.
pub fn gemm_norm_into(
    rec: &mut Recorder,
    g: &Gemm,
    x: &Tensor,
    norm: PreNorm,
    w: &Tensor,
    out: &Tensor,
) -> Result<()> {
    let lin = Gemm::linear(g.m, g.n, g.k);
    if g.batch != 1 || g.x_strides != lin.x_strides || g.x_offset != 0 || g.bias_on_rows {
        return Err(shape_err(
            "matmul",
            format!("a normalised product takes contiguous x rows, not {g:?}"),
        ));
    }
    check_w(g, w)?;
    let wg = rec.device().wg() as usize;
    let pl = skinny_plan(g, wg, Some(1)).filter(|_| x.dtype() == DType::F32);
    let (normed, fused) = split_norm(rec, x, Some(norm), pl.is_some())?;
    match (pl, fused) {
        (Some(pl), Some(_)) => {
            let fuse = Fuse {
                norm: fused,
                ..Fuse::default()
            };
            record(rec, g, pl, x, w, false, None, out, fuse)
        }
        _ => {
            let x = normed.as_ref().unwrap_or(x);
            record(rec, g, plan(g, wg), x, w, false, None, out, Fuse::default())
        }
    }
}

/// [`gemm_planned`] with packed spikes as the w operand (`s [batch, k, n]`, spike (b, n, k) at
/// bit n of row b·k + k), expanded to 0/1 as the tiles are fetched: `out[b, m, n] =
/// sum_k x[b, m, k] s[b, k, n] (+ bias)`. `g.w_strides` are (batch, 1, k) in words, as
/// [`Gemm::spike_channels`] sets them; `pl` comes from [`plan_spikes`].
pub fn spike_gemm_planned(
    rec: &mut Recorder,
    g: &Gemm,
    pl: Plan,
    x: &Tensor,
    s: &PackedSpikes,
    bias: Option<&Tensor>,
    out: &Tensor,
) -> Result<()> {
    let (sh, words) = (s.shape(), s.words());
    if sh.len() < 2
        || sh[sh.len() - 1] != g.n
        || s.rows() != g.batch * g.k
        || g.w_strides != [g.k * words_for(g.n), 1, words_for(g.n)]
    {
        return Err(shape_err(
            "matmul",
            format!("spikes {sh:?} do not hold the [batch, k, n] operand of {g:?}"),
        ));
    }
    record(rec, g, pl, x, words, true, bias, out, Fuse::default())
}

/// An RMSNorm in front of a product: x's rows normalised, `x * rsqrt(mean(x²) + eps) *
/// weight` (as [`rms_norm`]), before they meet the weights.
#[derive(Clone, Copy)]
pub struct PreNorm<'a> {
    /// `[k]`, f32.
    pub weight: &'a Tensor,
    pub eps: f32,
}

/// What a product takes into its own dispatch beside the bias: Mamba's conv step in the
/// epilogue (a skinny, unsplit plan, checked by [`linear_conv_step_into`]), an RMSNorm of
/// x's rows inside the product (unsplit skinny plans; its weight takes the bias binding),
/// a residual `[batch * m, n]` added to every output (any plan; it too takes the bias
/// binding).
#[derive(Clone, Copy, Default)]
struct Fuse<'a> {
    conv: Option<&'a ConvStep<'a>>,
    norm: Option<PreNorm<'a>>,
    residual: Option<&'a Tensor>,
}

/// Checks what both operand kinds share and records the product (`bits`: w holds packed
/// spikes' words; `fuse`: what runs in the same dispatch).
#[allow(clippy::too_many_arguments)]
fn record(
    rec: &mut Recorder,
    g: &Gemm,
    pl: Plan,
    x: &Tensor,
    w: &Tensor,
    bits: bool,
    bias: Option<&Tensor>,
    out: &Tensor,
    fuse: Fuse,
) -> Result<()> {
    let conv = fuse.conv;
    expect_float("matmul", "x", x)?;
    if x.dtype() == DType::F16 && w.dtype() == DType::F16 {
        return Err(shape_err(
            "matmul",
            "x and w are both f16: one operand (the activation) must be f32".to_string(),
        ));
    }
    let contiguous = g.out_row_stride == g.n && g.out_offset == 0;
    let out_end = g.out_offset + (g.batch * g.m).saturating_sub(1) * g.out_row_stride + g.n;
    if out.dtype() != DType::F32
        || g.out_row_stride < g.n
        || (contiguous && out.numel() != g.batch * g.m * g.n)
        || out.numel() < out_end
    {
        return Err(shape_err(
            "matmul",
            format!(
                "output must be f32 with batch*m*n = {} elements (rows {} apart from {}), got {:?}",
                g.batch * g.m * g.n,
                g.out_row_stride,
                g.out_offset,
                out
            ),
        ));
    }
    if g.batch == 0 || g.m == 0 || g.n == 0 || g.k == 0 {
        return Err(shape_err("matmul", format!("empty product {g:?}")));
    }
    if g.x_offset + Gemm::max_offset([g.batch, g.m, g.k], g.x_strides) >= x.numel() {
        return Err(shape_err(
            "matmul",
            format!("x {:?} is too small for {g:?}", x.shape()),
        ));
    }
    if let Some(b) = bias {
        expect_dtype("matmul", "bias", b, DType::F32)?;
        let want = if g.bias_on_rows { g.m } else { g.n };
        if b.numel() != want {
            return Err(shape_err(
                "matmul",
                format!("bias has {} elements, expected {want}", b.numel()),
            ));
        }
    }
    let wg = rec.device().wg() as usize;
    let valid = if pl.skinny.is_some() {
        !bits && skinny_plan(g, wg, Some(pl.splits)) == Some(pl)
    } else {
        (pl.tile.1 == 64 || (pl.tile.1 == wide_cols(wg) && !bits))
            && pl == plan_inner(g, wg, Some(pl.tile.0), pl.tile.1, Some(pl.splits), bits)
    };
    if !valid {
        return Err(shape_err(
            "matmul",
            format!("plan {pl:?} is not one of plan_with's for {g:?}"),
        ));
    }
    let (a16, b16) = (x.dtype() == DType::F16, w.dtype() == DType::F16);
    let entry = match (pl.gemv, pl.skinny) {
        (true, _) => "gemv",
        (_, Some(_)) => "skinny",
        _ => "matmul",
    };
    let tiled = entry == "matmul";
    let sk_vec = pl.skinny.is_some() && pl.a_vec;
    if conv.is_some() && (pl.skinny.is_none() || pl.splits != 1 || g.batch != 1 || bits) {
        return Err(shape_err(
            "matmul",
            format!("the conv step runs only in an unsplit skinny plan, not {pl:?}"),
        ));
    }
    if (fuse.norm.is_some() || fuse.residual.is_some()) && bias.is_some() {
        return Err(shape_err(
            "matmul",
            "a fused norm or residual takes the bias binding: no bias beside it".to_string(),
        ));
    }
    if let Some(nm) = fuse.norm {
        // One K slice: the lanes sum each row's squares as they stream all of it.
        if pl.skinny.is_none()
            || pl.splits != 1
            || x.dtype() != DType::F32
            || fuse.residual.is_some()
        {
            return Err(shape_err(
                "matmul",
                format!(
                    "the fused norm runs only in an unsplit skinny plan over f32 rows, not {pl:?}"
                ),
            ));
        }
        expect_dtype("matmul", "norm weight", nm.weight, DType::F32)?;
        if nm.weight.numel() != g.k {
            return Err(shape_err(
                "matmul",
                format!(
                    "the norm weight has {} elements, expected k = {}",
                    nm.weight.numel(),
                    g.k
                ),
            ));
        }
    }
    if let Some(r) = fuse.residual {
        expect_dtype("matmul", "residual", r, DType::F32)?;
        if r.numel() != g.batch * g.m * g.n {
            return Err(shape_err(
                "matmul",
                format!(
                    "the residual has {} elements, expected batch*m*n = {}",
                    r.numel(),
                    g.batch * g.m * g.n
                ),
            ));
        }
    }
    let (ins, outs) = if conv.is_some() { (5, 3) } else { (3, 1) };
    let mut key = PipelineKey::new(Shader::Matmul, entry, ins, outs)
        .define_if("CONV_STEP", conv.is_some())
        .define_if("NORM_X", fuse.norm.is_some())
        .define_if("F16", a16 || b16)
        .define_if("A_F16", a16)
        .define_if("B_F16", b16)
        .define_if("A_ROWS", tiled && pl.a_rows)
        .define_if("A_VEC", (tiled && pl.a_vec) || sk_vec)
        .define_if("B_ROWS", tiled && pl.b_rows)
        .define_if("B_VEC", (tiled && pl.b_vec) || sk_vec)
        .define_if("B_BITS", bits)
        .define_if("OUT_VEC", tiled && pl.out_vec)
        .define_if("RM8", tiled && pl.tile.0 == (wg / 16) * 8)
        .define_if("CN8", tiled && pl.tile.1 == 128)
        .define_if("UNCHECKED", tiled && pl.unchecked);
    if let Some((lanes, quads)) = pl.skinny {
        key = key
            .constant("SKL", lanes as u32)
            .constant("SKQ", quads as u32);
    }
    if let Some(c) = conv {
        key = key.constant("CONV_K", c.k as u32);
    }
    let u = |v: [usize; 3]| v.map(|x| x as u32);
    let has_bias = match (bias.is_some(), g.bias_on_rows, fuse.residual.is_some()) {
        (_, _, true) => 3,
        (false, _, _) => 0,
        (true, false, _) => 1,
        (true, true, _) => 2,
    };
    // The bias binding: the bias, the residual or the norm weight (at most one is set).
    let slot = bias.or(fuse.residual).or(fuse.norm.map(|nm| nm.weight));
    let p = Params {
        m: g.m as u32,
        n: g.n as u32,
        k: g.k as u32,
        batch: g.batch as u32,
        xs: u(g.x_strides),
        ws: u(g.w_strides),
        has_bias,
        x_offset: g.x_offset as u32,
        out_stride: g.out_row_stride as u32,
        out_offset: g.out_offset as u32,
        splits: pl.splits as u32,
        k_chunk: pl.k_chunk as u32,
        eps: fuse.norm.map_or(0.0, |nm| nm.eps),
        _pad: [0; 3],
    };
    let groups = if pl.gemv {
        // GEMV_ROWS = WG / 64 output rows per workgroup.
        let mut gr = grid_rows(g.n.div_ceil(wg / 64));
        gr[2] = (g.batch * g.m) as u32;
        gr
    } else if let Some((lanes, _)) = pl.skinny {
        let mut gr = grid_rows(g.n.div_ceil(wg / lanes));
        gr[2] = (g.batch * pl.splits) as u32;
        gr
    } else {
        let (gx, gy, gz) = (
            g.n.div_ceil(pl.tile.1),
            g.m.div_ceil(pl.tile.0),
            g.batch * pl.splits,
        );
        if gx > 65_535 || gy > 65_535 || gz > 65_535 {
            return Err(shape_err(
                "matmul",
                format!("{g:?} needs more than 65,535 tiles in a dimension"),
            ));
        }
        [gx as u32, gy as u32, gz as u32]
    };
    let bytes_of = |t: &Tensor, batched: bool, rows: usize| {
        (if batched { g.batch } else { 1 } * rows * g.k * t.dtype().size()) as u64
    };
    // The GEMV reads the whole weight again for every activation row (of a shared weight,
    // every row of the batch); the skinny and tiled kernels count each operand once (the
    // tiles' re-reads of an operand are cache traffic at the shapes they serve).
    let w_reads = match (pl.gemv, g.w_strides[0] != 0) {
        (false, _) => 1,
        (true, true) => g.m,
        (true, false) => g.batch * g.m,
    } as u64;
    let moved = bytes_of(x, g.x_strides[0] != 0, g.m)
        + if bits {
            w.bytes()
        } else {
            w_reads * bytes_of(w, g.w_strides[0] != 0, g.n)
        }
        + 4 * (g.batch * g.m * g.n) as u64
        + fuse.residual.map_or(0, |r| r.bytes())
        + fuse.norm.map_or(0, |nm| nm.weight.bytes());
    let shape = format!(
        "b={} m={} n={} k={}{}{}{}",
        g.batch,
        g.m,
        g.n,
        g.k,
        if bias.is_some() { " +bias" } else { "" },
        match (fuse.norm.is_some(), fuse.residual.is_some()) {
            (true, _) => " norm(x)",
            (_, true) => " +residual",
            _ => "",
        },
        match (a16, b16, bits) {
            (_, _, true) if a16 => " x=f16 w=spikes",
            (_, _, true) => " w=spikes",
            (true, _, _) => " x=f16",
            (_, true, _) => " w=f16",
            _ => "",
        }
    );
    let name = match (entry, bits) {
        ("gemv", _) => "gemv",
        ("skinny", _) if fuse.norm.is_some() => "rms_norm+skinny",
        ("skinny", _) => "skinny",
        (_, true) => "spike_linear",
        _ => "matmul",
    };
    if let Some(c) = conv {
        let (bd, d) = (g.m * g.n / 2, g.n / 2);
        return rec.dispatch(
            &key,
            &p,
            &[x, w, slot.unwrap_or(x), c.weight, c.bias],
            &[out, c.state, c.out],
            groups,
            || OpInfo {
                name: if fuse.norm.is_some() {
                    "rms_norm+skinny+conv_step"
                } else {
                    "skinny+conv_step"
                },
                shape: format!("{shape} K={}", c.k),
                // The conv state read and written, its output, its weight and bias once.
                bytes: moved + (4 * (bd * (2 * (c.k - 1) + 1) + d * (c.k + 1))) as u64,
                flops: g.flops() + (2 * bd * c.k) as u64,
            },
        );
    }
    if pl.splits == 1 {
        return rec.dispatch(&key, &p, &[x, w, slot.unwrap_or(x)], &[out], groups, || {
            OpInfo {
                name,
                shape,
                bytes: moved,
                flops: g.flops(),
            }
        });
    }
    // Split-K: the slices into a scratch [splits, batch * m, n], then their sum and the bias.
    let total = g.batch * g.m * g.n;
    let parts = rec.alloc(&[pl.splits * total], DType::F32)?;
    let pk = Params {
        out_stride: g.n as u32,
        out_offset: 0,
        ..p
    };
    let scratch = (pl.splits * total * 4) as u64;
    rec.dispatch(
        &key,
        &pk,
        &[x, w, slot.unwrap_or(x)],
        &[&parts],
        groups,
        || OpInfo {
            name,
            shape: format!("{shape} split-k {}", pl.splits),
            bytes: moved - 4 * total as u64 + scratch,
            flops: g.flops(),
        },
    )?;
    // The reduce adds the bias or the residual (a fused norm acted in the slices).
    let reduce_bias = match (bias, fuse.residual) {
        (_, Some(r)) => Some((r, 3)),
        (Some(b), _) => Some((b, if g.bias_on_rows { 2 } else { 1 })),
        _ => None,
    };
    splitk_reduce(
        rec,
        &parts,
        reduce_bias,
        out,
        [g.batch, g.m, g.n],
        pl.splits,
        [g.out_row_stride, g.out_offset],
    )
}

/// Split-K's second pass: `out[r, c] = sum_s parts[s, r, c] + bias` over `parts [splits,
/// batch * m, n]`, the bias kind as the shader's `has_bias`: 1 indexed by the column, 2 by
/// the row within its batch entry, 3 one per output (a residual); output row r at
/// `out_at[1] + r * out_at[0]`.
pub(crate) fn splitk_reduce(
    rec: &mut Recorder,
    parts: &Tensor,
    bias: Option<(&Tensor, u32)>,
    out: &Tensor,
    [batch, m, n]: [usize; 3],
    splits: usize,
    out_at: [usize; 2],
) -> Result<()> {
    let total = batch * m * n;
    let has_bias = bias.map_or(0, |b| b.1);
    let p = Params {
        m: m as u32,
        n: n as u32,
        batch: batch as u32,
        has_bias,
        out_stride: out_at[0] as u32,
        out_offset: out_at[1] as u32,
        splits: splits as u32,
        ..Params::zeroed()
    };
    let rk = PipelineKey::new(Shader::Matmul, "splitk_reduce", 2, 1);
    let wg = rec.device().wg() as usize;
    rec.dispatch(
        &rk,
        &p,
        &[parts, bias.map_or(parts, |b| b.0)],
        &[out],
        grid_rows(total.div_ceil(wg)),
        || OpInfo {
            name: "splitk_reduce",
            shape: format!("b={batch} m={m} n={n} splits={splits}"),
            bytes: 4 * ((splits + 1) * total) as u64,
            flops: (splits * total) as u64,
        },
    )
}

/// A Linear layer's operands checked (`x [.., in]`, `w [out, in]`, in > 0; `out` even where
/// `paired`, as in_proj's x | z): `(rows, in, out, the output shape [.., out])`.
fn linear_shape(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    paired: bool,
) -> Result<(usize, usize, usize, Vec<usize>)> {
    if w.rank() != 2
        || x.rank() == 0
        || x.dim(-1) != w.dim(1)
        || w.dim(1) == 0
        || (paired && !w.dim(0).is_multiple_of(2))
    {
        return Err(shape_err(
            op,
            format!(
                "x {:?} does not match weight {:?} ({})",
                x.shape(),
                w.shape(),
                if paired { "[2 D, in]" } else { "[out, in]" }
            ),
        ));
    }
    let (k, n) = (w.dim(1), w.dim(0));
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank >= 1") = n;
    Ok((x.numel() / k, k, n, shape))
}

/// A Linear layer: `x [.., in] · w[out, in]ᵀ + bias` → `[.., out]`.
pub fn linear(rec: &mut Recorder, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (rows, k, n, shape) = linear_shape("linear", x, w, false)?;
    let out = rec.alloc(&shape, DType::F32)?;
    gemm_into(
        rec,
        &Gemm::linear(rows, n, k),
        x,
        w,
        bias,
        &out.reshape(&[rows, n])?,
    )?;
    Ok(out)
}

/// A projection followed by Mamba's causal conv1d decode step: `xz = x · wᵀ (+ bias)`
/// (`x [.., in]` of B rows, `w [2 D, in]`) → `[.., 2 D]`, then [`causal_conv1d_step`] over
/// xz's first D columns (`conv`: its weight, bias, state updated in place and output
/// `[B, D]`); `norm`: x's rows RMS-normalised first (Mamba's pre-norm). Returns xz. See
/// [`linear_conv_step_into`].
pub fn linear_conv_step(
    rec: &mut Recorder,
    x: &Tensor,
    norm: Option<PreNorm>,
    w: &Tensor,
    bias: Option<&Tensor>,
    conv: &ConvStep,
) -> Result<Tensor> {
    let (_, _, _, shape) = linear_shape("linear_conv_step", x, w, true)?;
    let out = rec.alloc(&shape, DType::F32)?;
    linear_conv_step_into(rec, x, norm, w, bias, &out, conv)?;
    Ok(out)
}

/// [`linear_conv_step`] into `out` (B x 2 D elements). Where the skinny kernel serves (B ≤
/// [`SKINNY_ROWS`], contiguous operands) the conv step runs in its epilogue, by the
/// invocation that writes the column, and the norm inside the product (where there is no
/// bias: the norm weight takes its binding), in one dispatch; otherwise the norm, the
/// product and the step are separate passes.
pub fn linear_conv_step_into(
    rec: &mut Recorder,
    x: &Tensor,
    norm: Option<PreNorm>,
    w: &Tensor,
    bias: Option<&Tensor>,
    out: &Tensor,
    conv: &ConvStep,
) -> Result<()> {
    expect_float("linear_conv_step", "w", w)?;
    let (rows, k, n, _) = linear_shape("linear_conv_step", x, w, true)?;
    let l = ConvLayout {
        batch: rows,
        len: 1,
        d: n / 2,
        k: conv.k,
        x_stride: n,
    };
    if out.numel() != rows * n {
        return Err(shape_err(
            "linear_conv_step",
            format!("out {:?} must hold [{rows}, {n}]", out.shape()),
        ));
    }
    check_step(&l, out, conv.weight, conv.bias, conv.state, conv.out)?;
    let g = Gemm::linear(rows, n, k);
    let wg = rec.device().wg() as usize;
    let pl = skinny_plan(&g, wg, Some(1));
    let fuse = pl.is_some() && bias.is_none() && x.dtype() == DType::F32;
    let (normed, fused_norm) = split_norm(rec, x, norm, fuse)?;
    let x = normed.as_ref().unwrap_or(x);
    match pl {
        Some(pl) => {
            let fuse = Fuse {
                conv: Some(conv),
                norm: fused_norm,
                residual: None,
            };
            record(rec, &g, pl, x, w, false, bias, out, fuse)
        }
        None => {
            gemm_into(rec, &g, x, w, bias, out)?;
            causal_conv1d_step(rec, &l, out, conv.weight, conv.bias, conv.state, conv.out)
        }
    }
}

/// A Linear layer added to a residual stream: `residual + x · wᵀ (+ bias)` (`x [.., in]`,
/// `w [out, in]`, `residual [.., out]`) → a new `[.., out]`. See [`linear_residual_into`].
pub fn linear_residual(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: &Tensor,
) -> Result<Tensor> {
    let out = rec.alloc(residual.shape(), DType::F32)?;
    linear_residual_into(rec, x, w, bias, residual, &out)?;
    Ok(out)
}

/// [`linear_residual`] into `out` (the residual's shape; not the residual itself). Without
/// a bias the residual is added in the product's epilogue (one dispatch, any plan; split-K
/// adds it in its reduce); with one, by a second pass.
pub fn linear_residual_into(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: &Tensor,
    out: &Tensor,
) -> Result<()> {
    expect_float("linear_residual", "w", w)?;
    let (rows, k, n, shape) = linear_shape("linear_residual", x, w, false)?;
    if residual.shape() != shape.as_slice() || out.numel() != rows * n {
        return Err(shape_err(
            "linear_residual",
            format!(
                "residual {:?} and out {:?} must have the output's shape {shape:?}",
                residual.shape(),
                out.shape()
            ),
        ));
    }
    if out.same_buffer(residual) {
        return Err(shape_err(
            "linear_residual",
            "out must not be the residual (a dispatch cannot read and write one buffer)",
        ));
    }
    let g = Gemm::linear(rows, n, k);
    let out2 = out.reshape(&[rows, n])?;
    if bias.is_some() {
        let tmp = rec.alloc(&[rows, n], DType::F32)?;
        gemm_into(rec, &g, x, w, bias, &tmp)?;
        return binary_into(
            rec,
            Binary::Add,
            &tmp,
            &residual.reshape(&[rows, n])?,
            &out2,
        );
    }
    let pl = plan(&g, rec.device().wg() as usize);
    let fuse = Fuse {
        residual: Some(residual),
        ..Fuse::default()
    };
    record(rec, &g, pl, x, w, false, None, &out2, fuse)
}

/// A 1x1 conv / Linear over the channel axis of `x [R, Cin, N]` with `w [Cout, Cin]`:
/// `[R, Cout, N]`, bias per output channel.
pub fn channel_linear(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    if x.rank() != 3 || w.rank() != 2 || x.dim(1) != w.dim(1) {
        return Err(shape_err(
            "channel_linear",
            format!(
                "x {:?} ([R, Cin, N]) does not match weight {:?} ([Cout, Cin])",
                x.shape(),
                w.shape()
            ),
        ));
    }
    let (r, cin, n, cout) = (x.dim(0), x.dim(1), x.dim(2), w.dim(0));
    let out = rec.alloc(&[r, cout, n], DType::F32)?;
    gemm_into(rec, &Gemm::channels(r, cout, cin, n), w, x, bias, &out)?;
    Ok(out)
}

/// `a [batch, m, k] @ b [batch, k, n]` → `[batch, m, n]`.
pub fn bmm(rec: &mut Recorder, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.rank() != 3 || b.rank() != 3 || a.dim(0) != b.dim(0) || a.dim(2) != b.dim(1) {
        return Err(shape_err(
            "bmm",
            format!("cannot multiply {:?} by {:?}", a.shape(), b.shape()),
        ));
    }
    let g = Gemm::bmm(a.dim(0), a.dim(1), b.dim(2), a.dim(2));
    let out = rec.alloc(&[g.batch, g.m, g.n], DType::F32)?;
    gemm_into(rec, &g, a, b, None, &out)?;
    Ok(out)
}

/// f64 reference of [`gemm_into`].
pub fn reference(g: &Gemm, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f64> {
    let mut out = vec![0.0; g.batch * g.m * g.n];
    for b in 0..g.batch {
        for m in 0..g.m {
            for n in 0..g.n {
                let mut s = bias.map_or(0.0, |bb| bb[if g.bias_on_rows { m } else { n }] as f64);
                for k in 0..g.k {
                    let xi =
                        g.x_offset + b * g.x_strides[0] + m * g.x_strides[1] + k * g.x_strides[2];
                    let wi = b * g.w_strides[0] + n * g.w_strides[1] + k * g.w_strides[2];
                    s += x[xi] as f64 * w[wi] as f64;
                }
                out[(b * g.m + m) * g.n + n] = s;
            }
        }
    }
    out
}

/// A harness case's forced variant: the tile (0: the plan's, 1: the small tile, 2: the large
/// one, 3 and 4: the large and small wide tiles of [`plan_wide`]) and K slices (None: the plan's).
#[derive(Clone, Copy)]
struct Force(u8, Option<usize>);

const AUTO: Force = Force(0, None);

/// A random `[n, k]` weight (rounded to f16 and stored so where `f16`) and its host values.
fn test_weight(
    dev: &crate::Device,
    rng: &mut crate::harness::Rng,
    n: usize,
    k: usize,
    f16: bool,
) -> Result<(Vec<f32>, Tensor)> {
    let mut w = rng.vec(n * k, -1.0, 1.0);
    let t = if f16 {
        w.iter_mut()
            .for_each(|v| *v = half::f16::from_f32(*v).to_f32());
        dev.weight_f16(&w, &[n, k])?
    } else {
        dev.weight_f32(&w, &[n, k])?
    };
    Ok((w, t))
}

/// [`gemm_norm_into`] against the reference of the normalised rows: the skinny kernel with
/// the norm inside it (1 to 32 rows: one dispatch), else the norm and the product.
fn norm_case(m: usize, n: usize, k: usize, f16: bool) -> Case {
    let g = Gemm::linear(m, n, k);
    let params = format!(
        "rms_norm+linear m={m} n={n} k={k} [{}]",
        plan(&g, 256).describe()
    );
    let c = Case::new("matmul", params, 1e-11, move |dev, rng| {
        let x = rng.vec(m * k, -1.0, 1.0);
        let (w, wt) = test_weight(dev, rng, n, k, f16)?;
        let gw = rng.vec(k, 0.5, 1.5);
        let (xt, gt) = (dev.tensor_f32(&x, &[m, k])?, dev.weight_f32(&gw, &[k])?);
        let out = output(dev, &[m, n], DType::F32)?;
        let norm = PreNorm {
            weight: &gt,
            eps: 1e-5,
        };
        let mut rec = dev.recorder("test");
        gemm_norm_into(&mut rec, &g, &xt, norm, &wt, &out)?;
        let got_dispatches = rec.dispatch_count();
        rec.submit()?;
        let pl = plan(&g, dev.wg() as usize);
        let want_dispatches = if pl.skinny.is_some() {
            1
        } else {
            2 + usize::from(pl.splits > 1)
        };
        // (The fused norm runs unsplit even where the plan would split K.)
        let xn = reference_norm_rows(&x, k, &gw, 1e-5);
        let c = check_f32(dev, &out, &reference(&g, &xn, &w, None))?;
        Ok(c.with_dispatches(got_dispatches, want_dispatches))
    });
    if f16 {
        c.dtype("f16w").feature(Feature::F16)
    } else {
        c
    }
}

/// [`linear_residual_into`] against the reference plus the residual: the plan's kernel with
/// the residual in its epilogue (one dispatch, two with split-K), or with a bias, apart.
fn residual_case(m: usize, n: usize, k: usize, bias: bool, f16: bool) -> Case {
    let g = Gemm::linear(m, n, k);
    let params = format!(
        "linear+residual m={m} n={n} k={k}{} [{}]",
        if bias { " +bias" } else { "" },
        plan(&g, 256).describe()
    );
    let c = Case::new("matmul", params, 1e-11, move |dev, rng| {
        let x = rng.vec(m * k, -1.0, 1.0);
        let (w, wt) = test_weight(dev, rng, n, k, f16)?;
        let bv = rng.vec(n, -1.0, 1.0);
        let res = rng.vec(m * n, -2.0, 2.0);
        let (xt, bt) = (dev.tensor_f32(&x, &[m, k])?, dev.weight_f32(&bv, &[n])?);
        let rt = dev.tensor_f32(&res, &[m, n])?;
        let out = output(dev, &[m, n], DType::F32)?;
        let mut rec = dev.recorder("test");
        linear_residual_into(&mut rec, &xt, &wt, bias.then_some(&bt), &rt, &out)?;
        let got_dispatches = rec.dispatch_count();
        rec.submit()?;
        let pl = plan(&g, dev.wg() as usize);
        let want_dispatches = if bias { 2 } else { 1 } + usize::from(pl.splits > 1);
        let mut want = reference(&g, &x, &w, bias.then_some(&bv));
        want.iter_mut().zip(&res).for_each(|(v, &r)| *v += r as f64);
        let c = check_f32(dev, &out, &want)?;
        Ok(c.with_dispatches(got_dispatches, want_dispatches))
    });
    if f16 {
        c.dtype("f16w").feature(Feature::F16)
    } else {
        c
    }
}

/// Which operand is stored as f16 in a case (0: none, 1: w, 2: x).
fn case(name: &str, g: Gemm, bias: bool, f16: u8, force: Force) -> Case {
    let params = format!(
        "{name} b={} m={} n={} k={}{}{}",
        g.batch,
        g.m,
        g.n,
        g.k,
        if bias { " +bias" } else { "" },
        match force {
            Force(0, None) => String::new(),
            Force(t, s) => format!(
                " [{}{}]",
                [
                    "plan's tile",
                    "small tile",
                    "large tile",
                    "large wide tile",
                    "small wide tile"
                ][t as usize],
                s.map_or(String::new(), |s| format!(", {s} k-slices"))
            ),
        }
    );
    let c = Case::new("matmul", params, 1e-11, move |dev, rng| {
        let xlen = g.x_offset + Gemm::max_offset([g.batch, g.m, g.k], g.x_strides) + 1;
        let wlen = Gemm::max_offset([g.batch, g.n, g.k], g.w_strides) + 1;
        let round = |v: &mut Vec<f32>| {
            v.iter_mut()
                .for_each(|v| *v = half::f16::from_f32(*v).to_f32())
        };
        let mut x = rng.vec(xlen, -1.0, 1.0);
        let mut w = rng.vec(wlen, -1.0, 1.0);
        let blen = if g.bias_on_rows { g.m } else { g.n };
        let bv = rng.vec(blen, -1.0, 1.0);
        let xt = if f16 == 2 {
            round(&mut x);
            dev.weight_f16(&x, &[xlen])?
        } else {
            dev.tensor_f32(&x, &[xlen])?
        };
        let wt = if f16 == 1 {
            round(&mut w);
            dev.weight_f16(&w, &[wlen])?
        } else {
            dev.weight_f32(&w, &[wlen])?
        };
        let bt = dev.weight_f32(&bv, &[blen])?;
        let out = output(dev, &[g.batch, g.m, g.n], DType::F32)?;
        let wg = dev.wg() as usize;
        let rows = match force.0 {
            0 => None,
            1 | 4 => Some(wg / 4),
            _ => Some(wg / 2),
        };
        let pl = if force.0 >= 3 {
            plan_wide(&g, wg, rows, force.1)
        } else {
            plan_with(&g, wg, rows, force.1)
        };
        let mut rec = dev.recorder("test");
        gemm_planned(&mut rec, &g, pl, &xt, &wt, bias.then_some(&bt), &out)?;
        rec.submit()?;
        check_f32(dev, &out, &reference(&g, &x, &w, bias.then_some(&bv)))
    });
    match f16 {
        0 => c,
        1 => c.dtype("f16w").feature(Feature::F16),
        _ => c.dtype("f16x").feature(Feature::F16),
    }
}

/// The dispatches [`linear_conv_step_into`] takes: one where the skinny kernel serves (the
/// norm inside it unless a bias holds the binding), else the norm, the product and
/// the step apart.
fn conv_step_dispatches(b: usize, bias: bool, norm: bool) -> usize {
    match (b <= SKINNY_ROWS, norm) {
        (true, false) => 1,
        (true, true) => 1 + usize::from(bias),
        (false, false) => 2,
        (false, true) => 3,
    }
}

/// x's rows RMS-normalised in f64 (`x * rsqrt(mean(x²) + eps) * g`), rounded to f32.
pub(crate) fn reference_norm_rows(x: &[f32], k: usize, g: &[f32], eps: f32) -> Vec<f32> {
    x.chunks(k)
        .flat_map(|row| {
            let q = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / k as f64;
            let r = 1.0 / (q + eps as f64).sqrt();
            row.iter()
                .zip(g)
                .map(move |(&v, &gw)| (v as f64 * r * gw as f64) as f32)
        })
        .collect()
}

/// [`linear_conv_step_into`] for `b` sequences, D = `d`, `kin` inputs and conv width `kc`
/// (`norm`: with the pre-norm): xz, the conv output and the updated state against the
/// product's and the conv step's references (the step fed the reference xz rounded to f32).
fn conv_step_case(
    b: usize,
    d: usize,
    kin: usize,
    kc: usize,
    bias: bool,
    f16: bool,
    norm: bool,
) -> Case {
    let dispatches = conv_step_dispatches(b, bias, norm);
    let params = format!(
        "{}linear+conv_step m={b} n={} k={kin} K={kc}{} [{dispatches} dispatch{}]",
        if norm { "rms_norm+" } else { "" },
        2 * d,
        if bias { " +bias" } else { "" },
        if dispatches == 1 { "" } else { "es" }
    );
    let c = Case::new("matmul", params, 1e-11, move |dev, rng| {
        let n = 2 * d;
        let x = rng.vec(b * kin, -1.0, 1.0);
        let gw = rng.vec(kin, 0.5, 1.5);
        let eps = 1e-5f32;
        let gt = dev.weight_f32(&gw, &[kin])?;
        let pre = norm.then_some(PreNorm { weight: &gt, eps });
        let (w, wt) = test_weight(dev, rng, n, kin, f16)?;
        let bv = rng.vec(n, -1.0, 1.0);
        let cw = rng.vec(d * kc, -1.0, 1.0);
        let cb = rng.vec(d, -0.5, 0.5);
        let s0 = rng.vec(b * d * (kc - 1), -1.0, 1.0);
        let (xt, bt) = (dev.tensor_f32(&x, &[b, kin])?, dev.weight_f32(&bv, &[n])?);
        let (cwt, cbt) = (
            dev.weight_f32(&cw, &[d, 1, kc])?,
            dev.weight_f32(&cb, &[d])?,
        );
        // The state with poisoned guard words after it (a write past its end shows).
        let st = output(dev, &[b, d, kc - 1], DType::F32)?;
        dev.write(&st, bytemuck::cast_slice(&s0))?;
        let (xz, u) = (
            output(dev, &[b, n], DType::F32)?,
            output(dev, &[b, d], DType::F32)?,
        );
        let conv = ConvStep {
            weight: &cwt,
            bias: &cbt,
            state: &st,
            out: &u,
            k: kc,
        };
        let mut rec = dev.recorder("test");
        linear_conv_step_into(&mut rec, &xt, pre, &wt, bias.then_some(&bt), &xz, &conv)?;
        let got_dispatches = rec.dispatch_count();
        rec.submit()?;
        let xn = if norm {
            reference_norm_rows(&x, kin, &gw, eps)
        } else {
            x.clone()
        };
        let want = reference(&Gemm::linear(b, n, kin), &xn, &w, bias.then_some(&bv));
        let want32: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        let l = ConvLayout {
            batch: b,
            len: 1,
            d,
            k: kc,
            x_stride: n,
        };
        let (wu, ws) = causal_conv1d::reference(&l, &want32, &cw, &cb, Some(&s0));
        let c = check_f32(dev, &xz, &want)?.merge(check_f32(dev, &u, &wu)?);
        // The state: the previous inputs shifted (exact) and this step's xz (to f32 rounding).
        let sc = check_f32(dev, &st, &ws)?;
        let got = dev.read_f32(&st)?;
        let mism = got
            .iter()
            .zip(&ws)
            .filter(|(g, r)| !(**g as f64 - **r).abs().le(&(1e-5 * (1.0 + r.abs()))))
            .count();
        let c = crate::harness::Check {
            mismatches: c.mismatches + mism,
            guard_hits: c.guard_hits + sc.guard_hits,
            ..c
        };
        Ok(c.with_dispatches(got_dispatches, dispatches))
    });
    if f16 {
        c.dtype("f16w").feature(Feature::F16)
    } else {
        c
    }
}

/// Harness cases: GEMV and tiled shapes that straddle the tiles (odd sizes, 1, multiples of
/// the tile for the unchecked variant), batched and strided, in every layout the fetches
/// distinguish, each tiled one with both tiles and with K split.
pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let forces = [
        AUTO,
        Force(1, Some(1)),
        Force(2, Some(1)),
        Force(1, Some(3)),
        Force(2, Some(2)),
        Force(3, Some(1)),
        Force(4, Some(2)),
    ];
    let lin = [
        (1, 1, 1),
        (1, 33, 65),
        (1, 50, 300),
        (3, 5, 9),
        (7, 33, 65),
        (64, 64, 16),
        (128, 64, 32),
        (65, 130, 17),
        (100, 3, 257),
        (129, 67, 200),
        (5, 9, 600),
        (256, 128, 48),
    ];
    for &(m, n, k) in &lin {
        for f16 in [0, 1] {
            let g = Gemm::linear(m, n, k);
            if m <= 4 {
                // The skinny kernel (the plan's), then the GEMV (a forced tile keeps the
                // GEMV for m <= 4).
                v.push(case("linear", g, true, f16, AUTO));
                v.push(case("linear", g, true, f16, Force(1, Some(1))));
                continue;
            }
            for &f in &forces {
                v.push(case("linear", g, true, f16, f));
            }
        }
    }
    // The skinny kernel over its row counts (both lane widths, 1 to 4 passes of 8 rows, rows
    // past each quad), k off its 4-wide loads and under one lane's run, n off its weight-row
    // groups; unsplit and in 3 K slices (the plan splits only long K on small grids: the
    // 2-row, 4096-deep case).
    for &(m, n, k) in &[
        (2, 1, 1),
        (5, 7, 3),
        (8, 33, 130),
        (9, 40, 64),
        (13, 9, 257),
        (16, 70, 96),
        (17, 3, 45),
        (24, 31, 200),
        (31, 65, 129),
        (32, 32, 512),
        (2, 5, 4096),
    ] {
        for f16 in [0, 1] {
            let g = Gemm::linear(m, n, k);
            for f in [AUTO, Force(0, Some(3))] {
                v.push(case("skinny", g, true, f16, f));
            }
        }
    }
    // A skinny product over a batch of weights (strided outputs: ops::vocab's head cases),
    // and one whose x rows start at an unaligned offset (scalar loads).
    v.push(case(
        "skinny-batched",
        Gemm {
            batch: 3,
            x_strides: [6 * 20, 20, 1],
            w_strides: [17 * 20, 20, 1],
            ..Gemm::linear(6, 17, 20)
        },
        false,
        1,
        AUTO,
    ));
    v.push(case(
        "skinny-offset",
        Gemm {
            x_offset: 1,
            ..Gemm::linear(11, 9, 36)
        },
        true,
        0,
        AUTO,
    ));
    // The decode conv step in the skinny epilogue (1, odd, 20 and 32 sequences: both lane
    // widths, 1 to 4 passes of 8 rows; widths 2, 3 and 4) and after a tiled product (40 sequences).
    for (b, d, kin, kc) in [
        (1, 1, 1, 4),
        (1, 64, 48, 4),
        (3, 37, 20, 4),
        (8, 40, 64, 2),
        (13, 9, 33, 4),
        (20, 11, 40, 3),
        (32, 16, 130, 4),
        (40, 8, 16, 4),
    ] {
        for f16 in [false, true] {
            v.push(conv_step_case(b, d, kin, kc, b % 2 == 1, f16, false));
        }
        // Mamba's pre-norm inside the product (both lane widths; with a bias, apart).
        v.push(conv_step_case(b, d, kin, kc, b == 3, b % 2 == 0, true));
    }
    // The pre-norm at mamba-130m's in_proj (k = 768: 128-bit loads, 32 lanes) for 1 and 32
    // sequences, and 9 sequences at k = 256.
    v.push(conv_step_case(1, 1536, 768, 4, false, false, true));
    v.push(conv_step_case(32, 1536, 768, 4, false, true, true));
    v.push(conv_step_case(9, 100, 256, 4, false, false, true));
    // A residual added in the epilogue: skinny (1, odd, 32 rows; split-K at the long, narrow
    // shape), tiled (40 rows; 128 rows unchecked with vec4 stores; split-K on a small grid),
    // and apart with a bias.
    for (m, n, k, bias) in [
        (1, 7, 3, false),
        (5, 33, 130, false),
        (32, 65, 129, false),
        (2, 5, 4096, false),
        (40, 70, 96, false),
        (128, 128, 64, false),
        (64, 64, 2048, false),
        (5, 9, 20, true),
    ] {
        for f16 in [false, true] {
            v.push(residual_case(m, n, k, bias, f16));
        }
    }
    // A normalised product without the conv step (an LM head after the final norm): skinny
    // at 1, odd and 32 rows (k = 768: 128-bit loads; k = 45 and 3: scalar, 8 lanes; k =
    // 4096, which the plan would split: unsplit), and the norm apart before a tiled product
    // (40 rows).
    for (m, n, k) in [
        (1, 50, 768),
        (7, 33, 45),
        (32, 20, 3),
        (2, 5, 4096),
        (40, 70, 96),
    ] {
        for f16 in [false, true] {
            v.push(norm_case(m, n, k, f16));
        }
    }
    v.push(case("linear", Gemm::linear(5, 7, 3), false, 0, AUTO));
    v.push(case("bmm", Gemm::bmm(4, 3, 5, 9), false, 0, AUTO));
    for g in [
        Gemm::bmm(3, 70, 66, 33),
        Gemm::bmm(2, 64, 64, 32),
        Gemm::bmm(2, 9, 12, 520),
    ] {
        for &f in &forces {
            v.push(case("bmm", g, false, 0, f));
        }
    }
    v.push(case("bmm", Gemm::bmm(5, 1, 17, 40), false, 0, AUTO));
    // Shared weight across a batch of 1-row products (batched GEMV), x transposed ([k, m]).
    v.push(case(
        "gemv-batched",
        Gemm {
            batch: 6,
            m: 1,
            n: 37,
            k: 129,
            x_strides: [129, 0, 1],
            w_strides: [0, 129, 1],
            bias_on_rows: false,
            x_offset: 0,
            out_row_stride: 37,
            out_offset: 0,
        },
        true,
        1,
        AUTO,
    ));
    // x stored [k, m] (rows contiguous): scalar (m = 70) and 128-bit (m = 72) fetches.
    for m in [70, 72] {
        for &f in &forces {
            v.push(case(
                "x-transposed",
                Gemm {
                    batch: 1,
                    m,
                    n: 9,
                    k: 21,
                    x_strides: [0, 1, m],
                    w_strides: [0, 21, 1],
                    bias_on_rows: false,
                    x_offset: 0,
                    out_row_stride: 9,
                    out_offset: 0,
                },
                true,
                0,
                f,
            ));
        }
    }
    // x from an unaligned offset: scalar fetches of a k-contiguous operand.
    let shifted = Gemm {
        x_offset: 3,
        ..Gemm::linear(40, 36, 24)
    };
    for &f in &forces {
        v.push(case("x-offset", shifted, true, 0, f));
    }
    // 1x1 convs over channels, bias per output channel (rows), including the GEMV path,
    // with f32 and f16 weights (the x operand here).
    for (r, cout, cin, n) in [
        (8, 32, 32, 16),
        (3, 17, 5, 33),
        (2, 3, 40, 7),
        (1, 1, 1, 1),
        (2, 128, 64, 64),
    ] {
        for f16 in [0, 2] {
            let g = Gemm::channels(r, cout, cin, n);
            let fs: &[Force] = if cout <= 4 { &[AUTO] } else { &forces };
            for &f in fs {
                v.push(case("channels", g, true, f16, f));
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn matmul_matches_reference_over_shape_sweep() {
        crate::harness::assert_cases(super::cases());
    }

    /// The wide plans the harness forces are the 128-column tiles at 256 invocations (the
    /// harness's wide cases run them, not the 64-column kernel), and 64 at 128.
    #[test]
    fn wide_plans_take_128_columns_at_256_invocations() {
        use super::{plan_wide, Gemm};
        let g = Gemm::linear(4096, 4096, 4096);
        let pl = plan_wide(&g, 256, None, None);
        assert_eq!((pl.tile, pl.unchecked, pl.splits), ((128, 128), true, 1));
        assert_eq!(pl.describe(), "128x128 a=k4 b=k4 out4 unchecked");
        assert_eq!(plan_wide(&g, 256, Some(64), None).tile, (64, 128));
        assert_eq!(plan_wide(&g, 128, None, None).tile, (64, 64));
        // Off the tile: checked; one row stays the GEMV.
        assert!(!plan_wide(&Gemm::linear(65, 130, 17), 256, None, Some(1)).unchecked);
        assert!(plan_wide(&Gemm::linear(1, 64, 64), 256, None, None).gemv);
    }
}
