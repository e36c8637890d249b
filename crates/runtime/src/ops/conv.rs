//! Convolutions (`shaders/conv.wgsl`): conv2d with stride, zero padding, dilation and groups
//! (depthwise included), PyTorch weight layout `[Cout, Cin / groups, KH, KW]`; conv1d is the
//! same kernel with H = 1; `spike_conv2d` takes packed binary spikes as its input.

use bytemuck::{Pod, Zeroable};

use super::{expect_dtype, expect_float, expect_out, grid_elems};
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, output, Case, Feature};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::Recorder;
use crate::spikes::PackedSpikes;
use crate::tensor::{DType, Tensor};

/// Hyper-parameters of a 2-D convolution, as `torch.nn.Conv2d`'s (index 0 = H, 1 = W).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Default for Conv2d {
    fn default() -> Self {
        Self {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl Conv2d {
    pub fn new(stride: usize, padding: usize) -> Self {
        Self {
            stride: [stride; 2],
            padding: [padding; 2],
            ..Self::default()
        }
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = [d; 2];
        self
    }
    /// Output size along one axis, or None when the kernel does not fit.
    pub fn out_size(&self, axis: usize, input: usize, kernel: usize) -> Option<usize> {
        let span = self.dilation[axis] * (kernel - 1) + 1;
        let padded = input + 2 * self.padding[axis];
        (padded >= span && self.stride[axis] > 0).then(|| (padded - span) / self.stride[axis] + 1)
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
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
    splits: u32,
    k_chunk: u32,
}

/// How a convolution runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPlan {
    /// One invocation per output (depthwise and other groups of few output channels).
    Direct,
    /// The implicit GEMM on tiles of `rows` x 64 (output channels x output positions of the
    /// whole batch, folded into the columns: the weights are every image's), K (the taps)
    /// in `splits` slices of `k_chunk`; 128-bit weight loads (`a_vec`: taps a multiple of 4)
    /// and vec4 output rows (`out_vec`: positions a multiple of 4).
    Gemm {
        rows: usize,
        splits: usize,
        k_chunk: usize,
        a_vec: bool,
        out_vec: bool,
    },
}

impl ConvPlan {
    /// The variant's short name, as the profiler prints it.
    pub fn describe(&self) -> String {
        match *self {
            ConvPlan::Direct => "direct".into(),
            ConvPlan::Gemm {
                rows,
                splits,
                k_chunk,
                a_vec,
                out_vec,
            } => format!(
                "gemm {rows}x64{}{}{}",
                if a_vec { " w4" } else { "" },
                if out_vec { " out4" } else { "" },
                if splits > 1 {
                    format!(" split-k {splits}x{k_chunk}")
                } else {
                    String::new()
                }
            ),
        }
    }
}

/// Output channels per group from which a convolution runs as an implicit GEMM: with fewer,
/// most rows of a 64-row tile would idle (a depthwise conv has one).
pub const GEMM_MIN_ROWS: usize = 8;

/// The plan for a convolution with output shape `os`, weights `ws` and `groups` on a device
/// of `wg` invocations per workgroup.
pub fn plan(os: [usize; 4], ws: [usize; 4], groups: usize, wg: usize) -> ConvPlan {
    plan_with(os, ws, groups, wg, None, None, None)
}

/// [`plan`] with the kernel (`gemm`), the GEMM's tile rows and its K slices forced (tests and
/// benchmarks of each variant).
pub fn plan_with(
    os: [usize; 4],
    ws: [usize; 4],
    groups: usize,
    wg: usize,
    gemm: Option<bool>,
    rows: Option<usize>,
    slices: Option<usize>,
) -> ConvPlan {
    let cout_g = ws[0] / groups.max(1);
    if !gemm.unwrap_or(cout_g >= GEMM_MIN_ROWS) {
        return ConvPlan::Direct;
    }
    let (npos, taps) = (os[2] * os[3], ws[1] * ws[2] * ws[3]);
    // Columns: every image's output positions (the batch folded in: A is shared).
    let (rows, splits, k_chunk) =
        super::matmul::tiling(cout_g, os[0] * npos, taps, groups, wg, 64, rows, slices);
    ConvPlan::Gemm {
        rows,
        splits,
        k_chunk,
        a_vec: taps.is_multiple_of(4),
        out_vec: npos.is_multiple_of(4),
    }
}

/// Records a checked convolution: `input` is f32, or packed spikes' words (`spikes`).
#[allow(clippy::too_many_arguments)]
fn record(
    rec: &mut Recorder,
    name: &'static str,
    input: &Tensor,
    spikes: bool,
    w: &Tensor,
    bias: Option<&Tensor>,
    pad_values: Option<&Tensor>,
    mut p: Params,
    pl: ConvPlan,
    out: &Tensor,
    shape: String,
) -> Result<()> {
    let ws = w.shape();
    let taps = ws[1] * ws[2] * ws[3];
    let n = out.numel();
    let info = |bytes: u64| OpInfo {
        name,
        shape: format!("{shape} {}", pl.describe()),
        bytes,
        flops: 2 * (n * taps) as u64,
    };
    let moved = input.bytes() + w.bytes() + out.bytes();
    let ConvPlan::Gemm {
        rows,
        splits,
        k_chunk,
        a_vec,
        out_vec,
    } = pl
    else {
        if w.dtype() != DType::F32 {
            return Err(shape_err(
                name,
                format!(
                    "{} weights need the implicit-GEMM kernel (at least {GEMM_MIN_ROWS} output channels per group); this one runs direct and takes f32",
                    w.dtype().name()
                ),
            ));
        }
        let (key, ins) = if spikes {
            let key = PipelineKey::new(Shader::Conv, "spike_conv2d", 3, 1);
            (key, vec![input, w, bias.unwrap_or(w)])
        } else {
            let key = PipelineKey::new(Shader::Conv, "conv2d", 4, 1);
            (
                key,
                vec![input, w, bias.unwrap_or(w), pad_values.unwrap_or(w)],
            )
        };
        return rec.dispatch(&key, &p, &ins, &[out], grid_elems(rec, n), || info(moved));
    };
    let wg = rec.device().wg() as usize;
    let (npos, cout_g) = (p.oh as usize * p.ow as usize, ws[0] / p.groups as usize);
    let batch = p.n as usize;
    let want = plan_with(
        out.shape().try_into().expect("rank 4"),
        ws.try_into().expect("rank 4"),
        p.groups as usize,
        wg,
        Some(true),
        Some(rows),
        Some(splits),
    );
    if want != pl {
        return Err(shape_err(
            name,
            format!("plan {pl:?} is not one of plan_with's for this convolution ({want:?})"),
        ));
    }
    let (gx, gy, gz) = (
        (batch * npos).div_ceil(64),
        cout_g.div_ceil(rows),
        p.groups as usize * splits,
    );
    if gx > 65_535 || gy > 65_535 || gz > 65_535 {
        return Err(shape_err(
            name,
            format!("{shape} needs more than 65,535 tiles in a dimension"),
        ));
    }
    let key = PipelineKey::new(Shader::Conv, "conv_gemm", 4, 1)
        .define_if("GEMM", true)
        .define_if("F16", w.dtype() == DType::F16)
        .define_if("A_F16", w.dtype() == DType::F16)
        .define_if("B_ROWS", true)
        .define_if("SPIKES", spikes)
        .define_if("A_VEC", a_vec)
        .define_if("OUT_VEC", out_vec)
        .define_if("RM8", rows == (wg / 16) * 8);
    p.splits = splits as u32;
    p.k_chunk = k_chunk as u32;
    let ins = [input, w, bias.unwrap_or(w), pad_values.unwrap_or(w)];
    let groups = [gx as u32, gy as u32, gz as u32];
    if splits == 1 {
        return rec.dispatch(&key, &p, &ins, &[out], groups, || info(moved));
    }
    let parts = rec.alloc(&[splits * n], DType::F32)?;
    let scratch = 4 * (splits * n) as u64;
    rec.dispatch(&key, &p, &ins, &[&parts], groups, || {
        info(moved - out.bytes() + scratch)
    })?;
    super::matmul::splitk_reduce(
        rec,
        &parts,
        bias.map(|b| (b, 2)),
        out,
        [batch, ws[0], npos],
        splits,
        [npos, 0],
    )
}

/// Checks a convolution of an input of shape `xs` and returns its output shape and the
/// kernel parameters (shared with the packed-spike convolution).
pub(crate) fn checked_params(
    op: &'static str,
    xs: &[usize],
    w: &Tensor,
    bias: Option<&Tensor>,
    c: &Conv2d,
) -> Result<([usize; 4], Params)> {
    expect_float(op, "w", w)?;
    let ws = w.shape();
    let os = conv2d_shape(xs, ws, c)?;
    if let Some(b) = bias {
        expect_dtype(op, "bias", b, DType::F32)?;
        if b.numel() != os[1] {
            return Err(shape_err(
                op,
                format!("bias has {} elements, expected {}", b.numel(), os[1]),
            ));
        }
    }
    let u = |v: usize| v as u32;
    let p = Params {
        n: u(xs[0]),
        cin: u(xs[1]),
        h: u(xs[2]),
        w: u(xs[3]),
        cout: u(ws[0]),
        oh: u(os[2]),
        ow: u(os[3]),
        kh: u(ws[2]),
        kw: u(ws[3]),
        sh: u(c.stride[0]),
        sw: u(c.stride[1]),
        ph: u(c.padding[0]),
        pw: u(c.padding[1]),
        dh: u(c.dilation[0]),
        dw: u(c.dilation[1]),
        groups: u(c.groups),
        has_bias: bias.is_some() as u32,
        has_pad_values: 0,
        splits: 1,
        k_chunk: 0,
    };
    Ok((os, p))
}

/// Output shape of conv2d, or an error naming what does not fit.
pub fn conv2d_shape(x: &[usize], w: &[usize], c: &Conv2d) -> Result<[usize; 4]> {
    if x.len() != 4 || w.len() != 4 {
        return Err(shape_err(
            "conv2d",
            format!("x {x:?} must be [N, C, H, W] and w {w:?} [Cout, Cin/g, KH, KW]"),
        ));
    }
    let g = c.groups;
    if g == 0 || !x[1].is_multiple_of(g) || !w[0].is_multiple_of(g) || w[1] * g != x[1] {
        return Err(shape_err(
            "conv2d",
            format!("x {x:?} and w {w:?} do not fit groups = {g} (w must be [Cout, Cin/groups, KH, KW])"),
        ));
    }
    let oh = c.out_size(0, x[2], w[2]);
    let ow = c.out_size(1, x[3], w[3]);
    match (oh, ow) {
        (Some(oh), Some(ow)) => Ok([x[0], w[0], oh, ow]),
        _ => Err(shape_err(
            "conv2d",
            format!("kernel {w:?} does not fit input {x:?} with {c:?}"),
        )),
    }
}

/// `out = conv2d(x, w) + bias`.
pub fn conv2d_into(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    c: &Conv2d,
    out: &Tensor,
) -> Result<()> {
    conv2d_planned(rec, x, w, bias, None, c, None, out)
}

/// conv2d whose padding takes `pad_values[ci]` for input channel `ci` instead of zeros: the
/// border a BatchNorm-and-pad layer writes (BN(0) per channel), without materialising it.
pub fn conv2d_pad_values_into(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    pad_values: &Tensor,
    c: &Conv2d,
    out: &Tensor,
) -> Result<()> {
    conv2d_planned(rec, x, w, bias, Some(pad_values), c, None, out)
}

/// [`conv2d_into`] (or its padding-values form) as plan `pl` (None: [`plan`]'s).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_planned(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    pad_values: Option<&Tensor>,
    c: &Conv2d,
    pl: Option<ConvPlan>,
    out: &Tensor,
) -> Result<()> {
    expect_dtype("conv2d", "x", x, DType::F32)?;
    let (os, mut p) = checked_params("conv2d", x.shape(), w, bias, c)?;
    expect_out("conv2d", out, &os, DType::F32)?;
    if let Some(pv) = pad_values {
        expect_dtype("conv2d", "pad_values", pv, DType::F32)?;
        if pv.numel() != x.dim(1) {
            return Err(shape_err(
                "conv2d",
                format!(
                    "pad_values has {} elements, expected one per input channel ({})",
                    pv.numel(),
                    x.dim(1)
                ),
            ));
        }
        p.has_pad_values = 1;
    }
    let (xs, ws) = (x.shape(), w.shape());
    let shape = format!(
        "x={:?} w={:?} s={:?} p={:?} g={}{}",
        xs,
        ws,
        c.stride,
        c.padding,
        c.groups,
        if pad_values.is_some() {
            " pad=values"
        } else {
            ""
        }
    );
    let pl = pl.unwrap_or_else(|| {
        plan(
            os,
            ws.try_into().expect("rank 4"),
            c.groups,
            rec.device().wg() as usize,
        )
    });
    record(
        rec, "conv2d", x, false, w, bias, pad_values, p, pl, out, shape,
    )
}

/// conv2d into a new tensor.
pub fn conv2d(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    c: &Conv2d,
) -> Result<Tensor> {
    let os = conv2d_shape(x.shape(), w.shape(), c)?;
    let out = rec.alloc(&os, DType::F32)?;
    conv2d_into(rec, x, w, bias, c, &out)?;
    Ok(out)
}

/// Hyper-parameters of `torch.nn.Conv1d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1d {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl Conv1d {
    pub fn new(stride: usize, padding: usize) -> Self {
        Self {
            stride,
            padding,
            dilation: 1,
            groups: 1,
        }
    }
    fn as_2d(&self) -> Conv2d {
        Conv2d {
            stride: [1, self.stride],
            padding: [0, self.padding],
            dilation: [1, self.dilation],
            groups: self.groups,
        }
    }
}

