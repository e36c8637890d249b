//! Mean over one axis (`shaders/reduce.wgsl`).

use bytemuck::{Pod, Zeroable};

use super::{expect_dtype, expect_out, grid_elems};
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, output, Case};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::Recorder;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    outer: u32,
    axis: u32,
    inner: u32,
    _pad: u32,
}

/// (outer, axis, inner) sizes and the output shape (the axis removed).
fn split(shape: &[usize], axis: usize) -> Result<(usize, usize, usize, Vec<usize>)> {
    if axis >= shape.len() || shape[axis] == 0 {
        return Err(shape_err(
            "mean",
            format!("axis {axis} of {shape:?} is out of range or empty"),
        ));
    }
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    let mut out = shape.to_vec();
    out.remove(axis);
    Ok((outer, shape[axis], inner, out))
}

/// Mean of `x` over `axis`; the output drops that axis.
pub fn mean_into(rec: &mut Recorder, x: &Tensor, axis: usize, out: &Tensor) -> Result<()> {
    expect_dtype("mean", "x", x, DType::F32)?;
    let (outer, a, inner, os) = split(x.shape(), axis)?;
    expect_out("mean", out, &os, DType::F32)?;
    let p = Params {
        outer: outer as u32,
        axis: a as u32,
        inner: inner as u32,
        _pad: 0,
    };
    let key = PipelineKey::new(Shader::Reduce, "mean_axis", 1, 1);
    rec.dispatch(
        &key,
        &p,
        &[x],
        &[out],
        grid_elems(rec, outer * inner),
        || OpInfo {
            name: "mean",
            shape: format!("{:?} axis={axis}", x.shape()),
            bytes: 4 * (x.numel() + out.numel()) as u64,
            flops: x.numel() as u64,
        },
    )
}

pub fn mean(rec: &mut Recorder, x: &Tensor, axis: usize) -> Result<Tensor> {
    let os = split(x.shape(), axis)?.3;
    let out = rec.alloc(&os, DType::F32)?;
    mean_into(rec, x, axis, &out)?;
    Ok(out)
}

/// f64 reference.
pub fn reference(x: &[f32], shape: &[usize], axis: usize) -> Vec<f64> {
    let (outer, a, inner, _) = split(shape, axis).expect("valid axis");
    let mut out = vec![0.0; outer * inner];
    for o in 0..outer {
        for i in 0..inner {
            out[o * inner + i] = (0..a)
                .map(|j| x[(o * a + j) * inner + i] as f64)
                .sum::<f64>()
                / a as f64;
        }
    }
    out
}

pub fn cases() -> Vec<Case> {
    let list: Vec<(Vec<usize>, usize)> = vec![
        (vec![1], 0),
        (vec![7], 0),
        (vec![3, 5], 1),
        (vec![3, 5], 0),
        (vec![4, 196, 33], 1),
        (vec![2, 3, 1, 9], 2),
        (vec![1000, 3], 0),
    ];
    list.into_iter()
        .map(|(shape, axis)| {
            Case::new(
                "mean",
                format!("x={shape:?} axis={axis}"),
                1e-12,
                move |dev, rng| {
                    let x = rng.vec(shape.iter().product(), -2.0, 2.0);
                    let xt = dev.tensor_f32(&x, &shape)?;
                    let out = output(dev, &split(&shape, axis)?.3, DType::F32)?;
                    let mut rec = dev.recorder("test");
                    mean_into(&mut rec, &xt, axis, &out)?;
                    rec.submit()?;
                    check_f32(dev, &out, &reference(&x, &shape, axis))
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn mean_matches_reference_over_shape_sweep() {
        crate::harness::assert_cases(super::cases());
    }
}
