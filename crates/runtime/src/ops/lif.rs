//! Multi-step LIF neurons (`shaders/lif.wgsl`) as SpikingJelly's `MultiStepLIFNode` with
//! `decay_input=True` and a hard reset: over the leading time axis,
//! `h = v + (x - v) / tau; spike = h >= v_th; v = spike ? v_reset : h`, v = 0 at t = 0.
//! The BatchNorm before the neuron is fused in; the f32 output can add a residual.

use bytemuck::{Pod, Zeroable};

use super::batch_norm::BatchNorm;
use super::{expect_dtype, grid_elems};
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, check_spikes, output, packed_output, require_firing, Case, Rng};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::Recorder;
use crate::spikes::{words_for, PackedSpikes};
use crate::tensor::{DType, Tensor};

/// LIF neuron constants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lif {
    pub v_th: f32,
    pub v_reset: f32,
    pub tau: f32,
}

impl Lif {
    /// SpikingJelly's `MultiStepLIFNode(tau=2.0, detach_reset=True)`: threshold 1, reset 0.
    pub const STANDARD: Lif = Lif {
        v_th: 1.0,
        v_reset: 0.0,
        tau: 2.0,
    };
    /// The attention LIF of Spikformer / Spike-driven Transformers: threshold 0.5.
    pub const ATTENTION: Lif = Lif {
        v_th: 0.5,
        v_reset: 0.0,
        tau: 2.0,
    };

    /// One step on the host, in the same f32 arithmetic as the kernel.
    pub fn step(&self, v: &mut f32, x: f32) -> bool {
        let h = *v + (x - *v) / self.tau;
        let spike = h >= self.v_th;
        *v = if spike { self.v_reset } else { h };
        spike
    }
}

/// `[T, B, C, S]` view of a tensor: T = dim 0, B = dim 1, C = dim 2, S = the rest. Rank 2
/// `[T, N]` has one batch and one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub t: usize,
    pub b: usize,
    pub c: usize,
    pub s: usize,
}