/// conv1d: `x [N, C, L]`, `w [Cout, C/groups, K]` → `[N, Cout, Lout]`.
pub fn conv1d(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    c: &Conv1d,
) -> Result<Tensor> {
    if x.rank() != 3 || w.rank() != 3 {
        return Err(shape_err(
            "conv1d",
            format!(
                "x {:?} must be [N, C, L] and w {:?} [Cout, Cin/g, K]",
                x.shape(),
                w.shape()
            ),
        ));
    }
    let (xs, ws) = (x.shape(), w.shape());
    let x4 = x.reshape(&[xs[0], xs[1], 1, xs[2]])?;
    let w4 = w.reshape(&[ws[0], ws[1], 1, ws[2]])?;
    let out = conv2d(rec, &x4, &w4, bias, &c.as_2d())?;
    let os = out.shape().to_vec();
    out.reshape(&[os[0], os[1], os[3]])
}

/// A 2-D convolution of packed spikes `[N, Cin, H * W]` (spatial size `hw`) with f32
/// weights `[Cout, Cin / groups, KH, KW]`: f32 output `[N, Cout, OH, OW]`.
pub fn spike_conv2d_into(
    rec: &mut Recorder,
    s: &PackedSpikes,
    hw: [usize; 2],
    w: &Tensor,
    bias: Option<&Tensor>,
    c: &Conv2d,
    out: &Tensor,
) -> Result<()> {
    spike_conv2d_planned(rec, s, hw, w, bias, c, None, out)
}

