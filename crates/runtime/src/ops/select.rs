//! Top-k and argmax per row on the GPU (`shaders/select.wgsl`), so decoding reads back only
//! token ids. Order: larger first, NaN above all, ties to the smaller index (as PyTorch).

use bytemuck::{Pod, Zeroable};

use super::{expect_dtype, grid_rows};
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, check_u32, output, Case};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::Recorder;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    k: u32,
    stride: u32,
}

/// The `k` largest entries of each row of `x [.., n]`: indices (u32) and values (f32), both
/// `[.., k]`, best first.
pub fn topk_into(
    rec: &mut Recorder,
    x: &Tensor,
    k: usize,
    indices: &Tensor,
    values: &Tensor,
) -> Result<()> {
    let n = x.shape().last().copied().unwrap_or(0);
    topk_prefix_into(rec, x, n, k, indices, values)
}

/// [`topk_into`] over the first `n` entries of each row only (e.g. a vocabulary padded to a
/// multiple, whose extra rows must never be picked).
pub fn topk_prefix_into(
    rec: &mut Recorder,
    x: &Tensor,
    n: usize,
    k: usize,
    indices: &Tensor,
    values: &Tensor,
) -> Result<()> {
    expect_dtype("topk", "x", x, DType::F32)?;
    let stride = x.shape().last().copied().unwrap_or(0);
    if k == 0 || k > n || n > stride {
        return Err(shape_err(
            "topk",
            format!(
                "k = {k} must be in 1..={n} (of {stride}) for x {:?}",
                x.shape()
            ),
        ));
    }
    let rows = x.numel() / stride;
    if indices.numel() != rows * k
        || values.numel() != rows * k
        || indices.dtype() != DType::U32
        || values.dtype() != DType::F32
    {
        return Err(shape_err(
            "topk",
            format!("outputs must be u32 and f32 with {} elements", rows * k),
        ));
    }
    let p = Params {
        rows: rows as u32,
        n: n as u32,
        k: k as u32,
        stride: stride as u32,
    };
    let key = PipelineKey::new(Shader::Select, "topk", 1, 2);
    rec.dispatch(&key, &p, &[x], &[indices, values], grid_rows(rows), || {
        OpInfo {
            name: "topk",
            shape: format!("{:?} n={n} k={k}", x.shape()),
            bytes: 4 * x.numel() as u64,
            flops: (k * x.numel()) as u64,
        }
    })
}

/// Top-k into new tensors: `(indices, values)`.
pub fn topk(rec: &mut Recorder, x: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    let mut os = x.shape().to_vec();
    match os.last_mut() {
        Some(l) => *l = k,
        None => return Err(shape_err("topk", "x must have at least one dimension")),
    }
    let i = rec.alloc(&os, DType::U32)?;
    let v = rec.alloc(&os, DType::F32)?;
    topk_into(rec, x, k, &i, &v)?;
    Ok((i, v))
}

/// Index of the largest entry of each row: `[..]` u32.
pub fn argmax(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    let (i, _) = topk(rec, x, 1)?;
    let os = &x.shape()[..x.rank().saturating_sub(1)];
    i.reshape(if os.is_empty() { &[1] } else { os })
}

/// Reference: a stable sort by the same order.
pub fn reference(x: &[f32], n: usize, k: usize) -> (Vec<u32>, Vec<f64>) {
    let (mut idx, mut val) = (Vec::new(), Vec::new());
    for row in x.chunks(n) {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            let (va, vb) = (row[a], row[b]);
            match (va.is_nan(), vb.is_nan()) {
                (true, false) => std::cmp::Ordering::Less,
                (false, true) => std::cmp::Ordering::Greater,
                (true, true) => a.cmp(&b),
                _ => vb.partial_cmp(&va).expect("not NaN").then(a.cmp(&b)),
            }
        });
        for &o in &order[..k] {
            idx.push(o as u32);
            val.push(row[o] as f64);
        }
    }
    (idx, val)
}

pub fn cases() -> Vec<Case> {
    let list = [
        (1usize, 1usize, 1usize),
        (1, 7, 3),
        (3, 256, 1),
        (2, 1000, 10),
        (4, 50_280, 5),
        (5, 300, 300),
    ];
    list.into_iter()
        .map(|(rows, n, k)| {
            Case::new(
                "topk",
                format!("rows={rows} n={n} k={k} (ties, NaN)"),
                0.0,
                move |dev, rng| {
                    // A coarse grid of values makes ties; one NaN per row from n = 7 on.
                    let mut x: Vec<f32> = (0..rows * n)
                        .map(|_| (rng.below(40) as f32 - 20.0) * 0.25)
                        .collect();
                    if n >= 7 {
                        for r in 0..rows {
                            x[r * n + rng.below(n)] = f32::NAN;
                        }
                    }
                    let xt = dev.tensor_f32(&x, &[rows, n])?;
                    let (it, vt) = (
                        output(dev, &[rows, k], DType::U32)?,
                        output(dev, &[rows, k], DType::F32)?,
                    );
                    let mut rec = dev.recorder("test");
                    topk_into(&mut rec, &xt, k, &it, &vt)?;
                    rec.submit()?;
                    let (wi, wv) = reference(&x, n, k);
                    Ok(check_u32(dev, &it, &wi)?.merge(check_f32(dev, &vt, &wv)?))
                },
            )
            .dtype("f32→u32")
        })
        .collect()
}

/// A case over a prefix of each row (the rest must be ignored even when larger).
pub fn prefix_case() -> Case {
    Case::new(
        "topk",
        "rows=3 n=50 of 56 k=4 (prefix)".into(),
        0.0,
        |dev, rng| {
            let (rows, n, stride, k) = (3usize, 50usize, 56usize, 4usize);
            let mut x = rng.vec(rows * stride, -1.0, 1.0);
            for r in 0..rows {
                for j in n..stride {
                    x[r * stride + j] = 100.0; // must never be picked
                }
            }
            let xt = dev.tensor_f32(&x, &[rows, stride])?;
            let (it, vt) = (
                output(dev, &[rows, k], DType::U32)?,
                output(dev, &[rows, k], DType::F32)?,
            );
            let mut rec = dev.recorder("test");
            topk_prefix_into(&mut rec, &xt, n, k, &it, &vt)?;
            rec.submit()?;
            let valid: Vec<f32> = x.chunks(stride).flat_map(|r| r[..n].to_vec()).collect();
            let (wi, wv) = reference(&valid, n, k);
            Ok(check_u32(dev, &it, &wi)?.merge(check_f32(dev, &vt, &wv)?))
        },
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn topk_matches_reference_over_shape_sweep() {
        let mut cases = super::cases();
        cases.push(super::prefix_case());
        crate::harness::assert_cases(cases);
    }
}
