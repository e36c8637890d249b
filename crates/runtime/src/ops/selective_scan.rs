//! Mamba's selective scan (`shaders/selective_scan.wgsl`): the prompt scan (parallel over
//! time within chunks, carried between them) and the one-token state update for decoding.
//! The state accumulates in f32. [`ScanVariant`] names the prompt scan's kernels, for
//! benchmarks to compare; [`selective_scan_into`] picks one by N.

use bytemuck::{Pod, Zeroable};

use super::{expect_dtype, grid_1d};
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, output, Case, Rng};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::Recorder;
use crate::tensor::{DType, Tensor};

/// Where the scan's inputs lie: each is `[batch, len, row]` with its own row length, the
/// channel (or state) index added to a column offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanLayout {
    pub batch: usize,
    pub len: usize,
    /// Channels (d_inner).
    pub d: usize,
    /// States (d_state), at most 64.
    pub n: usize,
    /// Row length of u.
    pub u_stride: usize,
    /// Row length of dt (the dt_proj output, before its bias).
    pub dt_stride: usize,
    /// Row length of the tensor holding B and C (x_proj's output), and their offsets.
    pub bc_stride: usize,
    pub b_offset: usize,
    pub c_offset: usize,
    /// Row length of the tensor holding z (in_proj's output) and z's offset.
    pub z_stride: usize,
    pub z_offset: usize,
}

impl ScanLayout {
    /// Contiguous u, dt, z `[B, L, D]` and BC `[B, L, 2N]` (B then C).
    pub fn packed(batch: usize, len: usize, d: usize, n: usize) -> Self {
        Self {
            batch,
            len,
            d,
            n,
            u_stride: d,
            dt_stride: d,
            bc_stride: 2 * n,
            b_offset: 0,
            c_offset: n,
            z_stride: d,
            z_offset: 0,
        }
    }
    fn need(&self, stride: usize, width: usize) -> usize {
        (self.batch * self.len - 1) * stride + width
    }
}

/// The per-channel constants, packed in one `[D, N + 2]` f32 tensor (one storage binding:
/// default WebGPU limits allow 8 per shader stage, and the scan needs the rest): row `d` is
/// `A[d, 0..N]` (`A = -exp(A_log)`), dt_proj's bias, `D`. Built by [`pack_scan_weights`].
pub struct ScanWeights<'a> {
    pub packed: &'a Tensor,
}

/// The host data of [`ScanWeights`] from `A [D, N]`, `dt_bias [D]` and `D [D]`.
pub fn pack_scan_weights(a: &[f32], dt_bias: &[f32], d_skip: &[f32]) -> Result<Vec<f32>> {
    let d = dt_bias.len();
    if d == 0 || d_skip.len() != d || !a.len().is_multiple_of(d) {
        return Err(shape_err(
            "selective_scan",
            format!(
                "A ({}) must be [D, N] with dt_bias ({d}) and D ({}) of length D",
                a.len(),
                d_skip.len()
            ),
        ));
    }
    let n = a.len() / d;
    let mut out = Vec::with_capacity(d * (n + 2));
    for c in 0..d {
        out.extend_from_slice(&a[c * n..(c + 1) * n]);
        out.push(dt_bias[c]);
        out.push(d_skip[c]);
    }
    Ok(out)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    batch: u32,
    len: u32,
    d: u32,
    n: u32,
    u_stride: u32,
    dt_stride: u32,
    bc_stride: u32,
    b_offset: u32,
    c_offset: u32,
    z_stride: u32,
    z_offset: u32,
    has_h0: u32,
    dt_rank: u32,
    dt_offset: u32,
    _pad: [u32; 2],
}

fn params(l: &ScanLayout, h0: bool) -> Params {
    let u = |v: usize| v as u32;
    Params {
        batch: u(l.batch),
        len: u(l.len),
        d: u(l.d),
        n: u(l.n),
        u_stride: u(l.u_stride),
        dt_stride: u(l.dt_stride),
        bc_stride: u(l.bc_stride),
        b_offset: u(l.b_offset),
        c_offset: u(l.c_offset),
        z_stride: u(l.z_stride),
        z_offset: u(l.z_offset),
        has_h0: h0 as u32,
        dt_rank: 0,
        dt_offset: 0,
        _pad: [0; 2],
    }
}

