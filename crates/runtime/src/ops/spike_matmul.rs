//! Spike-input products: packed binary spikes times f32 (or f16) weights over the channel axis
//! (a 1x1 conv or a Linear on `[.., K, N]` maps), on the tiled GEMM of `shaders/matmul.wgsl`
//! with the spikes expanded to 0/1 as its tiles are fetched (exact; f32 accumulation). The 3x3
//! and larger spike convolutions live with the other convolutions (`ops::conv`). Packing and
//! unpacking between 0/1 maps and packed spikes run in `shaders/spike_matmul.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::matmul::{plan_spikes, spike_gemm_planned, Gemm};
use super::{expect_dtype, expect_float, grid_elems};
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, check_u32, output, Case};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::Recorder;
use crate::spikes::{pack_host, words_for, PackedSpikes};
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    r: u32,
    k: u32,
    cout: u32,
    n: u32,
    words: u32,
    has_bias: u32,
    _pad: [u32; 2],
}

/// `out[.., co, n] = sum_k w[co, k] * s[.., k, n] + bias[co]` for spikes of logical shape
/// `[.., K, N]` and weights `[Cout, K]` (a 1x1 conv's `[Cout, K, 1(, 1)]` reshaped).
pub fn spike_linear_into(
    rec: &mut Recorder,
    s: &PackedSpikes,
    w: &Tensor,
    bias: Option<&Tensor>,
    out: &Tensor,
) -> Result<()> {
    expect_float("spike_linear", "w", w)?;
    let sh = s.shape();
    if sh.len() < 2 || w.rank() != 2 || w.dim(1) != sh[sh.len() - 2] {
        return Err(shape_err(
            "spike_linear",
            format!(
                "spikes {sh:?} ([.., K, N]) do not match weight {:?} ([Cout, K])",
                w.shape()
            ),
        ));
    }
    let (k, n, cout) = (sh[sh.len() - 2], sh[sh.len() - 1], w.dim(0));
    let r = s.rows() / k;
    let mut os = sh.to_vec();
    let l = os.len();
    os[l - 2] = cout;
    if out.shape() != os.as_slice() || out.dtype() != DType::F32 {
        return Err(shape_err(
            "spike_linear",
            format!("output must be f32{os:?}, got {out:?}"),
        ));
    }
    if let Some(b) = bias {
        if b.numel() != cout {
            return Err(shape_err(
                "spike_linear",
                format!("bias has {} elements, expected {cout}", b.numel()),
            ));
        }
    }
    let g = Gemm::spike_channels(r, cout, k, n);
    let pl = plan_spikes(&g, rec.device().wg() as usize, None, None);
    spike_gemm_planned(rec, &g, pl, w, s, bias, out)
}

/// [`spike_linear_into`] into a new tensor.
pub fn spike_linear(
    rec: &mut Recorder,
    s: &PackedSpikes,
    w: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let mut os = s.shape().to_vec();
    let l = os.len();
    if l < 2 || w.rank() != 2 {
        return Err(shape_err(
            "spike_linear",
            format!("spikes {:?} and weight {:?}", s.shape(), w.shape()),
        ));
    }
    os[l - 2] = w.dim(0);
    let out = rec.alloc(&os, DType::F32)?;
    spike_linear_into(rec, s, w, bias, &out)?;
    Ok(out)
}

/// Packs a 0/1 f32 map (any non-zero is a spike) along its last axis into `out`.
pub fn pack_into(rec: &mut Recorder, x: &Tensor, out: &PackedSpikes) -> Result<()> {
    expect_dtype("pack_bits", "x", x, DType::F32)?;
    if out.shape() != x.shape() {
        return Err(shape_err(
            "pack_bits",
            format!(
                "packed shape {:?} differs from x {:?}",
                out.shape(),
                x.shape()
            ),
        ));
    }
    let (r, n, words) = (out.rows(), out.len(), out.words_per_row());
    let p = Params {
        r: r as u32,
        k: 0,
        cout: 0,
        n: n as u32,
        words: words as u32,
        has_bias: 0,
        _pad: [0; 2],
    };
    let key = PipelineKey::new(Shader::SpikeMatmul, "pack_bits", 1, 1);
    rec.dispatch(
        &key,
        &p,
        &[x],
        &[out.words()],
        grid_elems(rec, r * words),
        || OpInfo {
            name: "pack_bits",
            shape: x.shape_str(),
            bytes: x.bytes() + out.words().bytes(),
            flops: 0,
        },
    )
}

/// [`pack_into`] into a new packed tensor.
pub fn pack(rec: &mut Recorder, x: &Tensor) -> Result<PackedSpikes> {
    let out = PackedSpikes::alloc_in(rec, x.shape())?;
    pack_into(rec, x, &out)?;
    Ok(out)
}

/// Unpacks spikes into a 0/1 f32 map of the logical shape.
pub fn unpack_into(rec: &mut Recorder, s: &PackedSpikes, out: &Tensor) -> Result<()> {
    if out.shape() != s.shape() || out.dtype() != DType::F32 {
        return Err(shape_err(
            "unpack_bits",
            format!("output must be f32{:?}, got {out:?}", s.shape()),
        ));
    }
    let (r, n, words) = (s.rows(), s.len(), s.words_per_row());
    let p = Params {
        r: r as u32,
        k: 0,
        cout: 0,
        n: n as u32,
        words: words as u32,
        has_bias: 0,
        _pad: [0; 2],
    };
    let key = PipelineKey::new(Shader::SpikeMatmul, "unpack_bits", 1, 1);
    rec.dispatch(
        &key,
        &p,
        &[s.words()],
        &[out],
        grid_elems(rec, r * n),
        || OpInfo {
            name: "unpack_bits",
            shape: format!("{:?}", s.shape()),
            bytes: s.words().bytes() + out.bytes(),
            flops: 0,
        },
    )
}

