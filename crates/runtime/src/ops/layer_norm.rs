//! LayerNorm over the last dimension (`shaders/layer_norm.wgsl`); subgroup reductions where
//! enabled, a workgroup-memory tree otherwise.

use bytemuck::{Pod, Zeroable};

use super::{expect_dtype, expect_out, grid_rows};
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, output, Case, Feature};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::Recorder;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct RowParams {
    pub rows: u32,
    pub d: u32,
    pub eps: f32,
    pub _pad: u32,
}

/// `out = (x - mean) / sqrt(var + eps) * gamma + beta` over the last dim.
pub fn layer_norm_into(
    rec: &mut Recorder,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
    out: &Tensor,
) -> Result<()> {
    expect_dtype("layer_norm", "x", x, DType::F32)?;
    expect_out("layer_norm", out, x.shape(), DType::F32)?;
    let d = x.shape().last().copied().unwrap_or(0);
    if d == 0 || gamma.numel() != d || beta.numel() != d {
        return Err(shape_err(
            "layer_norm",
            format!(
                "x {:?}: gamma and beta must have {d} elements, got {} and {}",
                x.shape(),
                gamma.numel(),
                beta.numel()
            ),
        ));
    }
    let rows = x.numel() / d;
    let sg = rec.device().caps().subgroups;
    let key = PipelineKey::new(Shader::LayerNorm, "layer_norm", 3, 1).define_if("SUBGROUPS", sg);
    let p = RowParams {
        rows: rows as u32,
        d: d as u32,
        eps,
        _pad: 0,
    };
    rec.dispatch(&key, &p, &[x, gamma, beta], &[out], grid_rows(rows), || {
        OpInfo {
            name: "layer_norm",
            shape: x.shape_str(),
            bytes: 8 * x.numel() as u64,
            flops: 8 * x.numel() as u64,
        }
    })
}

pub fn layer_norm(
    rec: &mut Recorder,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    let out = rec.alloc(x.shape(), DType::F32)?;
    layer_norm_into(rec, x, gamma, beta, eps, &out)?;
    Ok(out)
}

/// f64 reference.
pub fn reference(x: &[f32], d: usize, gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(d) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
        let r = 1.0 / (var + eps as f64).sqrt();
        out.extend(
            row.iter()
                .enumerate()
                .map(|(i, &v)| (v as f64 - mean) * r * gamma[i] as f64 + beta[i] as f64),
        );
    }
    out
}

pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (rows, d) in [
        (1usize, 1usize),
        (1, 7),
        (3, 256),
        (17, 384),
        (2, 1000),
        (5, 2049),
    ] {
        v.push(
            Case::new(
                "layer_norm",
                format!("rows={rows} d={d}"),
                1e-11,
                move |dev, rng| {
                    let x = rng.vec(rows * d, -2.0, 3.0);
                    let g = rng.vec(d, 0.5, 1.5);
                    let b = rng.vec(d, -0.5, 0.5);
                    let (xt, gt, bt) = (
                        dev.tensor_f32(&x, &[rows, d])?,
                        dev.weight_f32(&g, &[d])?,
                        dev.weight_f32(&b, &[d])?,
                    );
                    let out = output(dev, &[rows, d], DType::F32)?;
                    let mut rec = dev.recorder("test");
                    layer_norm_into(&mut rec, &xt, &gt, &bt, 1e-5, &out)?;
                    rec.submit()?;
                    check_f32(dev, &out, &reference(&x, d, &g, &b, 1e-5))
                },
            )
            .feature(Feature::Subgroups),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn layer_norm_matches_reference_over_shape_sweep() {
        crate::harness::assert_cases(super::cases());
    }
}