fn padded_states(n: usize) -> Result<u32> {
    if n == 0 || n > 64 {
        return Err(shape_err(
            "selective_scan",
            format!("d_state = {n} must be in 1..=64"),
        ));
    }
    Ok(n.next_power_of_two().max(4) as u32)
}

/// The inputs' dtypes and sizes; `dt` is `None` where dt_proj runs inside the kernel.
fn check(
    l: &ScanLayout,
    u: &Tensor,
    dt: Option<&Tensor>,
    bc: &Tensor,
    z: &Tensor,
    w: &ScanWeights,
) -> Result<()> {
    for (name, t) in [("u", u), ("bc", bc), ("z", z), ("A, dt_bias, D", w.packed)]
        .into_iter()
        .chain(dt.map(|t| ("dt", t)))
    {
        expect_dtype("selective_scan", name, t, DType::F32)?;
    }
    let short = |name: &str, t: &Tensor, need: usize| -> Result<()> {
        if t.numel() < need {
            return Err(shape_err(
                "selective_scan",
                format!("{name} {:?} is too small for {l:?}", t.shape()),
            ));
        }
        Ok(())
    };
    if l.batch == 0 || l.len == 0 || l.d == 0 {
        return Err(shape_err("selective_scan", format!("empty scan {l:?}")));
    }
    short("u", u, l.need(l.u_stride, l.d))?;
    if let Some(dt) = dt {
        short("dt", dt, l.need(l.dt_stride, l.d))?;
    }
    short(
        "bc",
        bc,
        l.need(l.bc_stride, l.b_offset.max(l.c_offset) + l.n),
    )?;
    short("z", z, l.need(l.z_stride, l.z_offset + l.d))?;
    if w.packed.numel() != l.d * (l.n + 2) {
        return Err(shape_err(
            "selective_scan",
            format!(
                "the packed A, dt_bias, D must be [{}, {} + 2], got {:?}",
                l.d,
                l.n,
                w.packed.shape()
            ),
        ));
    }
    Ok(())
}

/// The most states `selective_scan`'s register path holds: 4 groups (`SG`) of a vec4.
const SCAN_STATES: usize = 16;
/// Channels per workgroup of that path (`SC`).
const SCAN_CHANNELS: usize = 16;

/// Which kernel runs the prompt scan. Every one gives the same results (the same sums in the
/// same order, apart from the wide kernel's parallel scan); they differ in how threads and
/// chunks are laid out, so a benchmark can pick one per GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanVariant {
    /// `selective_scan` (N <= 16): a thread per (channel, 4 states), 16 channels a
    /// workgroup, `chunk` tokens (16 or 32) staged per chunk.
    Register { chunk: u32 },
    /// `selective_scan_channel` (N <= 16): a thread per channel holding all 16 states, 64
    /// channels a workgroup, B and C of `chunk` tokens (16 or 32) staged per chunk.
    Channel { chunk: u32 },
    /// `selective_scan_wide` (any N): a workgroup per (sequence, channel), a parallel scan
    /// over time.
    Wide,
}

impl ScanVariant {
    /// What [`selective_scan_into`] runs for `n` states: 16-token register chunks for
    /// N <= 16, the wide kernel above.
    pub fn auto(n: usize) -> Self {
        if n <= SCAN_STATES {
            ScanVariant::Register { chunk: 16 }
        } else {
            ScanVariant::Wide
        }
    }

    /// The pipeline and the workgroup count for layout `l` (`ns`: the padded state count).
    fn plan(self, l: &ScanLayout, ns: u32) -> Result<(PipelineKey, usize)> {
        let chunk_ok = |chunk: u32| {
            if l.n > SCAN_STATES || !matches!(chunk, 16 | 32) {
                return Err(shape_err(
                    "selective_scan",
                    format!(
                        "{self:?} takes N <= {SCAN_STATES} and chunks of 16 or 32 tokens, got N = {}",
                        l.n
                    ),
                ));
            }
            Ok(())
        };
        let key = |entry| PipelineKey::new(Shader::SelectiveScan, entry, 6, 2);
        // ST = 16 is the shader's default: the default plan keeps its pipeline key.
        let with_chunk = |k: PipelineKey, chunk: u32| {
            if chunk == 16 {
                k
            } else {
                k.constant("ST", chunk)
            }
        };
        Ok(match self {
            ScanVariant::Register { chunk } => {
                chunk_ok(chunk)?;
                (
                    with_chunk(key("selective_scan"), chunk),
                    l.batch * l.d.div_ceil(SCAN_CHANNELS),
                )
            }
            ScanVariant::Channel { chunk } => {
                chunk_ok(chunk)?;
                (
                    with_chunk(key("selective_scan_channel"), chunk),
                    l.batch * l.d.div_ceil(CHANNEL_SCAN_CHANNELS),
                )
            }
            ScanVariant::Wide => (key("selective_scan_wide").constant("NS", ns), l.batch * l.d),
        })
    }
}