/// [`spike_conv2d_into`] as plan `pl` (None: [`plan`]'s).
#[allow(clippy::too_many_arguments)]
pub fn spike_conv2d_planned(
    rec: &mut Recorder,
    s: &PackedSpikes,
    hw: [usize; 2],
    w: &Tensor,
    bias: Option<&Tensor>,
    c: &Conv2d,
    pl: Option<ConvPlan>,
    out: &Tensor,
) -> Result<()> {
    let sh = s.shape();
    if sh.len() != 3 || sh[2] != hw[0] * hw[1] {
        return Err(shape_err(
            "spike_conv2d",
            format!("spikes {sh:?} must be [N, Cin, H * W] with H, W = {hw:?}"),
        ));
    }
    let xs = [sh[0], sh[1], hw[0], hw[1]];
    let (os, p) = checked_params("spike_conv2d", &xs, w, bias, c)?;
    if out.shape() != os || out.dtype() != DType::F32 {
        return Err(shape_err(
            "spike_conv2d",
            format!("output must be f32{os:?}, got {out:?}"),
        ));
    }
    let shape = format!(
        "x={xs:?} w={:?} s={:?} p={:?} g={}",
        w.shape(),
        c.stride,
        c.padding,
        c.groups
    );
    let pl = pl.unwrap_or_else(|| {
        plan(
            os,
            w.shape().try_into().expect("rank 4"),
            c.groups,
            rec.device().wg() as usize,
        )
    });
    record(
        rec,
        "spike_conv2d",
        s.words(),
        true,
        w,
        bias,
        None,
        p,
        pl,
        out,
        shape,
    )
}