/// [`unpack_into`] into a new tensor.
pub fn unpack(rec: &mut Recorder, s: &PackedSpikes) -> Result<Tensor> {
    let out = rec.alloc(s.shape(), DType::F32)?;
    unpack_into(rec, s, &out)?;
    Ok(out)
}

/// f64 reference of [`spike_linear_into`] on 0/1 data `[R, K, N]`.
pub fn reference(
    s: &[f32],
    r: usize,
    k: usize,
    n: usize,
    w: &[f32],
    cout: usize,
    bias: Option<&[f32]>,
) -> Vec<f64> {
    let mut out = vec![0.0; r * cout * n];
    for ri in 0..r {
        for co in 0..cout {
            for j in 0..n {
                let mut acc = bias.map_or(0.0, |b| b[co] as f64);
                for ki in 0..k {
                    acc += w[co * k + ki] as f64 * s[(ri * k + ki) * n + j] as f64;
                }
                out[(ri * cout + co) * n + j] = acc;
            }
        }
    }
    out
}

/// Harness cases: shapes off every tile (odd sizes, 1, n across word boundaries), multiples of
/// the tile (the unchecked variant), aligned rows (vec4 stores) and deep K, firing rates from 5%
/// to 90%, each tiled variant forced in turn (plan's; small and large tile; K in slices).
pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    // (tile: 0 plan's, 1 small, 2 large; K slices)
    let forces: [(u8, Option<usize>); 4] = [(0, None), (1, Some(1)), (2, Some(1)), (1, Some(3))];
    for (r, k, n, cout, rate) in [
        (1usize, 1usize, 1usize, 1usize, 0.5f32),
        (1, 5, 33, 7, 0.3),
        (4, 24, 196, 40, 0.15),
        (2, 64, 64, 3, 0.05),
        (3, 9, 100, 17, 0.9),
        (2, 32, 64, 128, 0.2),
        (1, 600, 31, 70, 0.1),
        (2, 48, 128, 130, 0.25),
    ] {
        for bias in [false, true] {
            for (tile, slices) in forces {
                if !bias && tile != 0 {
                    continue;
                }
                v.push(
                    Case::new(
                        "spike_linear",
                        format!(
                            "r={r} k={k} n={n} cout={cout} rate={rate}{}{}",
                            if bias { " +bias" } else { "" },
                            match (tile, slices) {
                                (0, _) => String::new(),
                                (t, s) => format!(
                                    " [{} tile, {} k-slices]",
                                    ["", "small", "large"][t as usize],
                                    s.unwrap_or(1)
                                ),
                            }
                        ),
                        1e-11,
                        move |dev, rng| {
                            let s: Vec<f32> = (0..r * k * n)
                                .map(|_| if rng.unit() < rate as f64 { 1.0 } else { 0.0 })
                                .collect();
                            let w = rng.vec(cout * k, -1.0, 1.0);
                            let b = rng.vec(cout, -1.0, 1.0);
                            let st = PackedSpikes::from_host(dev, &s, &[r, k, n])?;
                            let (wt, bt) = (
                                dev.weight_f32(&w, &[cout, k])?,
                                dev.weight_f32(&b, &[cout])?,
                            );
                            let out = output(dev, &[r, cout, n], DType::F32)?;
                            let wg = dev.wg() as usize;
                            let g = Gemm::spike_channels(r, cout, k, n);
                            let rows = [None, Some(wg / 4), Some(wg / 2)][tile as usize];
                            let pl = plan_spikes(&g, wg, rows, slices);
                            let mut rec = dev.recorder("test");
                            spike_gemm_planned(
                                &mut rec,
                                &g,
                                pl,
                                &wt,
                                &st,
                                bias.then_some(&bt),
                                &out,
                            )?;
                            rec.submit()?;
                            check_f32(
                                dev,
                                &out,
                                &reference(&s, r, k, n, &w, cout, bias.then_some(&b)),
                            )
                        },
                    )
                    .dtype("bits×f32"),
                );
            }
        }
    }
    for (rows, n) in [(1usize, 1usize), (3, 31), (2, 32), (5, 33), (4, 200)] {
        v.push(
            Case::new(
                "pack_bits",
                format!("rows={rows} n={n} (and back)"),
                0.0,
                move |dev, rng| {
                    let x: Vec<f32> = (0..rows * n).map(|_| rng.below(2) as f32).collect();
                    let xt = dev.tensor_f32(&x, &[rows, n])?;
                    let words = output(dev, &[rows, words_for(n)], DType::U32)?;
                    let packed = PackedSpikes::from_words(words.clone(), &[rows, n])?;
                    let back = output(dev, &[rows, n], DType::F32)?;
                    let mut rec = dev.recorder("test");
                    pack_into(&mut rec, &xt, &packed)?;
                    unpack_into(&mut rec, &packed, &back)?;
                    rec.submit()?;
                    let c = check_u32(dev, &words, &pack_host(&x, n))?;
                    Ok(c.merge(check_f32(dev, &back, &crate::harness::f64s(&x))?))
                },
            )
            .dtype("f32↔bits"),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn spike_matmul_matches_reference_over_shape_sweep() {
        crate::harness::assert_cases(super::cases());
    }
}