/// Channels per workgroup of `selective_scan_channel` (its workgroup size).
const CHANNEL_SCAN_CHANNELS: usize = 64;

/// The prompt scan: writes gated `y [B, L, D]` and the final state `[B, D, N]`, starting
/// from `h0 [B, D, N]` (or zeros), with the kernel [`ScanVariant::auto`] picks.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan_into(
    rec: &mut Recorder,
    l: &ScanLayout,
    u: &Tensor,
    dt: &Tensor,
    bc: &Tensor,
    z: &Tensor,
    w: &ScanWeights,
    h0: Option<&Tensor>,
    y: &Tensor,
    h_out: &Tensor,
) -> Result<()> {
    let v = ScanVariant::auto(l.n);
    selective_scan_with(rec, v, l, u, dt, bc, z, w, h0, y, h_out)
}

/// [`selective_scan_into`] with the kernel chosen by the caller (benchmarks, tests).
#[allow(clippy::too_many_arguments)]
pub fn selective_scan_with(
    rec: &mut Recorder,
    variant: ScanVariant,
    l: &ScanLayout,
    u: &Tensor,
    dt: &Tensor,
    bc: &Tensor,
    z: &Tensor,
    w: &ScanWeights,
    h0: Option<&Tensor>,
    y: &Tensor,
    h_out: &Tensor,
) -> Result<()> {
    check(l, u, Some(dt), bc, z, w)?;
    let ns = padded_states(l.n)?;
    if y.numel() != l.batch * l.len * l.d || h_out.numel() != l.batch * l.d * l.n {
        return Err(shape_err(
            "selective_scan",
            "y must be [B, L, D] and the state [B, D, N]",
        ));
    }
    if let Some(h) = h0 {
        if h.numel() != l.batch * l.d * l.n {
            return Err(shape_err(
                "selective_scan",
                "the initial state must be [B, D, N]",
            ));
        }
    }
    let (key, groups) = variant.plan(l, ns)?;
    let p = params(l, h0.is_some());
    let tokens = (l.batch * l.len) as u64;
    rec.dispatch(
        &key,
        &p,
        &[u, dt, bc, z, w.packed, h0.unwrap_or(w.packed)],
        &[y, h_out],
        grid_1d(groups as u32),
        || OpInfo {
            name: "selective_scan",
            shape: format!("B={} L={} D={} N={}", l.batch, l.len, l.d, l.n),
            // u, dt, z, y per channel and token; B, C per token; the final state written
            // (and the initial one read); the packed A, D and dt bias once.
            bytes: 4
                * (tokens * (4 * l.d as u64 + 2 * l.n as u64)
                    + (l.batch * l.d * l.n) as u64 * (1 + h0.is_some() as u64)
                    + (l.d * (l.n + 2)) as u64),
            flops: tokens * (l.d * l.n) as u64 * 7,
        },
    )
}

/// dt_proj as the decode step applies it: `weight [D, R]` (f32, without its bias, which the
/// packed constants hold) times the R columns of x_proj's output from `offset` (B and C
/// follow them in the same rows).
#[derive(Clone, Copy)]
pub struct DtProj<'a> {
    pub weight: &'a Tensor,
    pub rank: usize,
    pub offset: usize,
}