/// [`spike_conv2d_into`] into a new tensor.
pub fn spike_conv2d(
    rec: &mut Recorder,
    s: &PackedSpikes,
    hw: [usize; 2],
    w: &Tensor,
    bias: Option<&Tensor>,
    c: &Conv2d,
) -> Result<Tensor> {
    let sh = s.shape();
    let os = conv2d_shape(
        &[sh[0], *sh.get(1).unwrap_or(&0), hw[0], hw[1]],
        w.shape(),
        c,
    )?;
    let out = rec.alloc(&os, DType::F32)?;
    spike_conv2d_into(rec, s, hw, w, bias, c, &out)?;
    Ok(out)
}

/// f64 reference of conv2d.
pub fn reference(
    x: &[f32],
    xs: [usize; 4],
    w: &[f32],
    ws: [usize; 4],
    bias: Option<&[f32]>,
    c: &Conv2d,
) -> Vec<f64> {
    reference_pad_values(x, xs, w, ws, bias, None, c)
}

/// f64 reference of conv2d, the padding taking `pad_values[ci]` when given.
pub fn reference_pad_values(
    x: &[f32],
    xs: [usize; 4],
    w: &[f32],
    ws: [usize; 4],
    bias: Option<&[f32]>,
    pad_values: Option<&[f32]>,
    c: &Conv2d,
) -> Vec<f64> {
    let os = conv2d_shape(&xs, &ws, c).expect("valid conv");
    let (cin_g, cout_g) = (xs[1] / c.groups, ws[0] / c.groups);
    let mut out = vec![0.0; os.iter().product()];
    for b in 0..os[0] {
        for co in 0..os[1] {
            let g = co / cout_g;
            for oy in 0..os[2] {
                for ox in 0..os[3] {
                    let mut s = bias.map_or(0.0, |bb| bb[co] as f64);
                    for ci in 0..cin_g {
                        let cg = g * cin_g + ci;
                        for ky in 0..ws[2] {
                            let iy = (oy * c.stride[0] + ky * c.dilation[0]) as isize
                                - c.padding[0] as isize;
                            for kx in 0..ws[3] {
                                let ix = (ox * c.stride[1] + kx * c.dilation[1]) as isize
                                    - c.padding[1] as isize;
                                let inside = iy >= 0
                                    && ix >= 0
                                    && iy < xs[2] as isize
                                    && ix < xs[3] as isize;
                                let xv = if inside {
                                    x[((b * xs[1] + cg) * xs[2] + iy as usize) * xs[3]
                                        + ix as usize]
                                } else {
                                    pad_values.map_or(0.0, |p| p[cg])
                                };
                                let wv = w[((co * cin_g + ci) * ws[2] + ky) * ws[3] + kx];
                                s += xv as f64 * wv as f64;
                            }
                        }
                    }
                    out[((b * os[1] + co) * os[2] + oy) * os[3] + ox] = s;
                }
            }
        }
    }
    out
}

