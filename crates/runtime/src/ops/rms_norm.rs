//! RMSNorm with an optional fused residual add (`shaders/rms_norm.wgsl`), as Mamba's blocks:
//! `residual = x + residual; y = residual / sqrt(mean(residual^2) + eps) * weight`; and the
//! weightless in-place RMSNorm of column segments of each row (Falcon-Mamba's dt, B and C).

use bytemuck::{Pod, Zeroable};

use super::layer_norm::RowParams;
use super::{expect_dtype, expect_out, grid_rows};
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, output, Case, Check, Feature, POISON};
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
    let out = rec.alloc(x.shape(), DType::F32)?;
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
    let out = rec.alloc(x.shape(), DType::F32)?;
    let sum = rec.alloc(x.shape(), DType::F32)?;
    add_rms_norm_into(rec, x, residual, weight, eps, &out, &sum)?;
    Ok((out, sum))
}

/// Most segments [`rms_norm_segments`] takes per row.
pub const MAX_SEGMENTS: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SegParams {
    rows: u32,
    stride: u32,
    segments: u32,
    eps: f32,
    offset: [u32; 4],
    len: [u32; 4],
}

/// In place, for every row of `x` (the last dim is the row) and every column range
/// `(offset, len)` of `segments`: `x[seg] /= sqrt(mean(x[seg]^2) + eps)`, each segment on its
/// own, no weight (Falcon-Mamba's dt, B and C norms on x_proj's output `[rows, R + 2N]`).
/// Columns outside the segments are left untouched. Segments must be non-empty, inside the
/// row and disjoint; at most [`MAX_SEGMENTS`]. One workgroup per (row, segment).
pub fn rms_norm_segments(
    rec: &mut Recorder,
    x: &Tensor,
    segments: &[(usize, usize)],
    eps: f32,
) -> Result<()> {
    expect_dtype("rms_norm_segments", "x", x, DType::F32)?;
    let stride = x.shape().last().copied().unwrap_or(0);
    let bad = |m: String| shape_err("rms_norm_segments", m);
    if stride == 0 {
        return Err(bad(format!("x {:?} has empty rows", x.shape())));
    }
    if segments.is_empty() || segments.len() > MAX_SEGMENTS {
        return Err(bad(format!(
            "{} segments (1..={MAX_SEGMENTS})",
            segments.len()
        )));
    }
    let mut sorted = segments.to_vec();
    sorted.sort_unstable();
    let mut end = 0;
    for &(o, n) in &sorted {
        if n == 0 || o.checked_add(n).is_none_or(|e| e > stride) || o < end {
            return Err(bad(format!(
                "segments {segments:?} must be non-empty, disjoint and inside rows of {stride}"
            )));
        }
        end = o + n;
    }
    let rows = x.numel() / stride;
    if rows == 0 {
        return Ok(());
    }
    let groups = rows
        .checked_mul(segments.len())
        .and_then(|g| u32::try_from(g).ok())
        .ok_or_else(|| bad(format!("{rows} rows x {} segments", segments.len())))?;
    let mut p = SegParams {
        rows: rows as u32,
        stride: stride as u32,
        segments: segments.len() as u32,
        eps,
        offset: [0; 4],
        len: [0; 4],
    };
    for (j, &(o, n)) in segments.iter().enumerate() {
        p.offset[j] = o as u32;
        p.len[j] = n as u32;
    }
    let k = key(rec, "rms_norm_segments", 0, 1);
    let elems: usize = rows * segments.iter().map(|s| s.1).sum::<usize>();
    rec.dispatch(&k, &p, &[], &[x], grid_rows(groups as usize), || OpInfo {
        name: "rms_norm_segments",
        shape: format!("{}{segments:?}", x.shape_str()),
        bytes: 12 * elems as u64,
        flops: 3 * elems as u64,
    })
}

/// f64 reference of [`rms_norm_segments`]: `x` with each segment of each row normalised,
/// the other columns as they were.
pub fn segments_reference(
    x: &[f32],
    stride: usize,
    segments: &[(usize, usize)],
    eps: f32,
) -> Vec<f64> {
    let mut out: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for row in out.chunks_mut(stride) {
        for &(o, n) in segments {
            let seg = &mut row[o..o + n];
            let ms = seg.iter().map(|v| v * v).sum::<f64>() / n as f64;
            let r = 1.0 / (ms + eps as f64).sqrt();
            seg.iter_mut().for_each(|v| *v *= r);
        }
    }
    out
}

