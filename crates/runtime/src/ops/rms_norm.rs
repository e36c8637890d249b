//! RMSNorm with an optional fused residual add (`shaders/rms_norm.wgsl`), as Mamba's blocks:
//! `residual = x + residual; y = residual / sqrt(mean(residual^2) + eps) * weight`.

use super::layer_norm::RowParams;
use super::{expect_dtype, expect_out, grid_rows};
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, output, Case, Feature};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::Recorder;
use crate::tensor::{DType, Tensor};

fn check(x: &Tensor, weight: &Tensor) -> Result<(usize, usize)> {
    expect_dtype("rms_norm", "x", x, DType::F32)?;
    let d = x.shape().last().copied().unwrap_or(0);
    if d == 0 || weight.numel() != d {
        return Err(shape_err(
            "rms_norm",
            format!(
                "x {:?} needs a weight of {d} elements, got {}",
                x.shape(),
                weight.numel()
            ),
        ));
    }
    Ok((x.numel() / d, d))
}

fn key(rec: &Recorder, entry: &'static str, inputs: u8, outputs: u8) -> PipelineKey {
    PipelineKey::new(Shader::RmsNorm, entry, inputs, outputs)
        .define_if("SUBGROUPS", rec.device().caps().subgroups)
}

/// `out = x / rms(x) * weight` over the last dim.
pub fn rms_norm_into(
    rec: &mut Recorder,
    x: &Tensor,
    weight: &Tensor,
    eps: f32,
    out: &Tensor,
) -> Result<()> {
    let (rows, d) = check(x, weight)?;
    expect_out("rms_norm", out, x.shape(), DType::F32)?;
    let p = RowParams {
        rows: rows as u32,
        d: d as u32,
        eps,
        _pad: 0,
    };
    let k = key(rec, "rms_norm", 2, 1);
    rec.dispatch(&k, &p, &[x, weight], &[out], grid_rows(rows), || OpInfo {
        name: "rms_norm",
        shape: x.shape_str(),
        bytes: 8 * x.numel() as u64,
        flops: 4 * x.numel() as u64,
    })
}

pub fn rms_norm(rec: &mut Recorder, x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    let out = rec.device().alloc(x.shape(), DType::F32)?;
    rms_norm_into(rec, x, weight, eps, &out)?;
    Ok(out)
}

/// Fused `sum = x + residual; out = rms_norm(sum)`, writing both.
pub fn add_rms_norm_into(
    rec: &mut Recorder,
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    eps: f32,
    out: &Tensor,
    sum: &Tensor,
) -> Result<()> {
    let (rows, d) = check(x, weight)?;
    expect_dtype("rms_norm", "residual", residual, DType::F32)?;
    if residual.shape() != x.shape() {
        return Err(shape_err(
            "rms_norm",
            format!(
                "residual {:?} differs from x {:?}",
                residual.shape(),
                x.shape()
            ),
        ));
    }
    expect_out("rms_norm", out, x.shape(), DType::F32)?;
    expect_out("rms_norm", sum, x.shape(), DType::F32)?;
    let p = RowParams {
        rows: rows as u32,
        d: d as u32,
        eps,
        _pad: 0,
    };
    let k = key(rec, "add_rms_norm", 3, 2);
    rec.dispatch(
        &k,
        &p,
        &[x, residual, weight],
        &[out, sum],
        grid_rows(rows),
        || OpInfo {
            name: "add_rms_norm",
            shape: x.shape_str(),
            bytes: 16 * x.numel() as u64,
            flops: 5 * x.numel() as u64,
        },
    )
}

/// Fused add + RMSNorm into new tensors: `(normalised, new residual)`.
pub fn add_rms_norm(
    rec: &mut Recorder,
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    let out = rec.device().alloc(x.shape(), DType::F32)?;
    let sum = rec.device().alloc(x.shape(), DType::F32)?;
    add_rms_norm_into(rec, x, residual, weight, eps, &out, &sum)?;
    Ok((out, sum))
}

/// f64 reference; returns (normalised, residual sum).
pub fn reference(
    x: &[f32],
    residual: Option<&[f32]>,
    d: usize,
    weight: &[f32],
    eps: f32,
) -> (Vec<f64>, Vec<f64>) {
    let sum: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| v as f64 + residual.map_or(0.0, |r| r[i] as f64))
        .collect();
    let mut out = Vec::with_capacity(x.len());
    for row in sum.chunks(d) {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
        let r = 1.0 / (ms + eps as f64).sqrt();
        out.extend(
            row.iter()
                .enumerate()
                .map(|(i, v)| v * r * weight[i] as f64),
        );
    }
    (out, sum)
}

pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (rows, d) in [
        (1usize, 1usize),
        (1, 7),
        (3, 256),
        (17, 768),
        (2, 1000),
        (4, 1537),
    ] {
        for fused in [false, true] {
            let op = if fused { "add_rms_norm" } else { "rms_norm" };
            v.push(
                Case::new(op, format!("rows={rows} d={d}"), 1e-11, move |dev, rng| {
                    let x = rng.vec(rows * d, -2.0, 2.0);
                    let r = rng.vec(rows * d, -2.0, 2.0);
                    let w = rng.vec(d, 0.5, 1.5);
                    let (xt, rt, wt) = (
                        dev.tensor_f32(&x, &[rows, d])?,
                        dev.tensor_f32(&r, &[rows, d])?,
                        dev.weight_f32(&w, &[d])?,
                    );
                    let out = output(dev, &[rows, d], DType::F32)?;
                    let sum = output(dev, &[rows, d], DType::F32)?;
                    let mut rec = dev.recorder("test");
                    if fused {
                        add_rms_norm_into(&mut rec, &xt, &rt, &wt, 1e-5, &out, &sum)?;
                    } else {
                        rms_norm_into(&mut rec, &xt, &wt, 1e-5, &out)?;
                    }
                    rec.submit()?;
                    let (want, want_sum) = reference(&x, fused.then_some(&r), d, &w, 1e-5);
                    let c = check_f32(dev, &out, &want)?;
                    Ok(if fused {
                        c.merge(check_f32(dev, &sum, &want_sum)?)
                    } else {
                        c
                    })
                })
                .feature(Feature::Subgroups),
            );
        }
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn rms_norm_matches_reference_over_shape_sweep() {
        crate::harness::assert_cases(super::cases());
    }
}