/// Harness cases: 1x1, 3x3, 7x7 depthwise, strided, dilated, grouped, conv1d shapes, f32 and
/// spike inputs, each in every variant (direct; implicit GEMM on either tile, K split).
pub fn cases() -> Vec<Case> {
    type Spec = (&'static str, [usize; 4], [usize; 4], Conv2d, bool);
    let list: Vec<Spec> = vec![
        ("1x1", [1, 1, 1, 1], [1, 1, 1, 1], Conv2d::default(), false),
        ("1x1", [2, 5, 3, 7], [9, 5, 1, 1], Conv2d::default(), true),
        (
            "3x3 p1",
            [1, 3, 13, 11],
            [8, 3, 3, 3],
            Conv2d::new(1, 1),
            false,
        ),
        (
            "3x3 s2 p1",
            [2, 4, 9, 10],
            [5, 4, 3, 3],
            Conv2d::new(2, 1),
            true,
        ),
        (
            "7x7 s2 p3",
            [1, 3, 17, 17],
            [6, 3, 7, 7],
            Conv2d::new(2, 3),
            true,
        ),
        (
            "dw 7x7 p3",
            [2, 6, 9, 8],
            [6, 1, 7, 7],
            Conv2d::new(1, 3).groups(6),
            false,
        ),
        (
            "dw 3x3 p0",
            [1, 5, 6, 6],
            [5, 1, 3, 3],
            Conv2d::new(1, 0).groups(5),
            false,
        ),
        (
            "groups 2",
            [1, 4, 7, 5],
            [6, 2, 3, 3],
            Conv2d::new(1, 1).groups(2),
            true,
        ),
        (
            "deep 14x14, auto split-K",
            [2, 64, 14, 14],
            [136, 64, 3, 3],
            Conv2d::new(1, 1),
            true,
        ),
        (
            "odd positions over 3 images",
            [3, 8, 5, 7],
            [16, 8, 3, 3],
            Conv2d::new(1, 1),
            true,
        ),
        (
            "dilation 2",
            [1, 2, 11, 9],
            [3, 2, 3, 3],
            Conv2d::new(1, 2).dilation(2),
            true,
        ),
        (
            "conv1d k3 p1",
            [3, 7, 1, 33],
            [5, 7, 1, 3],
            Conv1d::new(1, 1).as_2d(),
            false,
        ),
        (
            "conv1d k4 p3",
            [1, 4, 1, 20],
            [4, 1, 1, 4],
            Conv1d {
                stride: 1,
                padding: 3,
                dilation: 1,
                groups: 4,
            }
            .as_2d(),
            true,
        ),
    ];
    let mut v: Vec<Case> = list
        .into_iter()
        .flat_map(|spec| FORCES.iter().map(move |&f| (spec, f)))
        .map(|((name, xs, ws, c, bias), force)| {
            Case::new(
                "conv2d",
                format!("{name} x={xs:?} w={ws:?}{}", force_name(force)),
                1e-11,
                move |dev, rng| {
                    let x = rng.vec(xs.iter().product(), -1.0, 1.0);
                    let w = rng.vec(ws.iter().product(), -1.0, 1.0);
                    let b = rng.vec(ws[0], -1.0, 1.0);
                    let (xt, wt, bt) = (
                        dev.tensor_f32(&x, &xs)?,
                        dev.weight_f32(&w, &ws)?,
                        dev.weight_f32(&b, &[ws[0]])?,
                    );
                    let os = conv2d_shape(&xs, &ws, &c)?;
                    let out = output(dev, &os, DType::F32)?;
                    let pl = forced(force, os, ws, &c, dev.wg() as usize);
                    let mut rec = dev.recorder("test");
                    conv2d_planned(&mut rec, &xt, &wt, bias.then_some(&bt), None, &c, pl, &out)?;
                    rec.submit()?;
                    check_f32(
                        dev,
                        &out,
                        &reference(&x, xs, &w, ws, bias.then_some(&b), &c),
                    )
                },
            )
        })
        .collect();
    // BatchNorm-and-pad: a depthwise 3x3 with pad 1 whose border is a per-channel value.
    for (xs, ws, c) in [
        (
            [2usize, 5, 6, 7],
            [5usize, 1, 3, 3],
            Conv2d::new(1, 1).groups(5),
        ),
        ([1, 3, 4, 4], [4, 3, 3, 3], Conv2d::new(2, 1)),
    ] {
        for force in FORCES {
            v.push(Case::new(
                "conv2d",
                format!("pad=values x={xs:?} w={ws:?}{}", force_name(force)),
                1e-11,
                move |dev, rng| {
                    let x = rng.vec(xs.iter().product(), -1.0, 1.0);
                    let w = rng.vec(ws.iter().product(), -1.0, 1.0);
                    let pv = rng.vec(xs[1], -2.0, 2.0);
                    let (xt, wt, pt) = (
                        dev.tensor_f32(&x, &xs)?,
                        dev.weight_f32(&w, &ws)?,
                        dev.weight_f32(&pv, &[xs[1]])?,
                    );
                    let os = conv2d_shape(&xs, &ws, &c)?;
                    let out = output(dev, &os, DType::F32)?;
                    let pl = forced(force, os, ws, &c, dev.wg() as usize);
                    let mut rec = dev.recorder("test");
                    conv2d_planned(&mut rec, &xt, &wt, None, Some(&pt), &c, pl, &out)?;
                    rec.submit()?;
                    check_f32(
                        dev,
                        &out,
                        &reference_pad_values(&x, xs, &w, ws, None, Some(&pv), &c),
                    )
                },
            ));
        }
    }
    type ConvSpec = ([usize; 4], [usize; 4], Conv2d, bool);
    let convs: Vec<ConvSpec> = vec![
        ([1, 1, 1, 1], [1, 1, 1, 1], Conv2d::default(), false),
        ([2, 4, 9, 7], [6, 4, 3, 3], Conv2d::new(1, 1), true),
        ([1, 8, 14, 14], [16, 8, 3, 3], Conv2d::new(1, 1), false),
        ([2, 3, 11, 13], [5, 3, 3, 3], Conv2d::new(2, 1), true),
        (
            [1, 6, 8, 8],
            [6, 1, 3, 3],
            Conv2d::new(1, 0).groups(6),
            false,
        ),
        ([2, 16, 14, 14], [24, 16, 3, 3], Conv2d::new(2, 1), true),
        ([1, 64, 7, 7], [64, 64, 3, 3], Conv2d::new(1, 1), true),
        (
            [1, 4, 9, 9],
            [12, 2, 3, 3],
            Conv2d::new(1, 1).groups(2),
            true,
        ),
        ([1, 64, 14, 14], [136, 64, 3, 3], Conv2d::new(1, 1), true),
        ([3, 8, 5, 7], [16, 8, 3, 3], Conv2d::new(1, 1), false),
    ];
    for (xs, ws, c, bias) in convs {
        for force in FORCES {
            v.push(
                Case::new(
                    "spike_conv2d",
                    format!(
                        "x={xs:?} w={ws:?} s={:?} p={:?} g={}{}",
                        c.stride,
                        c.padding,
                        c.groups,
                        force_name(force)
                    ),
                    1e-11,
                    move |dev, rng| {
                        let x: Vec<f32> = (0..xs.iter().product())
                            .map(|_| if rng.unit() < 0.25 { 1.0 } else { 0.0 })
                            .collect();
                        let w = rng.vec(ws.iter().product(), -1.0, 1.0);
                        let b = rng.vec(ws[0], -1.0, 1.0);
                        let st = PackedSpikes::from_host(dev, &x, &[xs[0], xs[1], xs[2] * xs[3]])?;
                        let (wt, bt) = (dev.weight_f32(&w, &ws)?, dev.weight_f32(&b, &[ws[0]])?);
                        let os = conv2d_shape(&xs, &ws, &c)?;
                        let out = output(dev, &os, DType::F32)?;
                        let pl = forced(force, os, ws, &c, dev.wg() as usize);
                        let mut rec = dev.recorder("test");
                        spike_conv2d_planned(
                            &mut rec,
                            &st,
                            [xs[2], xs[3]],
                            &wt,
                            bias.then_some(&bt),
                            &c,
                            pl,
                            &out,
                        )?;
                        rec.submit()?;
                        check_f32(
                            dev,
                            &out,
                            &reference(&x, xs, &w, ws, bias.then_some(&b), &c),
                        )
                    },
                )
                .dtype("bits×f32"),
            );
        }
    }
    // f16 weights (the implicit GEMM only), f32 and spike inputs, with and without 128-bit
    // weight loads (36 and 27 taps).
    for (xs, ws, c) in [
        ([2usize, 4, 9, 7], [8usize, 4, 3, 3], Conv2d::new(1, 1)),
        ([1, 3, 13, 11], [9, 3, 3, 3], Conv2d::new(2, 1)),
    ] {
        for spikes in [false, true] {
            v.push(
                Case::new(
                    if spikes { "spike_conv2d" } else { "conv2d" },
                    format!(
                        "x={xs:?} w={ws:?} s={:?} p={:?} [gemm]",
                        c.stride, c.padding
                    ),
                    1e-11,
                    move |dev, rng| {
                        let x: Vec<f32> = if spikes {
                            (0..xs.iter().product())
                                .map(|_| if rng.unit() < 0.3 { 1.0 } else { 0.0 })
                                .collect()
                        } else {
                            rng.vec(xs.iter().product(), -1.0, 1.0)
                        };
                        let w: Vec<f32> = rng
                            .vec(ws.iter().product(), -1.0, 1.0)
                            .into_iter()
                            .map(|v| half::f16::from_f32(v).to_f32())
                            .collect();
                        let b = rng.vec(ws[0], -1.0, 1.0);
                        let (wt, bt) = (dev.weight_f16(&w, &ws)?, dev.weight_f32(&b, &[ws[0]])?);
                        let os = conv2d_shape(&xs, &ws, &c)?;
                        let out = output(dev, &os, DType::F32)?;
                        let pl = forced(2, os, ws, &c, dev.wg() as usize);
                        let mut rec = dev.recorder("test");
                        if spikes {
                            let st =
                                PackedSpikes::from_host(dev, &x, &[xs[0], xs[1], xs[2] * xs[3]])?;
                            spike_conv2d_planned(
                                &mut rec,
                                &st,
                                [xs[2], xs[3]],
                                &wt,
                                Some(&bt),
                                &c,
                                pl,
                                &out,
                            )?;
                        } else {
                            let xt = dev.tensor_f32(&x, &xs)?;
                            conv2d_planned(&mut rec, &xt, &wt, Some(&bt), None, &c, pl, &out)?;
                        }
                        rec.submit()?;
                        check_f32(dev, &out, &reference(&x, xs, &w, ws, Some(&b), &c))
                    },
                )
                .dtype(if spikes { "bits×f16w" } else { "f16w" })
                .feature(Feature::F16),
            );
        }
    }
    v
}

/// A harness case's variant: 0 the plan's, 1 direct, 2 GEMM small tile, 3 GEMM large tile,
/// 4 GEMM small tile with K in 3 slices.
const FORCES: [u8; 5] = [0, 1, 2, 3, 4];

fn force_name(f: u8) -> &'static str {
    [
        "",
        " [direct]",
        " [gemm small]",
        " [gemm large]",
        " [gemm small, 3 k-slices]",
    ][f as usize]
}