/// A [`rms_norm_segments`] case: segment columns random in ±6, every other column random in
/// 50..100 (any write moves it; any read into a sum shows), which must survive bit for bit,
/// as must the poisoned guard after the data; a segment element still equal to its input
/// where the reference moved it counts as unwritten.
fn segments_case(rows: usize, stride: usize, segs: Vec<(usize, usize)>, eps: f32) -> Case {
    let params = format!("rows={rows} stride={stride} segments={segs:?} eps={eps:e}");
    Case::new("rms_norm_segments", params, 1e-11, move |dev, rng| {
        let mut inside = vec![false; stride];
        for &(o, n) in &segs {
            inside[o..o + n].iter_mut().for_each(|b| *b = true);
        }
        // Scaled so each segment's RMS is far from 1 (the norm must move every element).
        let x: Vec<f32> = (0..rows * stride)
            .map(|i| {
                if inside[i % stride] {
                    rng.uniform(-6.0, 6.0)
                } else {
                    rng.uniform(50.0, 100.0)
                }
            })
            .collect();
        let t = output(dev, &[rows, stride], DType::F32)?;
        dev.write(&t, bytemuck::cast_slice(&x))?;
        let mut rec = dev.recorder("test");
        rms_norm_segments(&mut rec, &t, &segs, eps)?;
        rec.submit()?;
        let want = segments_reference(&x, stride, &segs, eps);
        let words: Vec<u32> =
            bytemuck::pod_collect_to_vec(&dev.read_buffer(t.buffer(), t.capacity())?);
        let mut c = Check {
            n: x.len(),
            guard_hits: words[x.len()..].iter().filter(|&&w| w != POISON).count(),
            ..Check::default()
        };
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for (i, (&w, &r)) in words.iter().zip(&want).enumerate() {
            if !inside[i % stride] {
                c.mismatches += (w != x[i].to_bits()) as usize;
                continue;
            }
            let g = f32::from_bits(w) as f64;
            if !g.is_finite() {
                c.nonfinite += 1;
                continue;
            }
            if w == x[i].to_bits() && (r - x[i] as f64).abs() > 1e-6 * r.abs().max(1e-30) {
                c.unwritten += 1;
            }
            num += (g - r) * (g - r);
            den += r * r;
            c.max_abs = c.max_abs.max((g - r).abs());
        }
        c.nmse = if den > 0.0 { num / den } else { num };
        Ok(c)
    })
    .feature(Feature::Subgroups)
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
    // Segment lengths 1, odd and over the workgroup width (both 128 and 256), gaps between
    // segments, up to four per row; the Falcon-Mamba shapes (R + 2N with R = 4 and 256); a
    // grid past 65,535 workgroups (folded into y).
    let seg = |rows: usize, stride: usize, s: &[(usize, usize)], eps: f32| {
        segments_case(rows, stride, s.to_vec(), eps)
    };
    v.push(seg(1, 1, &[(0, 1)], 1e-6));
    v.push(seg(5, 7, &[(1, 1), (3, 3)], 1e-6));
    v.push(seg(3, 36, &[(0, 4), (4, 16), (20, 16)], 1e-6));
    v.push(seg(2, 600, &[(300, 299), (0, 257)], 1e-6));
    v.push(seg(7, 288, &[(0, 256), (256, 16), (272, 16)], 1e-6));
    v.push(seg(
        1,
        1100,
        &[(3, 1000), (1003, 1), (1010, 77), (1090, 9)],
        1e-5,
    ));
    v.push(seg(22_000, 5, &[(0, 2), (2, 1), (4, 1)], 1e-6));
    v
}

#[cfg(test)]
mod tests {
    use crate::device::Device;
    use crate::tensor::DType;

    #[test]
    fn rms_norm_matches_reference_over_shape_sweep() {
        crate::harness::assert_cases(super::cases());
    }

    #[test]
    fn bad_segments_are_errors() {
        let dev = &crate::harness::test_devices()[0].1;
        let x = dev.alloc(&[3, 10], DType::F32).unwrap();
        let run = |dev: &Device, s: &[(usize, usize)]| {
            let mut rec = dev.recorder("t");
            super::rms_norm_segments(&mut rec, &x, s, 1e-6).map(|_| ())
        };
        assert!(run(dev, &[(0, 4), (4, 6)]).is_ok());
        for bad in [
            &[][..],
            &[(0, 0)],
            &[(8, 3)],
            &[(0, 4), (3, 2)],
            &[(0, 1), (1, 1), (2, 1), (3, 1), (4, 1)],
        ] {
            let e = run(dev, bad).unwrap_err().to_string();
            assert!(e.contains("rms_norm_segments"), "{bad:?}: {e}");
        }
    }
}
