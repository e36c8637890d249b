//! Matrix products (`shaders/matmul.wgsl`): `linear` with PyTorch `[out, in]` weights and an
//! optional bias, batched products with any strides, and a GEMV path for one activation row.
//! f16 weights (shader-f16) accumulate in f32; their plain twin stores the same values as f32.

use bytemuck::{Pod, Zeroable};

use super::{expect_dtype, expect_float, grid_rows};
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, output, Case, Feature};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::Recorder;
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
    _pad: [u32; 2],
}

/// Records `g` into `out`. Picks GEMV for a single activation row per batch entry.
pub fn gemm_into(
    rec: &mut Recorder,
    g: &Gemm,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    out: &Tensor,
) -> Result<()> {
    expect_dtype("matmul", "x", x, DType::F32)?;
    expect_float("matmul", "w", w)?;
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
    if Gemm::max_offset([g.batch, g.n, g.k], g.w_strides) >= w.numel() {
        return Err(shape_err(
            "matmul",
            format!("w {:?} is too small for {g:?}", w.shape()),
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
    let f16 = w.dtype() == DType::F16;
    let gemv = g.m * g.batch <= 65_535 && g.m <= 4;
    let entry = if gemv { "gemv" } else { "matmul" };
    let key = PipelineKey::new(Shader::Matmul, entry, 3, 1).define_if("F16", f16);
    let u = |v: [usize; 3]| v.map(|x| x as u32);
    let p = Params {
        m: g.m as u32,
        n: g.n as u32,
        k: g.k as u32,
        batch: g.batch as u32,
        xs: u(g.x_strides),
        ws: u(g.w_strides),
        has_bias: match (bias.is_some(), g.bias_on_rows) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => 2,
        },
        x_offset: g.x_offset as u32,
        out_stride: g.out_row_stride as u32,
        out_offset: g.out_offset as u32,
        _pad: [0; 2],
    };
    let groups = if gemv {
        // GEMV_ROWS = WG / 64 output rows per workgroup.
        let mut gr = grid_rows(g.n.div_ceil(rec.device().wg() as usize / 64));
        gr[2] = (g.batch * g.m) as u32;
        gr
    } else {
        let (gx, gy) = (g.n.div_ceil(64), g.m.div_ceil(64));
        if gx > 65_535 || gy > 65_535 || g.batch > 65_535 {
            return Err(shape_err(
                "matmul",
                format!("{g:?} needs more than 65,535 tiles in a dimension"),
            ));
        }
        [gx as u32, gy as u32, g.batch as u32]
    };
    let wbytes = if g.w_strides[0] == 0 {
        g.n * g.k
    } else {
        g.batch * g.n * g.k
    } * w.dtype().size();
    rec.dispatch(&key, &p, &[x, w, bias.unwrap_or(x)], &[out], groups, || {
        OpInfo {
            name: if gemv { "gemv" } else { "matmul" },
            shape: format!(
                "b={} m={} n={} k={}{}{}",
                g.batch,
                g.m,
                g.n,
                g.k,
                if bias.is_some() { " +bias" } else { "" },
                if f16 { " w=f16" } else { "" }
            ),
            bytes: (4 * (g.batch * g.m * (g.k + g.n)) + wbytes) as u64,
            flops: g.flops(),
        }
    })
}

/// A Linear layer: `x [.., in] · w[out, in]ᵀ + bias` → `[.., out]`.
pub fn linear(rec: &mut Recorder, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if w.rank() != 2 || x.rank() == 0 || x.dim(-1) != w.dim(1) {
        return Err(shape_err(
            "linear",
            format!(
                "x {:?} does not match weight {:?} ([out, in])",
                x.shape(),
                w.shape()
            ),
        ));
    }
    let (k, n) = (w.dim(1), w.dim(0));
    let rows = x.numel() / k;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank >= 1") = n;
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

fn case(name: &str, g: Gemm, bias: bool, f16: bool) -> Case {
    let params = format!(
        "{name} b={} m={} n={} k={}{}",
        g.batch,
        g.m,
        g.n,
        g.k,
        if bias { " +bias" } else { "" }
    );
    let c = Case::new("matmul", params, 1e-11, move |dev, rng| {
        let xlen = Gemm::max_offset([g.batch, g.m, g.k], g.x_strides) + 1;
        let wlen = Gemm::max_offset([g.batch, g.n, g.k], g.w_strides) + 1;
        let x = rng.vec(xlen, -1.0, 1.0);
        let mut w = rng.vec(wlen, -1.0, 1.0);
        if f16 {
            w.iter_mut()
                .for_each(|v| *v = half::f16::from_f32(*v).to_f32());
        }
        let blen = if g.bias_on_rows { g.m } else { g.n };
        let bv = rng.vec(blen, -1.0, 1.0);
        let xt = dev.tensor_f32(&x, &[xlen])?;
        let wt = if f16 {
            dev.weight_f16(&w, &[wlen])?
        } else {
            dev.weight_f32(&w, &[wlen])?
        };
        let bt = dev.weight_f32(&bv, &[blen])?;
        let out = output(dev, &[g.batch, g.m, g.n], DType::F32)?;
        let mut rec = dev.recorder("test");
        gemm_into(&mut rec, &g, &xt, &wt, bias.then_some(&bt), &out)?;
        rec.submit()?;
        check_f32(dev, &out, &reference(&g, &x, &w, bias.then_some(&bv)))
    });
    if f16 {
        c.dtype("f16w").feature(Feature::F16)
    } else {
        c
    }
}

/// Harness cases: GEMV and tiled shapes that straddle the 64-wide tiles, batched and strided.
pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let lin = [
        (1, 1, 1),
        (1, 33, 65),
        (1, 50, 300),
        (3, 5, 9),
        (7, 33, 65),
        (64, 64, 16),
        (65, 130, 17),
        (100, 3, 257),
        (129, 67, 200),
    ];
    for &(m, n, k) in &lin {
        for f16 in [false, true] {
            v.push(case("linear", Gemm::linear(m, n, k), true, f16));
        }
    }
    v.push(case("linear", Gemm::linear(5, 7, 3), false, false));
    v.push(case("bmm", Gemm::bmm(4, 3, 5, 9), false, false));
    v.push(case("bmm", Gemm::bmm(3, 70, 66, 33), false, false));
    v.push(case("bmm", Gemm::bmm(5, 1, 17, 40), false, false));
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
        true,
    ));
    v.push(case(
        "x-transposed",
        Gemm {
            batch: 1,
            m: 70,
            n: 9,
            k: 21,
            x_strides: [0, 1, 70],
            w_strides: [0, 21, 1],
            bias_on_rows: false,
            x_offset: 0,
            out_row_stride: 9,
            out_offset: 0,
        },
        true,
        false,
    ));
    // 1x1 convs over channels, bias per output channel (rows), including the GEMV path.
    for (r, cout, cin, n) in [(8, 32, 32, 16), (3, 17, 5, 33), (2, 3, 40, 7), (1, 1, 1, 1)] {
        v.push(case(
            "channels",
            Gemm::channels(r, cout, cin, n),
            true,
            false,
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn matmul_matches_reference_over_shape_sweep() {
        crate::harness::assert_cases(super::cases());
    }
}
