//! Mamba's causal depthwise conv1d with bias and SiLU (`shaders/causal_conv1d.wgsl`), over a
//! strided x `[B, L, D]` (the x half of in_proj's output), continuing from and writing the
//! conv state `[B, D, K - 1]`; and its one-token decoding step, updating the state in place.

use bytemuck::{Pod, Zeroable};

use super::{expect_dtype, grid_elems};
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, output, Case};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::Recorder;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    batch: u32,
    len: u32,
    d: u32,
    k: u32,
    x_stride: u32,
    has_state: u32,
    _pad: [u32; 2],
}

/// Shape of one conv problem: x rows of `x_stride` elements, D channels at their start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvLayout {
    pub batch: usize,
    pub len: usize,
    pub d: usize,
    /// Kernel width (d_conv), 2..=8.
    pub k: usize,
    pub x_stride: usize,
}

fn check(l: &ConvLayout, x: &Tensor, w: &Tensor, bias: &Tensor) -> Result<()> {
    expect_dtype("causal_conv1d", "x", x, DType::F32)?;
    expect_dtype("causal_conv1d", "w", w, DType::F32)?;
    if !(2..=8).contains(&l.k) || l.batch == 0 || l.len == 0 || l.d == 0 || l.x_stride < l.d {
        return Err(shape_err(
            "causal_conv1d",
            format!("unsupported layout {l:?} (width 2..=8)"),
        ));
    }
    if x.numel() < (l.batch * l.len - 1) * l.x_stride + l.d {
        return Err(shape_err(
            "causal_conv1d",
            format!("x {:?} is too small for {l:?}", x.shape()),
        ));
    }
    if w.numel() != l.d * l.k || bias.numel() != l.d {
        return Err(shape_err(
            "causal_conv1d",
            format!("weight must be [{}, 1, {}] and bias [{}]", l.d, l.k, l.d),
        ));
    }
    Ok(())
}

fn params(l: &ConvLayout, state: bool) -> Params {
    Params {
        batch: l.batch as u32,
        len: l.len as u32,
        d: l.d as u32,
        k: l.k as u32,
        x_stride: l.x_stride as u32,
        has_state: state as u32,
        _pad: [0; 2],
    }
}

/// `out [B, L, D] = silu(conv(x) + bias)`, continuing from `state_in` (zeros when None);
/// the last K - 1 inputs go to `state_out [B, D, K - 1]`.
#[allow(clippy::too_many_arguments)]
pub fn causal_conv1d_into(
    rec: &mut Recorder,
    l: &ConvLayout,
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    state_in: Option<&Tensor>,
    out: &Tensor,
    state_out: &Tensor,
) -> Result<()> {
    check(l, x, w, bias)?;
    let sn = l.batch * l.d * (l.k - 1);
    if out.numel() != l.batch * l.len * l.d
        || state_out.numel() != sn
        || state_in.is_some_and(|s| s.numel() != sn)
    {
        return Err(shape_err(
            "causal_conv1d",
            "out must be [B, L, D] and the states [B, D, K - 1]",
        ));
    }
    let key = PipelineKey::new(Shader::CausalConv1d, "causal_conv1d", 4, 2);
    let n = l.batch * l.len * l.d;
    rec.dispatch(
        &key,
        &params(l, state_in.is_some()),
        &[x, w, bias, state_in.unwrap_or(w)],
        &[out, state_out],
        grid_elems(rec, n),
        || OpInfo {
            name: "causal_conv1d",
            shape: format!("B={} L={} D={} K={}", l.batch, l.len, l.d, l.k),
            bytes: 8 * n as u64,
            flops: (2 * n * l.k) as u64,
        },
    )
}

/// One token per sequence: `out [B, D]`, the state `[B, D, K - 1]` shifted in place.
pub fn causal_conv1d_step(
    rec: &mut Recorder,
    l: &ConvLayout,
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    state: &Tensor,
    out: &Tensor,
) -> Result<()> {
    check_step(l, x, w, bias, state, out)?;
    let key = PipelineKey::new(Shader::CausalConv1d, "causal_conv1d_step", 3, 2);
    rec.dispatch(
        &key,
        &params(l, true),
        &[x, w, bias],
        &[out, state],
        grid_elems(rec, l.batch * l.d),
        || OpInfo {
            name: "causal_conv1d_step",
            shape: format!("B={} D={} K={}", l.batch, l.d, l.k),
            // The state read and written, x in, out; the weight and bias once.
            bytes: (4 * (l.batch * l.d * (2 * (l.k - 1) + 2) + l.d * (l.k + 1))) as u64,
            flops: (2 * l.batch * l.d * l.k) as u64,
        },
    )
}

/// The conv tensors of one decode step, for a launcher that runs the step in its own epilogue
/// ([`super::matmul::linear_conv_step`]): weight `[D, 1, K]`, bias `[D]`, the state
/// `[B, D, K - 1]` (updated in place) and the output `[B, D]`, all f32.
#[derive(Clone, Copy)]
pub struct ConvStep<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub state: &'a Tensor,
    pub out: &'a Tensor,
    /// Kernel width (d_conv), 2..=8.
    pub k: usize,
}

