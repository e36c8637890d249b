//! Token-axis data movement for sequence models laid out `[N, B, C]` (`shaders/tokens.wgsl`):
//! the im2col of a 1-D convolution along tokens (whole sequence and one token at a time),
//! column copies (concatenation along the last axis) and the running mean over tokens.

use bytemuck::{Pod, Zeroable};

use super::{expect_dtype, grid_elems};
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, f64s, output, Case};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::Recorder;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
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

/// How `unfold` reads its input: `n` tokens, `b` sequences, `c` channels, with element
/// strides between sequences and between tokens (channels contiguous).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenLayout {
    pub n: usize,
    pub b: usize,
    pub c: usize,
    pub stride_b: usize,
    pub stride_t: usize,
}

impl TokenLayout {
    /// `[N, B, C]`, token-major.
    pub fn token_major(n: usize, b: usize, c: usize) -> Self {
        Self {
            n,
            b,
            c,
            stride_b: c,
            stride_t: b * c,
        }
    }
    /// `[B, N, C]`, batch-major (a model input).
    pub fn batch_major(n: usize, b: usize, c: usize) -> Self {
        Self {
            n,
            b,
            c,
            stride_b: n * c,
            stride_t: c,
        }
    }
    fn max_index(&self) -> usize {
        (self.b - 1) * self.stride_b + (self.n - 1) * self.stride_t + self.c - 1
    }
}

/// `out [N, B, K·C]`: the window of `k` tokens around each token (zero padding `pad`), so a
/// GEMM with weights `[Cout, K, Cin]` is the convolution.
pub fn unfold_into(
    rec: &mut Recorder,
    x: &Tensor,
    l: &TokenLayout,
    k: usize,
    pad: usize,
    out: &Tensor,
) -> Result<()> {
    expect_dtype("unfold", "x", x, DType::F32)?;
    expect_dtype("unfold", "out", out, DType::F32)?;
    if l.n == 0 || l.b == 0 || l.c == 0 || k == 0 || pad >= k || l.max_index() >= x.numel() {
        return Err(shape_err(
            "unfold",
            format!(
                "{l:?} with kernel {k}, padding {pad} does not fit x {:?}",
                x.shape()
            ),
        ));
    }
    let total = l.n * l.b * k * l.c;
    if out.numel() != total {
        return Err(shape_err(
            "unfold",
            format!("output needs {total} elements, has {:?}", out.shape()),
        ));
    }
    let p = Params {
        n: l.n as u32,
        b: l.b as u32,
        c: l.c as u32,
        k: k as u32,
        pad: pad as u32,
        xs_b: l.stride_b as u32,
        xs_t: l.stride_t as u32,
        ..Params::default()
    };
    let key = PipelineKey::new(Shader::Tokens, "unfold", 1, 1);
    rec.dispatch(&key, &p, &[x], &[out], grid_elems(rec, total), || OpInfo {
        name: "unfold",
        shape: format!("n={} b={} c={} k={k} pad={pad}", l.n, l.b, l.c),
        bytes: 4 * (l.n * l.b * l.c + total) as u64,
        flops: 0,
    })
}

/// Streaming [`unfold_into`]: shifts each row of `window [S, K·C]` left by C and appends
/// `x [S, C]`; the window then holds the last K tokens of each stream.
pub fn window_push(rec: &mut Recorder, window: &Tensor, x: &Tensor, k: usize) -> Result<()> {
    expect_dtype("window_push", "x", x, DType::F32)?;
    expect_dtype("window_push", "window", window, DType::F32)?;
    if x.rank() != 2 || k == 0 || window.numel() != x.numel() * k {
        return Err(shape_err(
            "window_push",
            format!(
                "window {:?} must hold {k} tokens of x {:?} ([S, C])",
                window.shape(),
                x.shape()
            ),
        ));
    }
    let (s, c) = (x.dim(0), x.dim(1));
    let p = Params {
        b: s as u32,
        c: c as u32,
        k: k as u32,
        ..Params::default()
    };
    let key = PipelineKey::new(Shader::Tokens, "window_push", 1, 1);
    rec.dispatch(&key, &p, &[x], &[window], grid_elems(rec, s * c), || {
        OpInfo {
            name: "window_push",
            shape: format!("s={s} c={c} k={k}"),
            bytes: 4 * (s * c * (2 * k)) as u64,
            flops: 0,
        }
    })
}