fn forced(f: u8, os: [usize; 4], ws: [usize; 4], c: &Conv2d, wg: usize) -> Option<ConvPlan> {
    let rows = [None, None, Some(wg / 4), Some(wg / 2), Some(wg / 4)][f as usize];
    let slices = [None, None, Some(1), Some(1), Some(3)][f as usize];
    (f != 0).then(|| plan_with(os, ws, c.groups, wg, Some(f >= 2), rows, slices))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_matches_reference_over_shape_sweep() {
        crate::harness::assert_cases(cases());
    }

    #[test]
    fn conv1d_runs_through_the_2d_kernel() {
        let dev = &crate::harness::test_devices()[0].1;
        let x: Vec<f32> = (0..2 * 3 * 10).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..4 * 3 * 3).map(|i| (i as f32 * 0.11).cos()).collect();
        let xt = dev.tensor_f32(&x, &[2, 3, 10]).unwrap();
        let wt = dev.weight_f32(&w, &[4, 3, 3]).unwrap();
        let mut rec = dev.recorder("t");
        let y = conv1d(&mut rec, &xt, &wt, None, &Conv1d::new(2, 1)).unwrap();
        rec.submit().unwrap();
        assert_eq!(y.shape(), &[2, 4, 5]);
        let got = dev.read_f32(&y).unwrap();
        let want = reference(
            &x,
            [2, 3, 1, 10],
            &w,
            [4, 3, 1, 3],
            None,
            &Conv1d::new(2, 1).as_2d(),
        );
        for (g, r) in got.iter().zip(&want) {
            assert!((*g as f64 - r).abs() < 1e-5, "{g} vs {r}");
        }
    }

    #[test]
    fn mismatched_groups_are_an_error() {
        let e =
            conv2d_shape(&[1, 4, 5, 5], &[6, 3, 3, 3], &Conv2d::new(1, 1).groups(2)).unwrap_err();
        assert!(e.to_string().contains("groups"), "{e}");
    }
}