impl Layout {
    pub fn of(shape: &[usize]) -> Result<Self> {
        match shape {
            [t, n] => Ok(Layout {
                t: *t,
                b: 1,
                c: 1,
                s: *n,
            }),
            [t, b, c, rest @ ..] => Ok(Layout {
                t: *t,
                b: *b,
                c: *c,
                s: rest.iter().product(),
            }),
            _ => Err(shape_err(
                "lif",
                format!("x {shape:?} must be [T, N] or [T, B, C, ...]"),
            )),
        }
    }
    fn per_step(&self) -> usize {
        self.b * self.c * self.s
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    t: u32,
    b: u32,
    c: u32,
    s: u32,
    v_th: f32,
    v_reset: f32,
    tau: f32,
    has_bn: u32,
    has_residual: u32,
    words: u32,
    x_t_stride: u32,
    _pad: u32,
}

fn params(l: &Layout, lif: &Lif, bn: bool, residual: bool, repeat: bool) -> Params {
    Params {
        t: l.t as u32,
        b: l.b as u32,
        c: l.c as u32,
        s: l.s as u32,
        v_th: lif.v_th,
        v_reset: lif.v_reset,
        tau: lif.tau,
        has_bn: bn as u32,
        has_residual: residual as u32,
        words: words_for(l.s) as u32,
        x_t_stride: if repeat { 0 } else { l.per_step() as u32 },
        _pad: 0,
    }
}

fn check_bn(l: &Layout, bn: Option<&BatchNorm>) -> Result<()> {
    match bn {
        Some(bn) if bn.channels() != l.c => Err(shape_err(
            "lif",
            format!(
                "BatchNorm has {} channels, the input {}",
                bn.channels(),
                l.c
            ),
        )),
        _ => Ok(()),
    }
}

/// Whether `x` is one step repeated over T (`out` = `[T, ..x]`) rather than `[T, ..]` itself.
fn repeats(x: &Tensor, out: &[usize]) -> Result<bool> {
    if x.shape() == out {
        Ok(false)
    } else if out.len() == x.rank() + 1 && &out[1..] == x.shape() {
        Ok(true)
    } else {
        Err(shape_err(
            "lif",
            format!(
                "x {:?} is neither the output shape {out:?} nor one step of it",
                x.shape()
            ),
        ))
    }
}

/// Spikes (0/1 as f32), plus `residual` when given, of `bn(x)` through the LIF. `x` is
/// `[T, B, C, ...]` like `out`, or `[B, C, ...]` fed to every step.
pub fn lif_into(
    rec: &mut Recorder,
    x: &Tensor,
    lif: &Lif,
    bn: Option<&BatchNorm>,
    residual: Option<&Tensor>,
    out: &Tensor,
) -> Result<()> {
    expect_dtype("lif", "x", x, DType::F32)?;
    expect_dtype("lif", "out", out, DType::F32)?;
    let repeat = repeats(x, out.shape())?;
    let l = Layout::of(out.shape())?;
    check_bn(&l, bn)?;
    if let Some(r) = residual {
        expect_dtype("lif", "residual", r, DType::F32)?;
        if r.shape() != out.shape() {
            return Err(shape_err(
                "lif",
                format!(
                    "residual {:?} differs from the output {:?}",
                    r.shape(),
                    out.shape()
                ),
            ));
        }
    }
    let p = params(&l, lif, bn.is_some(), residual.is_some(), repeat);
    let key = PipelineKey::new(Shader::Lif, "lif", 4, 1);
    let (a, b) = bn.map_or((x, x), |bn| (&bn.alpha, &bn.beta));
    rec.dispatch(
        &key,
        &p,
        &[x, a, b, residual.unwrap_or(x)],
        &[out],
        grid_elems(rec, l.per_step()),
        || OpInfo {
            name: "lif",
            shape: format!(
                "{:?}{}{}",
                x.shape(),
                if bn.is_some() { " +bn" } else { "" },
                if residual.is_some() { " +res" } else { "" }
            ),
            bytes: 4 * (x.numel() + out.numel() * (1 + residual.is_some() as usize)) as u64,
            flops: 4 * out.numel() as u64,
        },
    )
}

/// [`lif_into`] into a new tensor.
pub fn lif(
    rec: &mut Recorder,
    x: &Tensor,
    lif: &Lif,
    bn: Option<&BatchNorm>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let out = rec.alloc(x.shape(), DType::F32)?;
    lif_into(rec, x, lif, bn, residual, &out)?;
    Ok(out)
}

/// [`lif_into`] for one input `x [B, C, ...]` fed to each of `t` steps: `[t, B, C, ...]`.
pub fn lif_repeat(
    rec: &mut Recorder,
    x: &Tensor,
    t: usize,
    lif: &Lif,
    bn: Option<&BatchNorm>,
) -> Result<Tensor> {
    let mut shape = vec![t];
    shape.extend_from_slice(x.shape());
    let out = rec.alloc(&shape, DType::F32)?;
    lif_into(rec, x, lif, bn, None, &out)?;
    Ok(out)
}

/// Spikes of `bn(x)` packed 32 per word along S into `out` (logical `[T, B, C, S]`); x has
/// the same elements (any shape), or those of one step fed to every step.
pub fn lif_bits_into(
    rec: &mut Recorder,
    x: &Tensor,
    lif: &Lif,
    bn: Option<&BatchNorm>,
    out: &PackedSpikes,
) -> Result<()> {
    expect_dtype("lif", "x", x, DType::F32)?;
    let l = Layout::of(out.shape())?;
    check_bn(&l, bn)?;
    // x holds every step, or one step fed to all of them (the same elements per step).
    let per_step = l.b * l.c * l.s;
    let repeat = match x.numel() {
        n if n == l.t * per_step => false,
        n if n == per_step => true,
        _ => {
            return Err(shape_err(
                "lif",
                format!(
                    "x {:?} does not fill the packed output {:?} (or one step of it)",
                    x.shape(),
                    out.shape()
                ),
            ))
        }
    };
    let p = params(&l, lif, bn.is_some(), false, repeat);
    let key = PipelineKey::new(Shader::Lif, "lif_bits", 3, 1);
    let (a, b) = bn.map_or((x, x), |bn| (&bn.alpha, &bn.beta));
    rec.dispatch(
        &key,
        &p,
        &[x, a, b],
        &[out.words()],
        // One invocation per neuron of every word (32 per word).
        grid_elems(rec, l.b * l.c * words_for(l.s) * 32),
        || OpInfo {
            name: "lif_bits",
            shape: format!("{:?}{}", x.shape(), if bn.is_some() { " +bn" } else { "" }),
            bytes: 4 * x.numel() as u64 + out.words().bytes(),
            flops: 4 * x.numel() as u64,
        },
    )
}

/// [`lif_bits_into`] into a new packed tensor.
pub fn lif_bits(
    rec: &mut Recorder,
    x: &Tensor,
    lif: &Lif,
    bn: Option<&BatchNorm>,
) -> Result<PackedSpikes> {
    let l = Layout::of(x.shape())?;
    let out = PackedSpikes::alloc_in(rec, &[l.t, l.b, l.c, l.s])?;
    lif_bits_into(rec, x, lif, bn, &out)?;
    Ok(out)
}

/// One time step of streaming neurons: `v [..]` holds their membranes between calls (zeros
/// before the first step) and is updated in place; `out` gets this step's spikes (0/1) of
/// `bn(x)`. `x`, `v` and `out` are `[B, C, ...]` (C the BatchNorm's channels).
pub fn lif_step_into(
    rec: &mut Recorder,
    x: &Tensor,
    lif: &Lif,
    bn: Option<&BatchNorm>,
    v: &Tensor,
    out: &Tensor,
) -> Result<()> {
    expect_dtype("lif", "x", x, DType::F32)?;
    expect_dtype("lif", "v", v, DType::F32)?;
    expect_dtype("lif", "out", out, DType::F32)?;
    if v.numel() != x.numel() || out.numel() != x.numel() || x.rank() < 2 {
        return Err(shape_err(
            "lif",
            format!(
                "x {:?} ([B, C, ...]), membranes {:?} and out {:?} must have equal sizes",
                x.shape(),
                v.shape(),
                out.shape()
            ),
        ));
    }
    let mut shape = vec![1];
    shape.extend_from_slice(x.shape());
    let l = Layout::of(&shape)?;
    check_bn(&l, bn)?;
    let p = params(&l, lif, bn.is_some(), false, false);
    let key = PipelineKey::new(Shader::Lif, "lif_state", 3, 2);
    let (a, b) = bn.map_or((x, x), |bn| (&bn.alpha, &bn.beta));
    rec.dispatch(
        &key,
        &p,
        &[x, a, b],
        &[v, out],
        grid_elems(rec, l.per_step()),
        || OpInfo {
            name: "lif_step",
            shape: format!("{:?}{}", x.shape(), if bn.is_some() { " +bn" } else { "" }),
            bytes: 16 * x.numel() as u64,
            flops: 4 * x.numel() as u64,
        },
    )
}

/// Host reference in the kernel's f32 arithmetic: spikes (plus residual).
pub fn reference(
    x: &[f32],
    l: &Layout,
    lif: &Lif,
    bn: Option<(&[f32], &[f32])>,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let n = l.per_step();
    let mut out = vec![0.0; x.len()];
    for i in 0..n {
        let c = (i / l.s) % l.c;
        let mut v = 0.0f32;
        for t in 0..l.t {
            let j = t * n + i;
            let xv = bn.map_or(x[j], |(a, b)| x[j] * a[c] + b[c]);
            let s = if lif.step(&mut v, xv) { 1.0 } else { 0.0 };
            out[j] = s + residual.map_or(0.0, |r| r[j]);
        }
    }
    out
}

/// Reference for one step `x` repeated over `t` steps.
pub fn reference_repeat(
    x: &[f32],
    t: usize,
    l: &Layout,
    lif: &Lif,
    bn: Option<(&[f32], &[f32])>,
) -> Vec<f32> {
    let xs: Vec<f32> = (0..t).flat_map(|_| x.iter().copied()).collect();
    reference(&xs, l, lif, bn, None)
}

/// Inputs on a dyadic grid and BN constants that are short binary fractions, so every
/// product and sum is exact in f32 whatever the order or fusion: spikes must then match
/// exactly.
fn dyadic(rng: &mut Rng, n: usize, steps: usize, unit: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.below(2 * steps + 1) as f32 - steps as f32) * unit)
        .collect()
}

