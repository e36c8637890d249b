//! Spiking self-attention on packed spikes (`shaders/ssa.wgsl`): Spikformer's SSA and the
//! linear spike attention of Meta-SpikeFormer, `attn_lif((q · (kᵀ · v)) · scale)` per head,
//! in exact integer arithmetic (popcounts), which equals the float computation bit for bit.

use bytemuck::{Pod, Zeroable};

use super::grid_elems;
use super::lif::Lif;
use crate::error::{shape_err, Result};
use crate::harness::{check_spikes, packed_output, random_spikes, Case};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::Recorder;
use crate::spikes::{words_for, PackedSpikes};
use crate::tensor::DType;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    t: u32,
    b: u32,
    heads: u32,
    d: u32,
    n: u32,
    words: u32,
    scale: f32,
    v_th: f32,
    tau: f32,
    v_reset: f32,
    _pad: [u32; 2],
}

/// The attention's constants: heads, the fixed scale (0.125 in the official models,
/// whatever the head dim) and the attention LIF.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ssa {
    pub heads: usize,
    pub scale: f32,
    pub lif: Lif,
}

impl Ssa {
    /// Spikformer's / Meta-SpikeFormer's: scale 0.125, `attn_lif` threshold 0.5.
    pub fn official(heads: usize) -> Self {
        Self {
            heads,
            scale: 0.125,
            lif: Lif::ATTENTION,
        }
    }
}

/// q, k, v: packed spikes `[T, B, C, N]` with `C = heads · d`. Writes the attention LIF's
/// spikes `[T, B, C, N]` (packed).
pub fn ssa_into(
    rec: &mut Recorder,
    q: &PackedSpikes,
    k: &PackedSpikes,
    v: &PackedSpikes,
    cfg: &Ssa,
    out: &PackedSpikes,
) -> Result<()> {
    let (heads, scale, lif) = (cfg.heads, cfg.scale, &cfg.lif);
    let s = q.shape();
    if s.len() != 4 || k.shape() != s || v.shape() != s || out.shape() != s {
        return Err(shape_err(
            "ssa",
            format!(
                "q {:?}, k {:?}, v {:?} and out {:?} must all be [T, B, C, N]",
                s,
                k.shape(),
                v.shape(),
                out.shape()
            ),
        ));
    }
    let (t, b, c, n) = (s[0], s[1], s[2], s[3]);
    if heads == 0 || c % heads != 0 {
        return Err(shape_err(
            "ssa",
            format!("{c} channels do not split into {heads} heads"),
        ));
    }
    let d = c / heads;
    let words = words_for(n);
    let p = Params {
        t: t as u32,
        b: b as u32,
        heads: heads as u32,
        d: d as u32,
        n: n as u32,
        words: words as u32,
        scale,
        v_th: lif.v_th,
        tau: lif.tau,
        v_reset: lif.v_reset,
        _pad: [0; 2],
    };
    let kv = rec.alloc(&[t, b, heads, d, d], DType::U32)?;
    let info = |name: &'static str, flops: u64| {
        move || OpInfo {
            name,
            shape: format!("T={t} B={b} heads={heads} d={d} N={n}"),
            bytes: 4 * (2 * t * b * c * words + t * b * heads * d * d) as u64,
            flops,
        }
    };
    let key = PipelineKey::new(Shader::Ssa, "ssa_kv", 2, 1);
    rec.dispatch(
        &key,
        &p,
        &[k.words(), v.words()],
        &[&kv],
        grid_elems(rec, t * b * heads * d * d),
        info("ssa_kv", (t * b * heads * d * d * words) as u64),
    )?;
    let key = PipelineKey::new(Shader::Ssa, "ssa_attn", 2, 1);
    rec.dispatch(
        &key,
        &p,
        &[q.words(), &kv],
        &[out.words()],
        // One invocation per token of every output word (32 per word).
        grid_elems(rec, b * heads * d * words * 32),
        info("ssa_attn", (2 * t * b * heads * d * d * n) as u64),
    )
}

/// [`ssa_into`] into a new packed tensor.
pub fn ssa(
    rec: &mut Recorder,
    q: &PackedSpikes,
    k: &PackedSpikes,
    v: &PackedSpikes,
    cfg: &Ssa,
) -> Result<PackedSpikes> {
    let out = PackedSpikes::alloc_in(rec, q.shape())?;
    ssa_into(rec, q, k, v, cfg, &out)?;
    Ok(out)
}

/// Reference on 0/1 data `[T, B, C, N]`: the float computation of the official code
/// (`x = kᵀ v; x = (q x) · scale; attn_lif(x)`), in f64 then the f32 LIF.
pub fn reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: [usize; 4],
    heads: usize,
    scale: f32,
    lif: &Lif,
) -> Vec<f32> {
    let [t, b, c, n] = shape;
    let d = c / heads;
    let at = |x: &[f32], ti: usize, bi: usize, ch: usize, ni: usize| {
        x[((ti * b + bi) * c + ch) * n + ni] as f64
    };
    let mut out = vec![0.0f32; q.len()];
    for bi in 0..b {
        for h in 0..heads {
            let mut mem = vec![0.0f32; d * n];
            for ti in 0..t {
                let mut kv = vec![0.0f64; d * d];
                for j1 in 0..d {
                    for j2 in 0..d {
                        kv[j1 * d + j2] = (0..n)
                            .map(|ni| at(k, ti, bi, h * d + j1, ni) * at(v, ti, bi, h * d + j2, ni))
                            .sum();
                    }
                }
                for ni in 0..n {
                    for j2 in 0..d {
                        let x: f64 = (0..d)
                            .map(|j1| at(q, ti, bi, h * d + j1, ni) * kv[j1 * d + j2])
                            .sum();
                        let x = (x as f32) * scale;
                        let s = lif.step(&mut mem[j2 * n + ni], x);
                        out[((ti * b + bi) * c + h * d + j2) * n + ni] = if s { 1.0 } else { 0.0 };
                    }
                }
            }
        }
    }
    out
}

pub fn cases() -> Vec<Case> {
    // Spike rates chosen so that q (kᵀ v) / 8 straddles the 0.5 threshold.
    let list = [
        ([1usize, 1, 1, 1], 1usize, 0.5),
        ([4, 1, 8, 33], 2, 0.3),
        ([4, 2, 16, 64], 2, 0.3),
        ([2, 1, 48, 49], 8, 0.25),
        ([1, 3, 12, 7], 3, 0.7),
    ];
    list.into_iter()
        .map(|(shape, heads, rate)| {
            Case::new(
                "ssa",
                format!("[T,B,C,N]={shape:?} heads={heads} rate={rate}"),
                0.0,
                move |dev, rng| {
                    let (q, qs) = random_spikes(dev, rng, &shape, rate)?;
                    let (k, ks) = random_spikes(dev, rng, &shape, rate)?;
                    let (v, vs) = random_spikes(dev, rng, &shape, rate)?;
                    let (words, out) = packed_output(dev, &shape)?;
                    let mut rec = dev.recorder("test");
                    ssa_into(&mut rec, &qs, &ks, &vs, &Ssa::official(heads), &out)?;
                    rec.submit()?;
                    let want = reference(&q, &k, &v, shape, heads, 0.125, &Lif::ATTENTION);
                    check_spikes(dev, &words, &want, shape[3])
                },
            )
            .dtype("bits")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ssa_matches_reference_over_shape_sweep() {
        crate::harness::assert_cases(super::cases());
    }
}
