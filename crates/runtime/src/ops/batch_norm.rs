//! Eval-mode BatchNorm (`shaders/batch_norm.wgsl`) as a per-channel affine, and its load-time
//! fold into a preceding conv or linear layer.

use bytemuck::{Pod, Zeroable};

use super::{expect_dtype, expect_out, grid_elems};
use crate::device::Device;
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, output, Case};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::Recorder;
use crate::tensor::{DType, Tensor};

/// A BatchNorm layer's parameters on the host (`weight, bias, running_mean, running_var`).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormParams {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
    /// 1e-5 in PyTorch unless the model says otherwise.
    pub eps: f32,
}

impl BatchNormParams {
    pub fn channels(&self) -> usize {
        self.weight.len()
    }
    /// `alpha = weight / sqrt(var + eps)` and `beta = bias - mean * alpha`, in f32 as
    /// PyTorch's CPU inference computes them.
    pub fn alpha_beta(&self) -> (Vec<f32>, Vec<f32>) {
        let alpha: Vec<f32> = self
            .weight
            .iter()
            .zip(&self.running_var)
            .map(|(&w, &v)| (1.0f32 / (v + self.eps).sqrt()) * w)
            .collect();
        let beta = self
            .bias
            .iter()
            .zip(&self.running_mean)
            .zip(&alpha)
            .map(|((&b, &m), &a)| b - m * a)
            .collect();
        (alpha, beta)
    }
    /// Folds this BN into the layer before it: `weight [Cout, ...]` rows scale by alpha, and
    /// the bias becomes `bias * alpha + beta` (created when the layer had none).
    pub fn fold_into(&self, weight: &mut [f32], bias: Option<&[f32]>) -> Result<Vec<f32>> {
        let c = self.channels();
        if c == 0 || !weight.len().is_multiple_of(c) {
            return Err(shape_err(
                "batch_norm_fold",
                format!("weight of {} elements has no {c} output rows", weight.len()),
            ));
        }
        let (alpha, beta) = self.alpha_beta();
        let per = weight.len() / c;
        for (row, &a) in weight.chunks_mut(per).zip(&alpha) {
            row.iter_mut().for_each(|w| *w *= a);
        }
        Ok((0..c)
            .map(|i| bias.map_or(0.0, |b| b[i]) * alpha[i] + beta[i])
            .collect())
    }
    /// f64 reference of the layer applied to `x [N, C, S]`.
    pub fn reference(&self, x: &[f32], s: usize) -> Vec<f64> {
        let c = self.channels();
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let ch = (i / s) % c;
                (v as f64 - self.running_mean[ch] as f64)
                    / (self.running_var[ch] as f64 + self.eps as f64).sqrt()
                    * self.weight[ch] as f64
                    + self.bias[ch] as f64
            })
            .collect()
    }
}

/// A BatchNorm ready to run: alpha and beta on the GPU.
pub struct BatchNorm {
    pub alpha: Tensor,
    pub beta: Tensor,
}