/// One decoding step with dt_proj fused in: `dt = x_dbl[:, offset..offset + R] · weightᵀ`,
/// then `state [B, D, N]` updated in place and gated `y [B, D]` written. `bc` is x_proj's
/// output (dt, B and C columns; `l.dt_stride` is unused).
#[allow(clippy::too_many_arguments)]
pub fn selective_state_update(
    rec: &mut Recorder,
    l: &ScanLayout,
    u: &Tensor,
    dt: &DtProj,
    bc: &Tensor,
    z: &Tensor,
    w: &ScanWeights,
    state: &Tensor,
    y: &Tensor,
) -> Result<()> {
    const OP: &str = "selective_state_update";
    if l.len != 1 {
        return Err(shape_err(
            OP,
            format!("one token per sequence, got len {}", l.len),
        ));
    }
    check(l, u, None, bc, z, w)?;
    expect_dtype(OP, "dt_proj weight", dt.weight, DType::F32)?;
    let ns = padded_states(l.n)?;
    if state.numel() != l.batch * l.d * l.n || y.numel() != l.batch * l.d {
        return Err(shape_err(OP, "the state must be [B, D, N] and y [B, D]"));
    }
    if dt.rank == 0 || dt.weight.numel() != l.d * dt.rank {
        return Err(shape_err(
            OP,
            format!(
                "dt_proj weight {:?} must be [D = {}, R = {}] with R >= 1",
                dt.weight.shape(),
                l.d,
                dt.rank
            ),
        ));
    }
    if dt.offset + dt.rank > l.bc_stride || bc.numel() < l.need(l.bc_stride, dt.offset + dt.rank) {
        return Err(shape_err(
            OP,
            format!(
                "dt columns {}..{} lie outside x_dbl's rows of {}",
                dt.offset,
                dt.offset + dt.rank,
                l.bc_stride
            ),
        ));
    }
    let per = (rec.device().wg() / ns) as usize;
    let key = PipelineKey::new(Shader::SelectiveScan, OP, 5, 2).constant("NS", ns);
    let p = Params {
        dt_rank: dt.rank as u32,
        dt_offset: dt.offset as u32,
        ..params(l, true)
    };
    let (bsz, d, n, r) = (l.batch as u64, l.d as u64, l.n as u64, dt.rank as u64);
    rec.dispatch(
        &key,
        &p,
        &[u, dt.weight, bc, z, w.packed],
        &[y, state],
        grid_1d((l.batch * l.d).div_ceil(per) as u32),
        || OpInfo {
            name: OP,
            shape: format!("B={} D={} N={} R={}", l.batch, l.d, l.n, dt.rank),
            // The state read and written, u, z, y, x_dbl's row; dt_proj's weight and the
            // packed A, D and dt bias once.
            bytes: 4 * (bsz * (2 * d * n + 3 * d + r + 2 * n) + d * r + d * (n + 2)),
            flops: bsz * d * (n * 7 + 2 * r),
        },
    )
}

/// Host data of one scan problem (contiguous layout), for references and tests.
pub struct ScanData {
    pub u: Vec<f32>,
    pub dt: Vec<f32>,
    pub bc: Vec<f32>,
    pub z: Vec<f32>,
    pub a: Vec<f32>,
    pub dt_bias: Vec<f32>,
    pub d_skip: Vec<f32>,
    pub h0: Vec<f32>,
}

impl ScanData {
    /// Random inputs in Mamba's ranges (A = -(1..N), dt around softplus⁻¹ of 0.001..0.1).
    pub fn random(rng: &mut Rng, l: &ScanLayout) -> Self {
        let (bl, d, n) = (l.batch * l.len, l.d, l.n);
        Self {
            u: rng.vec(bl * d, -2.0, 2.0),
            dt: rng.vec(bl * d, -1.0, 1.0),
            bc: rng.vec(bl * 2 * n, -1.5, 1.5),
            z: rng.vec(bl * d, -3.0, 3.0),
            a: (0..d * n)
                .map(|i| -((i % n) as f32 + 1.0) * rng.uniform(0.8, 1.2))
                .collect(),
            dt_bias: rng.vec(d, -4.0, -2.0),
            d_skip: rng.vec(d, 0.5, 1.5),
            h0: rng.vec(l.batch * d * n, -1.0, 1.0),
        }
    }

    /// A, dt_bias and D packed as [`ScanWeights`] holds them.
    pub fn packed_weights(&self) -> Result<Vec<f32>> {
        pack_scan_weights(&self.a, &self.dt_bias, &self.d_skip)
    }