/// What [`causal_conv1d_step`] checks of its operands (`x` the step's input rows).
pub(crate) fn check_step(
    l: &ConvLayout,
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    state: &Tensor,
    out: &Tensor,
) -> Result<()> {
    if l.len != 1 {
        return Err(shape_err(
            "causal_conv1d_step",
            format!("one token per sequence, got len {}", l.len),
        ));
    }
    check(l, x, w, bias)?;
    expect_dtype("causal_conv1d_step", "bias", bias, DType::F32)?;
    expect_dtype("causal_conv1d_step", "state", state, DType::F32)?;
    expect_dtype("causal_conv1d_step", "out", out, DType::F32)?;
    if out.numel() != l.batch * l.d || state.numel() != l.batch * l.d * (l.k - 1) {
        return Err(shape_err(
            "causal_conv1d_step",
            format!(
                "out must be [B, D] and the state [B, D, K - 1] for {l:?}; got out {:?} and \
                 state {:?}",
                out.shape(),
                state.shape()
            ),
        ));
    }
    Ok(())
}

/// f64 reference: `(out, new state)`.
pub fn reference(
    l: &ConvLayout,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    state: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>) {
    let km1 = l.k - 1;
    let at = |b: usize, pos: isize, c: usize| -> f64 {
        if pos >= 0 {
            x[(b * l.len + pos as usize) * l.x_stride + c] as f64
        } else {
            state.map_or(0.0, |s| {
                s[(b * l.d + c) * km1 + (km1 as isize + pos) as usize] as f64
            })
        }
    };
    let silu = |v: f64| v / (1.0 + (-v).exp());
    let mut out = vec![0.0; l.batch * l.len * l.d];
    let mut st = vec![0.0; l.batch * l.d * km1];
    for b in 0..l.batch {
        for c in 0..l.d {
            for t in 0..l.len {
                let mut acc = bias[c] as f64;
                for j in 0..l.k {
                    acc += w[c * l.k + j] as f64 * at(b, t as isize - km1 as isize + j as isize, c);
                }
                out[(b * l.len + t) * l.d + c] = silu(acc);
            }
            for j in 0..km1 {
                st[(b * l.d + c) * km1 + j] = at(b, l.len as isize - km1 as isize + j as isize, c);
            }
        }
    }
    (out, st)
}

pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (batch, len, d, k, stride, state) in [
        (1usize, 1usize, 1usize, 4usize, 1usize, false),
        (2, 7, 5, 4, 10, true),
        (1, 2, 3, 4, 3, true),
        (3, 65, 33, 4, 66, false),
        (1, 9, 4, 2, 4, true),
    ] {
        v.push(Case::new(
            "causal_conv1d",
            format!(
                "B={batch} L={len} D={d} K={k} stride={stride}{}",
                if state { " +state" } else { "" }
            ),
            1e-11,
            move |dev, rng| {
                let l = ConvLayout {
                    batch,
                    len,
                    d,
                    k,
                    x_stride: stride,
                };
                let x = rng.vec(batch * len * stride, -2.0, 2.0);
                let w = rng.vec(d * k, -1.0, 1.0);
                let b = rng.vec(d, -0.5, 0.5);
                let s0 = rng.vec(batch * d * (k - 1), -1.0, 1.0);
                let (xt, wt, bt, st) = (
                    dev.tensor_f32(&x, &[x.len()])?,
                    dev.weight_f32(&w, &[d, 1, k])?,
                    dev.weight_f32(&b, &[d])?,
                    dev.tensor_f32(&s0, &[batch, d, k - 1])?,
                );
                let out = output(dev, &[batch, len, d], DType::F32)?;
                let so = output(dev, &[batch, d, k - 1], DType::F32)?;
                let mut rec = dev.recorder("test");
                causal_conv1d_into(&mut rec, &l, &xt, &wt, &bt, state.then_some(&st), &out, &so)?;
                rec.submit()?;
                let (wo, ws) = reference(&l, &x, &w, &b, state.then_some(&s0));
                Ok(check_f32(dev, &out, &wo)?.merge(check_f32(dev, &so, &ws)?))
            },
        ));
    }
    for (batch, d, k, stride) in [
        (1usize, 1usize, 4usize, 1usize),
        (3, 37, 4, 74),
        (2, 8, 3, 8),
    ] {
        v.push(Case::new(
            "causal_conv1d_step",
            format!("B={batch} D={d} K={k}"),
            1e-11,
            move |dev, rng| {
                let l = ConvLayout {
                    batch,
                    len: 1,
                    d,
                    k,
                    x_stride: stride,
                };
                let x = rng.vec(batch * stride, -2.0, 2.0);
                let w = rng.vec(d * k, -1.0, 1.0);
                let b = rng.vec(d, -0.5, 0.5);
                let s0 = rng.vec(batch * d * (k - 1), -1.0, 1.0);
                let (xt, wt, bt) = (
                    dev.tensor_f32(&x, &[x.len()])?,
                    dev.weight_f32(&w, &[d, 1, k])?,
                    dev.weight_f32(&b, &[d])?,
                );
                let st = dev.alloc_with_capacity(&[batch, d, k - 1], DType::F32, 0)?;
                dev.write(&st, bytemuck::cast_slice(&s0))?;
                let out = output(dev, &[batch, d], DType::F32)?;
                let mut rec = dev.recorder("test");
                causal_conv1d_step(&mut rec, &l, &xt, &wt, &bt, &st, &out)?;
                rec.submit()?;
                let (wo, ws) = reference(&l, &x, &w, &b, Some(&s0));
                let c = check_f32(dev, &out, &wo)?;
                let got = dev.read_f32(&st)?;
                let mism = got
                    .iter()
                    .zip(&ws)
                    .filter(|(g, r)| (**g as f64 - **r).abs() > 0.0)
                    .count();
                Ok(crate::harness::Check {
                    mismatches: mism,
                    ..c
                })
            },
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn causal_conv1d_matches_reference_over_shape_sweep() {
        crate::harness::assert_cases(super::cases());
    }
}