impl BatchNorm {
    pub fn new(dev: &Device, p: &BatchNormParams) -> Result<Self> {
        let c = p.channels();
        if [p.bias.len(), p.running_mean.len(), p.running_var.len()]
            .iter()
            .any(|&l| l != c)
        {
            return Err(shape_err(
                "batch_norm",
                "weight, bias, running_mean and running_var differ in length",
            ));
        }
        let (a, b) = p.alpha_beta();
        Ok(Self {
            alpha: dev.weight_f32(&a, &[c])?,
            beta: dev.weight_f32(&b, &[c])?,
        })
    }
    pub fn channels(&self) -> usize {
        self.alpha.numel()
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    c: u32,
    s: u32,
    _pad: u32,
}

/// BatchNorm over dim 1 of `x [N, C, ...]`.
pub fn batch_norm_into(rec: &mut Recorder, x: &Tensor, bn: &BatchNorm, out: &Tensor) -> Result<()> {
    expect_dtype("batch_norm", "x", x, DType::F32)?;
    expect_out("batch_norm", out, x.shape(), DType::F32)?;
    let c = bn.channels();
    if x.rank() < 2 || x.dim(1) != c {
        return Err(shape_err(
            "batch_norm",
            format!("x {:?} does not have {c} channels in dim 1", x.shape()),
        ));
    }
    let s: usize = x.shape()[2..].iter().product();
    let n = x.numel();
    let p = Params {
        n: n as u32,
        c: c as u32,
        s: s as u32,
        _pad: 0,
    };
    let key = PipelineKey::new(Shader::BatchNorm, "channel_affine", 3, 1);
    rec.dispatch(
        &key,
        &p,
        &[x, &bn.alpha, &bn.beta],
        &[out],
        grid_elems(rec, n),
        || OpInfo {
            name: "batch_norm",
            shape: x.shape_str(),
            bytes: 8 * n as u64,
            flops: 2 * n as u64,
        },
    )
}

pub fn batch_norm(rec: &mut Recorder, x: &Tensor, bn: &BatchNorm) -> Result<Tensor> {
    let out = rec.alloc(x.shape(), DType::F32)?;
    batch_norm_into(rec, x, bn, &out)?;
    Ok(out)
}

/// Random BN parameters of `c` channels, for tests and benchmarks.
pub fn random_params(rng: &mut crate::harness::Rng, c: usize) -> BatchNormParams {
    BatchNormParams {
        weight: rng.vec(c, 0.5, 1.5),
        bias: rng.vec(c, -0.5, 0.5),
        running_mean: rng.vec(c, -0.5, 0.5),
        running_var: rng.vec(c, 0.2, 2.0),
        eps: 1e-5,
    }
}

/// Harness cases: the affine over shapes, and conv + BN folded vs unfolded.
pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for shape in [
        vec![1, 1],
        vec![2, 3],
        vec![1, 5, 7],
        vec![2, 16, 9, 11],
        vec![3, 33, 1, 1],
    ] {
        v.push(Case::new(
            "batch_norm",
            format!("x={shape:?}"),
            1e-12,
            move |dev, rng| {
                let c = shape[1];
                let p = random_params(rng, c);
                let x = rng.vec(shape.iter().product(), -3.0, 3.0);
                let bn = BatchNorm::new(dev, &p)?;
                let xt = dev.tensor_f32(&x, &shape)?;
                let out = output(dev, &shape, DType::F32)?;
                let mut rec = dev.recorder("test");
                batch_norm_into(&mut rec, &xt, &bn, &out)?;
                rec.submit()?;
                check_f32(dev, &out, &p.reference(&x, shape[2..].iter().product()))
            },
        ));
    }
    for bias in [false, true] {
        v.push(Case::new(
            "batch_norm_fold",
            format!("conv 3x3 + bn, bias={bias}"),
            1e-11,
            move |dev, rng| {
                use super::conv::{conv2d_into, reference, Conv2d};
                let (xs, ws) = ([2usize, 3, 8, 7], [5usize, 3, 3, 3]);
                let c = Conv2d::new(1, 1);
                let x = rng.vec(xs.iter().product(), -1.0, 1.0);
                let w = rng.vec(ws.iter().product(), -1.0, 1.0);
                let b = rng.vec(5, -1.0, 1.0);
                let p = random_params(rng, 5);
                let conv = reference(&x, xs, &w, ws, bias.then_some(&b), &c);
                let want: Vec<f64> = {
                    conv.iter()
                        .enumerate()
                        .map(|(i, &v)| {
                            let ch = (i / 56) % 5;
                            (v - p.running_mean[ch] as f64)
                                / (p.running_var[ch] as f64 + 1e-5).sqrt()
                                * p.weight[ch] as f64
                                + p.bias[ch] as f64
                        })
                        .collect()
                };
                let mut wf = w.clone();
                let bf = p.fold_into(&mut wf, bias.then_some(&b))?;
                let (xt, wt, bt) = (
                    dev.tensor_f32(&x, &xs)?,
                    dev.weight_f32(&wf, &ws)?,
                    dev.weight_f32(&bf, &[5])?,
                );
                let out = output(dev, &[2, 5, 8, 7], DType::F32)?;
                let mut rec = dev.recorder("test");
                conv2d_into(&mut rec, &xt, &wt, Some(&bt), &c, &out)?;
                rec.submit()?;
                check_f32(dev, &out, &want)
            },
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn batch_norm_matches_reference_over_shape_sweep() {
        crate::harness::assert_cases(super::cases());
    }
}