/// Where [`copy_cols`] reads or writes: rows of `stride` elements, starting `offset` in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cols {
    pub stride: usize,
    pub offset: usize,
}

/// Copies `cols` columns of `rows` rows from `src` into `dst` (e.g. one operand of a
/// concatenation along the last axis).
pub fn copy_cols(
    rec: &mut Recorder,
    src: &Tensor,
    from: Cols,
    dst: &Tensor,
    to: Cols,
    rows: usize,
    cols: usize,
) -> Result<()> {
    expect_dtype("copy_cols", "src", src, DType::F32)?;
    expect_dtype("copy_cols", "dst", dst, DType::F32)?;
    let fits = |t: &Tensor, c: Cols| {
        c.offset + cols <= c.stride && (rows - 1) * c.stride + c.offset + cols <= t.numel()
    };
    if rows == 0 || cols == 0 || !fits(src, from) || !fits(dst, to) {
        return Err(shape_err(
            "copy_cols",
            format!(
                "{rows} rows of {cols} columns from {from:?} of {:?} to {to:?} of {:?}",
                src.shape(),
                dst.shape()
            ),
        ));
    }
    let p = Params {
        n: rows as u32,
        c: cols as u32,
        src_stride: from.stride as u32,
        src_off: from.offset as u32,
        dst_stride: to.stride as u32,
        dst_off: to.offset as u32,
        ..Params::default()
    };
    let key = PipelineKey::new(Shader::Tokens, "copy_cols", 1, 1);
    rec.dispatch(
        &key,
        &p,
        &[src],
        &[dst],
        grid_elems(rec, rows * cols),
        || OpInfo {
            name: "copy_cols",
            shape: format!("rows={rows} cols={cols}"),
            bytes: 8 * (rows * cols) as u64,
            flops: 0,
        },
    )
}

/// `out[t] = mean(x[0..=t])` over the leading token axis of `x [N, ...]`.
pub fn running_mean_into(rec: &mut Recorder, x: &Tensor, out: &Tensor) -> Result<()> {
    expect_dtype("running_mean", "x", x, DType::F32)?;
    if x.rank() < 1 || x.dim(0) == 0 || out.shape() != x.shape() || out.dtype() != DType::F32 {
        return Err(shape_err(
            "running_mean",
            format!("x {:?} and out {:?} must match", x.shape(), out.shape()),
        ));
    }
    let n = x.dim(0);
    let r = x.numel() / n;
    let p = Params {
        n: n as u32,
        c: r as u32,
        ..Params::default()
    };
    let key = PipelineKey::new(Shader::Tokens, "running_mean", 1, 1);
    rec.dispatch(&key, &p, &[x], &[out], grid_elems(rec, r), || OpInfo {
        name: "running_mean",
        shape: x.shape_str(),
        bytes: 8 * x.numel() as u64,
        flops: 2 * x.numel() as u64,
    })
}

/// One token of [`running_mean_into`]: `sum += x; out = sum / count` (`count` = tokens seen,
/// this one included).
pub fn running_mean_step(
    rec: &mut Recorder,
    x: &Tensor,
    sum: &Tensor,
    count: usize,
    out: &Tensor,
) -> Result<()> {
    expect_dtype("running_mean", "x", x, DType::F32)?;
    if sum.numel() != x.numel() || out.numel() != x.numel() || count == 0 {
        return Err(shape_err(
            "running_mean",
            format!(
                "x {:?}, sum {:?}, out {:?} must have equal sizes (count {count} >= 1)",
                x.shape(),
                sum.shape(),
                out.shape()
            ),
        ));
    }
    let p = Params {
        c: x.numel() as u32,
        count: count as u32,
        ..Params::default()
    };
    let key = PipelineKey::new(Shader::Tokens, "running_mean_step", 1, 2);
    rec.dispatch(
        &key,
        &p,
        &[x],
        &[sum, out],
        grid_elems(rec, x.numel()),
        || OpInfo {
            name: "running_mean_step",
            shape: x.shape_str(),
            bytes: 16 * x.numel() as u64,
            flops: 2 * x.numel() as u64,
        },
    )
}