    /// Sequential f64 reference: `(y [B, L, D], final state [B, D, N])`.
    pub fn reference(&self, l: &ScanLayout, with_h0: bool) -> (Vec<f64>, Vec<f64>) {
        let (d, n) = (l.d, l.n);
        let sp = |x: f64| if x > 20.0 { x } else { x.exp().ln_1p() };
        let silu = |x: f64| x / (1.0 + (-x).exp());
        let mut y = vec![0.0; l.batch * l.len * d];
        let mut hs = vec![0.0; l.batch * d * n];
        for b in 0..l.batch {
            for c in 0..d {
                let mut h: Vec<f64> = (0..n)
                    .map(|k| {
                        if with_h0 {
                            self.h0[(b * d + c) * n + k] as f64
                        } else {
                            0.0
                        }
                    })
                    .collect();
                for t in 0..l.len {
                    let row = b * l.len + t;
                    let uv = self.u[row * d + c] as f64;
                    let delta = sp(self.dt[row * d + c] as f64 + self.dt_bias[c] as f64);
                    let mut acc = 0.0;
                    for (k, hk) in h.iter_mut().enumerate() {
                        let a = (delta * self.a[c * n + k] as f64).exp();
                        *hk = a * *hk + delta * self.bc[row * 2 * n + k] as f64 * uv;
                        acc += *hk * self.bc[row * 2 * n + n + k] as f64;
                    }
                    y[row * d + c] =
                        (acc + self.d_skip[c] as f64 * uv) * silu(self.z[row * d + c] as f64);
                }
                hs[(b * d + c) * n..(b * d + c + 1) * n].copy_from_slice(&h);
            }
        }
        (y, hs)
    }
}

/// Rows of `x` (`rows` x `width`) placed at column `offset` of rows `stride` long, the
/// other columns filled with `fill` (a strided view's neighbours).
fn embed(x: &[f32], width: usize, stride: usize, offset: usize, fill: f32) -> Vec<f32> {
    let rows = x.len() / width;
    let mut out = vec![fill; rows * stride];
    for r in 0..rows {
        out[r * stride + offset..r * stride + offset + width]
            .copy_from_slice(&x[r * width..(r + 1) * width]);
    }
    out
}

pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    // N <= 16 runs the register path (16 channels a workgroup, 16-token chunks), N > 16 the
    // wide one: lengths 1, under, at and over a chunk and long; channels under, at and over
    // a workgroup's 16; N of 1, odd, not a multiple of 4, 16, 17 and 64; strided views as
    // Mamba's in_proj / x_proj outputs lie (neighbouring columns hold 1e30, which a read
    // outside the view would show).
    // Every N <= 16 shape also runs each other variant: 32-token chunks (lengths 15 and 19
    // under one, 32 at one, 33 and over past it), the channel-per-thread kernel (64
    // channels a workgroup: 64 at one, 70 and 129 over) and the wide kernel.
    let others = [
        ScanVariant::Register { chunk: 32 },
        ScanVariant::Channel { chunk: 16 },
        ScanVariant::Channel { chunk: 32 },
        ScanVariant::Wide,
    ];
    let shapes = [
        (1usize, 1usize, 1usize, 1usize, false, false),
        (1, 7, 5, 16, false, false),
        (3, 64, 9, 16, true, false),
        (2, 1031, 4, 16, true, false),
        (1, 33, 3, 5, false, false),
        (1, 16, 16, 16, true, false),
        (2, 15, 17, 13, true, false),
        (1, 1, 37, 16, true, false),
        (1, 49, 33, 4, false, false),
        (2, 19, 21, 16, true, true),
        (1, 40, 18, 7, false, true),
        (2, 17, 6, 32, true, false),
        (1, 5, 3, 17, true, true),
        (1, 9, 2, 64, true, false),
        (1, 32, 64, 16, true, false),
        (2, 70, 70, 4, false, false),
        (1, 97, 129, 16, true, true),
    ];
    let runs = shapes.into_iter().flat_map(|s| {
        let n = s.3;
        std::iter::once(ScanVariant::auto(n))
            .chain(others.into_iter().filter(move |_| n <= SCAN_STATES))
            .map(move |v| (s, v))
    });
    for ((batch, len, d, n, h0, strided), variant) in runs {
        let vname = match variant {
            _ if variant == ScanVariant::auto(n) => String::new(),
            ScanVariant::Register { chunk } => format!(" chunk={chunk}"),
            ScanVariant::Channel { chunk } => format!(" channel chunk={chunk}"),
            ScanVariant::Wide => " wide".to_string(),
        };
        v.push(Case::new(
            "selective_scan",
            format!(
                "B={batch} L={len} D={d} N={n}{}{}{vname}",
                if h0 { " +h0" } else { "" },
                if strided { " strided" } else { "" }
            ),
            1e-9,
            move |dev, rng| {
                let packed = ScanLayout::packed(batch, len, d, n);
                let s = ScanData::random(rng, &packed);
                let up = |x: &Vec<f32>, shape: &[usize]| dev.tensor_f32(x, shape);
                let bl = batch * len;
                let (l, u, dt, bc, z) = if strided {
                    // u and dt lead their rows; B and C apart inside one; z in a row's middle.
                    let l = ScanLayout {
                        u_stride: d + 3,
                        dt_stride: d + 1,
                        bc_stride: 2 * n + 5,
                        b_offset: 2,
                        c_offset: n + 4,
                        z_stride: 2 * d + 2,
                        z_offset: d,
                        ..packed
                    };
                    let mut bcs = vec![1e30f32; bl * l.bc_stride];
                    for r in 0..bl {
                        let (src, dst) = (r * 2 * n, r * l.bc_stride);
                        bcs[dst + l.b_offset..dst + l.b_offset + n]
                            .copy_from_slice(&s.bc[src..src + n]);
                        bcs[dst + l.c_offset..dst + l.c_offset + n]
                            .copy_from_slice(&s.bc[src + n..src + 2 * n]);
                    }
                    (
                        l,
                        up(&embed(&s.u, d, l.u_stride, 0, 1e30), &[bl, l.u_stride])?,
                        up(&embed(&s.dt, d, l.dt_stride, 0, 1e30), &[bl, l.dt_stride])?,
                        up(&bcs, &[bl, l.bc_stride])?,
                        up(
                            &embed(&s.z, d, l.z_stride, l.z_offset, 1e30),
                            &[bl, l.z_stride],
                        )?,
                    )
                } else {
                    (
                        packed,
                        up(&s.u, &[batch, len, d])?,
                        up(&s.dt, &[batch, len, d])?,
                        up(&s.bc, &[batch, len, 2 * n])?,
                        up(&s.z, &[batch, len, d])?,
                    )
                };
                let cw = dev.weight_f32(&s.packed_weights()?, &[d, n + 2])?;
                let hh = up(&s.h0, &[batch, d, n])?;
                let y = output(dev, &[batch, len, d], DType::F32)?;
                let h = output(dev, &[batch, d, n], DType::F32)?;
                let mut rec = dev.recorder("test");
                let w = ScanWeights { packed: &cw };
                selective_scan_with(
                    &mut rec,
                    variant,
                    &l,
                    &u,
                    &dt,
                    &bc,
                    &z,
                    &w,
                    h0.then_some(&hh),
                    &y,
                    &h,
                )?;
                rec.submit()?;
                let (wy, wh) = s.reference(&l, h0);
                Ok(check_f32(dev, &y, &wy)?.merge(check_f32(dev, &h, &wh)?))
            },
        ));
    }
    // Decode: ranks R of 1, under and over the 16 lanes (mamba-130m's 48 and odd ones),
    // channels off a workgroup, N of 1, 16 and 32; x_dbl's rows hold dt, B and C as x_proj
    // writes them.
    for (batch, d, n, r) in [
        (1usize, 1usize, 1usize, 1usize),
        (3, 37, 16, 5),
        (8, 64, 16, 48),
        (2, 5, 32, 33),
        (1, 19, 16, 16),
        (5, 3, 7, 70),
    ] {
        v.push(Case::new(
            "selective_state_update",
            format!("B={batch} D={d} N={n} R={r}"),
            1e-10,
            move |dev, rng| {
                let packed = ScanLayout::packed(batch, 1, d, n);
                let mut s = ScanData::random(rng, &packed);
                // x_dbl rows [dt (R) | B (N) | C (N)]; dt = x_dbl[:, ..R] · W_dtᵀ in f64.
                let wdt = rng.vec(d * r, -0.4, 0.4);
                let xr = rng.vec(batch * r, -1.0, 1.0);
                let stride = r + 2 * n;
                let mut xdbl = vec![0.0f32; batch * stride];
                for bi in 0..batch {
                    xdbl[bi * stride..bi * stride + r].copy_from_slice(&xr[bi * r..(bi + 1) * r]);
                    xdbl[bi * stride + r..(bi + 1) * stride]
                        .copy_from_slice(&s.bc[bi * 2 * n..(bi + 1) * 2 * n]);
                    for c in 0..d {
                        let dot: f64 = (0..r)
                            .map(|k| wdt[c * r + k] as f64 * xr[bi * r + k] as f64)
                            .sum();
                        s.dt[bi * d + c] = dot as f32;
                    }
                }
                let l = ScanLayout {
                    bc_stride: stride,
                    b_offset: r,
                    c_offset: r + n,
                    ..packed
                };
                let up = |x: &Vec<f32>, shape: &[usize]| dev.tensor_f32(x, shape);
                let (u, bc, z) = (
                    up(&s.u, &[batch, d])?,
                    up(&xdbl, &[batch, stride])?,
                    up(&s.z, &[batch, d])?,
                );
                let wt = dev.weight_f32(&wdt, &[d, r])?;
                let cw = dev.weight_f32(&s.packed_weights()?, &[d, n + 2])?;
                let state = dev.alloc_with_capacity(&[batch, d, n], DType::F32, 0)?;
                dev.write(&state, bytemuck::cast_slice(&s.h0))?;
                let y = output(dev, &[batch, d], DType::F32)?;
                let mut rec = dev.recorder("test");
                let w = ScanWeights { packed: &cw };
                let dtp = DtProj {
                    weight: &wt,
                    rank: r,
                    offset: 0,
                };
                selective_state_update(&mut rec, &l, &u, &dtp, &bc, &z, &w, &state, &y)?;
                rec.submit()?;
                let (wy, wh) = s.reference(&packed, true);
                let got_h = dev.read_f32(&state)?;
                let mut c = check_f32(dev, &y, &wy)?;
                let (num, den) = got_h.iter().zip(&wh).fold((0.0, 0.0), |(a, b), (g, r)| {
                    (a + (*g as f64 - r).powi(2), b + r * r)
                });
                c.nmse = c.nmse.max(num / den.max(1e-30));
                c.nonfinite += got_h.iter().filter(|v| !v.is_finite()).count();
                Ok(c)
            },
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn selective_scan_matches_reference_over_shape_sweep() {
        crate::harness::assert_cases(super::cases());
    }

    /// The default plan keeps today's pipeline (no ST constant); the others size their grids
    /// by their own workgroups and refuse what their kernels cannot hold.
    #[test]
    fn scan_variants_plan_their_kernels() {
        use super::{ScanLayout, ScanVariant};
        let l = ScanLayout::packed(2, 100, 70, 16);
        let plan = |v: ScanVariant, l: &ScanLayout| {
            v.plan(l, 16)
                .map(|(k, g)| (k.entry, k.constants, g))
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            plan(ScanVariant::auto(16), &l),
            Ok(("selective_scan", vec![], 2 * 5))
        );
        assert_eq!(
            plan(ScanVariant::Register { chunk: 32 }, &l),
            Ok(("selective_scan", vec![("ST", 32)], 2 * 5))
        );
        assert_eq!(
            plan(ScanVariant::Channel { chunk: 16 }, &l),
            Ok(("selective_scan_channel", vec![], 2 * 2))
        );
        assert_eq!(
            plan(ScanVariant::Wide, &l),
            Ok(("selective_scan_wide", vec![("NS", 16)], 2 * 70))
        );
        assert_eq!(ScanVariant::auto(17), ScanVariant::Wide);
        let wide_n = ScanLayout::packed(1, 4, 3, 17);
        assert!(plan(ScanVariant::Register { chunk: 16 }, &wide_n).is_err());
        assert!(plan(ScanVariant::Channel { chunk: 16 }, &wide_n).is_err());
        assert!(plan(ScanVariant::Register { chunk: 24 }, &l).is_err());
    }
}