fn bn_dyadic(rng: &mut Rng, c: usize) -> (Vec<f32>, Vec<f32>) {
    (
        (0..c).map(|_| 0.5 * (1 + rng.below(4)) as f32).collect(),
        dyadic(rng, c, 8, 0.125),
    )
}

pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let shapes: Vec<Vec<usize>> = vec![
        vec![1, 1],
        vec![4, 7],
        vec![4, 2, 3, 5],
        vec![1, 1, 8, 33],
        vec![4, 2, 16, 14, 14],
        vec![2, 1, 3, 65],
    ];
    for shape in shapes {
        for (bn, res) in [(false, false), (true, false), (true, true)] {
            let (shape, shape2) = (shape.clone(), shape.clone());
            let name = format!(
                "x={shape:?}{}{}",
                if bn { " +bn" } else { "" },
                if res { " +res" } else { "" }
            );
            v.push(Case::new("lif", name.clone(), 0.0, move |dev, rng| {
                let l = Layout::of(&shape)?;
                let x = dyadic(rng, shape.iter().product(), 48, 1.0 / 16.0);
                let r = dyadic(rng, x.len(), 2, 1.0);
                let (a, b) = bn_dyadic(rng, l.c);
                let bnt = BatchNorm {
                    alpha: dev.weight_f32(&a, &[l.c])?,
                    beta: dev.weight_f32(&b, &[l.c])?,
                };
                let (xt, rt) = (dev.tensor_f32(&x, &shape)?, dev.tensor_f32(&r, &shape)?);
                let out = output(dev, &shape, DType::F32)?;
                let mut rec = dev.recorder("test");
                lif_into(
                    &mut rec,
                    &xt,
                    &Lif::STANDARD,
                    bn.then_some(&bnt),
                    res.then_some(&rt),
                    &out,
                )?;
                rec.submit()?;
                let want = reference(
                    &x,
                    &l,
                    &Lif::STANDARD,
                    bn.then_some((&a, &b)),
                    res.then_some(&r),
                );
                let spikes: Vec<f32> = want
                    .iter()
                    .zip(&r)
                    .map(|(w, rv)| if res { w - rv } else { *w })
                    .collect();
                Ok(require_firing(
                    check_f32(
                        dev,
                        &out,
                        &want.iter().map(|&w| w as f64).collect::<Vec<_>>(),
                    )?,
                    &spikes,
                ))
            }));
            if res {
                continue;
            }
            let shape = shape2;
            v.push(
                Case::new("lif_bits", name, 0.0, move |dev, rng| {
                    let l = Layout::of(&shape)?;
                    let x = dyadic(rng, shape.iter().product(), 48, 1.0 / 16.0);
                    let (a, b) = bn_dyadic(rng, l.c);
                    let bnt = BatchNorm {
                        alpha: dev.weight_f32(&a, &[l.c])?,
                        beta: dev.weight_f32(&b, &[l.c])?,
                    };
                    let xt = dev.tensor_f32(&x, &shape)?;
                    let (words, out) = packed_output(dev, &[l.t, l.b, l.c, l.s])?;
                    let mut rec = dev.recorder("test");
                    lif_bits_into(&mut rec, &xt, &Lif::ATTENTION, bn.then_some(&bnt), &out)?;
                    rec.submit()?;
                    let want = reference(&x, &l, &Lif::ATTENTION, bn.then_some((&a, &b)), None);
                    check_spikes(dev, &words, &want, l.s)
                })
                .dtype("f32→bits"),
            );
        }
    }
    // Streaming: T calls of one step each reproduce the multi-step neuron.
    for (t, shape) in [
        (1usize, vec![1usize, 1]),
        (6, vec![3, 7]),
        (9, vec![2, 5, 3]),
    ] {
        v.push(Case::new(
            "lif_step",
            format!("T={t} x={shape:?} +bn"),
            0.0,
            move |dev, rng| {
                let per: usize = shape.iter().product();
                let mut full = vec![t];
                full.extend_from_slice(&shape);
                let l = Layout::of(&full)?;
                let x = dyadic(rng, t * per, 48, 1.0 / 16.0);
                let (a, b) = bn_dyadic(rng, l.c);
                let bnt = BatchNorm {
                    alpha: dev.weight_f32(&a, &[l.c])?,
                    beta: dev.weight_f32(&b, &[l.c])?,
                };
                let vt = dev.tensor_f32(&vec![0.0; per], &shape)?;
                let mut got = Vec::new();
                for step in 0..t {
                    let xt = dev.tensor_f32(&x[step * per..(step + 1) * per], &shape)?;
                    let out = output(dev, &shape, DType::F32)?;
                    let mut rec = dev.recorder("test");
                    lif_step_into(&mut rec, &xt, &Lif::ATTENTION, Some(&bnt), &vt, &out)?;
                    rec.submit()?;
                    got.extend(dev.read_f32(&out)?);
                }
                let want = reference(&x, &l, &Lif::ATTENTION, Some((&a, &b)), None);
                let out = output(dev, &[got.len()], DType::F32)?;
                dev.write(&out, bytemuck::cast_slice(&got))?;
                let c = check_f32(dev, &out, &crate::harness::f64s(&want))?;
                Ok(if t > 1 { require_firing(c, &want) } else { c })
            },
        ));
    }
    v.push(Case::new(
        "lif",
        "x=[2, 3, 5] repeated over T=4 +bn".into(),
        0.0,
        |dev, rng| {
            let (xs, os) = ([2usize, 3, 5], [4usize, 2, 3, 5]);
            let l = Layout::of(&os)?;
            let x = dyadic(rng, 30, 48, 1.0 / 16.0);
            let (a, b) = bn_dyadic(rng, 3);
            let bnt = BatchNorm {
                alpha: dev.weight_f32(&a, &[3])?,
                beta: dev.weight_f32(&b, &[3])?,
            };
            let xt = dev.tensor_f32(&x, &xs)?;
            let out = output(dev, &os, DType::F32)?;
            let mut rec = dev.recorder("test");
            lif_into(&mut rec, &xt, &Lif::STANDARD, Some(&bnt), None, &out)?;
            rec.submit()?;
            let want = reference_repeat(&x, 4, &l, &Lif::STANDARD, Some((&a, &b)));
            Ok(require_firing(
                check_f32(dev, &out, &crate::harness::f64s(&want))?,
                &want,
            ))
        },
    ));
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn lif_matches_reference_over_shape_sweep() {
        crate::harness::assert_cases(super::cases());
    }

    #[test]
    fn firing_is_neither_silent_nor_saturated_in_the_sweep() {
        // The inputs the cases draw make neurons fire some of the time: a case that never
        // fires (or always does) would prove little.
        let mut rng = crate::harness::Rng::new(7);
        let x = super::dyadic(&mut rng, 4000, 48, 1.0 / 16.0);
        let l = super::Layout::of(&[4, 1000]).unwrap();
        let s = super::reference(&x, &l, &super::Lif::STANDARD, None, None);
        let rate = s.iter().sum::<f32>() / s.len() as f32;
        assert!(rate > 0.05 && rate < 0.95, "rate {rate}");
    }
}