/// f64 reference of [`unfold_into`].
pub fn reference_unfold(x: &[f32], l: &TokenLayout, k: usize, pad: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(l.n * l.b * k * l.c);
    for t in 0..l.n {
        for b in 0..l.b {
            for kk in 0..k {
                for c in 0..l.c {
                    let tt = t as isize + kk as isize - pad as isize;
                    out.push(if tt >= 0 && (tt as usize) < l.n {
                        x[b * l.stride_b + tt as usize * l.stride_t + c] as f64
                    } else {
                        0.0
                    });
                }
            }
        }
    }
    out
}

/// Reference of [`running_mean_into`] in the kernel's f32 arithmetic.
pub fn reference_running_mean(x: &[f32], n: usize) -> Vec<f32> {
    let r = x.len() / n;
    let mut out = vec![0.0; x.len()];
    for j in 0..r {
        let mut s = 0.0f32;
        for t in 0..n {
            s += x[t * r + j];
            out[t * r + j] = s / (t + 1) as f32;
        }
    }
    out
}

pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (n, b, c, k, batch_major) in [
        (1, 1, 1, 3, false),
        (7, 3, 5, 3, true),
        (128, 2, 33, 3, false),
        (128, 2, 33, 3, true),
        (9, 1, 4, 5, false),
        (4, 2, 3, 1, true),
    ] {
        v.push(Case::new(
            "unfold",
            format!(
                "n={n},b={b},c={c},k={k},{}",
                if batch_major { "bnc" } else { "nbc" }
            ),
            0.0,
            move |dev, rng| {
                let l = if batch_major {
                    TokenLayout::batch_major(n, b, c)
                } else {
                    TokenLayout::token_major(n, b, c)
                };
                let x = rng.vec(n * b * c, -2.0, 2.0);
                let xt = dev.tensor_f32(&x, &[n * b * c])?;
                let out = output(dev, &[n, b, k * c], DType::F32)?;
                let mut rec = dev.recorder("test");
                unfold_into(&mut rec, &xt, &l, k, k / 2, &out)?;
                rec.submit()?;
                check_f32(dev, &out, &reference_unfold(&x, &l, k, k / 2))
            },
        ));
    }
    // Streaming windows reproduce the whole-sequence unfold token by token.
    for (n, s, c, k) in [(1, 1, 1, 3), (6, 3, 7, 3), (5, 2, 4, 5)] {
        v.push(Case::new(
            "window_push",
            format!("n={n},s={s},c={c},k={k}"),
            0.0,
            move |dev, rng| {
                let x = rng.vec(n * s * c, -2.0, 2.0);
                let win = dev.tensor_f32(&vec![0.0; s * k * c], &[s, k * c])?;
                let mut got = Vec::new();
                for t in 0..n {
                    let xt = dev.tensor_f32(&x[t * s * c..(t + 1) * s * c], &[s, c])?;
                    let mut rec = dev.recorder("test");
                    window_push(&mut rec, &win, &xt, k)?;
                    rec.submit()?;
                    got.extend(dev.read_f32(&win)?);
                }
                // Token t's window is the unfold (no right context) of position t - (k - 1).
                let l = TokenLayout::token_major(n + k - 1, s, c);
                let mut padded = vec![0.0; (k - 1) * s * c];
                padded.extend_from_slice(&x);
                let want = reference_unfold(&padded, &l, k, 0);
                let out = output(dev, &[got.len()], DType::F32)?;
                dev.write(&out, bytemuck::cast_slice(&got))?;
                check_f32(dev, &out, &want[..got.len()])
            },
        ));
    }
    for (rows, cols, from, to) in [
        (
            1,
            1,
            Cols {
                stride: 1,
                offset: 0,
            },
            Cols {
                stride: 1,
                offset: 0,
            },
        ),
        (
            7,
            5,
            Cols {
                stride: 5,
                offset: 0,
            },
            Cols {
                stride: 12,
                offset: 7,
            },
        ),
        (
            300,
            33,
            Cols {
                stride: 99,
                offset: 33,
            },
            Cols {
                stride: 33,
                offset: 0,
            },
        ),
    ] {
        v.push(Case::new(
            "copy_cols",
            format!("rows={rows},cols={cols},src={from:?},dst={to:?}"),
            0.0,
            move |dev, rng| {
                let src = rng.vec(rows * from.stride, -1.0, 1.0);
                let st = dev.tensor_f32(&src, &[rows * from.stride])?;
                let out = output(dev, &[rows * to.stride], DType::F32)?;
                let mut rec = dev.recorder("test");
                copy_cols(&mut rec, &st, from, &out, to, rows, cols)?;
                rec.submit()?;
                // Only the copied columns are compared; the rest must stay untouched.
                let got = dev.read_f32(&out)?;
                let mut want = Vec::new();
                let mut have = Vec::new();
                for r in 0..rows {
                    for c in 0..to.stride {
                        let g = got[r * to.stride + c];
                        if c >= to.offset && c < to.offset + cols {
                            want.push(src[r * from.stride + from.offset + c - to.offset] as f64);
                            have.push(g);
                        } else if g.to_bits() != crate::harness::POISON {
                            return Err(shape_err("copy_cols", "wrote outside its columns"));
                        }
                    }
                }
                let o = output(dev, &[have.len()], DType::F32)?;
                dev.write(&o, bytemuck::cast_slice(&have))?;
                check_f32(dev, &o, &want)
            },
        ));
    }
    // The sums are the reference's, in its order; the division is not exact on every GPU:
    // WGSL (and Vulkan) allow 2.5 ULP for f32 division, and an H200 misses the correctly
    // rounded quotient by about that (nmse 1e-15 to 2e-15; lavapipe divides exactly). The
    // bound is that: 2.5 ULP relative is nmse 4e-14.
    const DIV_NMSE: f64 = 1e-13;
    for (n, r) in [(1, 1), (5, 3), (128, 70), (300, 2)] {
        v.push(Case::new(
            "running_mean",
            format!("n={n},r={r}"),
            DIV_NMSE,
            move |dev, rng| {
                let x = rng.vec(n * r, -2.0, 2.0);
                let xt = dev.tensor_f32(&x, &[n, r])?;
                let out = output(dev, &[n, r], DType::F32)?;
                let mut rec = dev.recorder("test");
                running_mean_into(&mut rec, &xt, &out)?;
                rec.submit()?;
                check_f32(dev, &out, &f64s(&reference_running_mean(&x, n)))
            },
        ));
        v.push(Case::new(
            "running_mean_step",
            format!("n={n},r={r}"),
            DIV_NMSE,
            move |dev, rng| {
                let x = rng.vec(n * r, -2.0, 2.0);
                let sum = dev.tensor_f32(&vec![0.0; r], &[r])?;
                let mut got = Vec::new();
                for t in 0..n {
                    let xt = dev.tensor_f32(&x[t * r..(t + 1) * r], &[r])?;
                    let o = output(dev, &[r], DType::F32)?;
                    let mut rec = dev.recorder("test");
                    running_mean_step(&mut rec, &xt, &sum, t + 1, &o)?;
                    rec.submit()?;
                    got.extend(dev.read_f32(&o)?);
                }
                let out = output(dev, &[n * r], DType::F32)?;
                dev.write(&out, bytemuck::cast_slice(&got))?;
                check_f32(dev, &out, &f64s(&reference_running_mean(&x, n)))
            },
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_ops_match_reference_over_shape_sweep() {
        crate::harness::assert_cases(super::cases());
    }
}
