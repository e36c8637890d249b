//! Spike-driven self-attention of the Spike-driven Transformer (V1) on packed spikes
//! (`shaders/sdsa.wgsl`): `kv = Σ_tokens (k ⊙ v)` per channel, an LIF over T on kv
//! (threshold 0.5 in the official model), then `q ⊙ kv`.

use bytemuck::{Pod, Zeroable};

use super::grid_elems;
use super::lif::Lif;
use crate::error::{shape_err, Result};
use crate::harness::{check_spikes, packed_output, random_spikes, Case};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::Recorder;
use crate::spikes::{words_for, PackedSpikes};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    t: u32,
    b: u32,
    c: u32,
    words: u32,
    v_th: f32,
    tau: f32,
    v_reset: f32,
    _pad: u32,
}

/// q, k, v and out: packed spikes `[T, B, C, N]`.
pub fn sdsa_into(
    rec: &mut Recorder,
    q: &PackedSpikes,
    k: &PackedSpikes,
    v: &PackedSpikes,
    lif: &Lif,
    out: &PackedSpikes,
) -> Result<()> {
    let s = q.shape();
    if s.len() != 4 || k.shape() != s || v.shape() != s || out.shape() != s {
        return Err(shape_err(
            "sdsa",
            format!("q {:?}, k, v and out must all be [T, B, C, N]", s),
        ));
    }
    let (t, b, c, n) = (s[0], s[1], s[2], s[3]);
    let p = Params {
        t: t as u32,
        b: b as u32,
        c: c as u32,
        words: words_for(n) as u32,
        v_th: lif.v_th,
        tau: lif.tau,
        v_reset: lif.v_reset,
        _pad: 0,
    };
    let key = PipelineKey::new(Shader::Sdsa, "sdsa", 3, 1);
    rec.dispatch(
        &key,
        &p,
        &[q.words(), k.words(), v.words()],
        &[out.words()],
        grid_elems(rec, b * c),
        || OpInfo {
            name: "sdsa",
            shape: format!("{s:?}"),
            bytes: 4 * q.words().bytes(),
            flops: (t * b * c * n) as u64,
        },
    )
}

/// [`sdsa_into`] into a new packed tensor.
pub fn sdsa(
    rec: &mut Recorder,
    q: &PackedSpikes,
    k: &PackedSpikes,
    v: &PackedSpikes,
    lif: &Lif,
) -> Result<PackedSpikes> {
    let out = PackedSpikes::alloc_in(rec, q.shape())?;
    sdsa_into(rec, q, k, v, lif, &out)?;
    Ok(out)
}

/// Reference on 0/1 data `[T, B, C, N]`.
pub fn reference(q: &[f32], k: &[f32], v: &[f32], shape: [usize; 4], lif: &Lif) -> Vec<f32> {
    let [t, b, c, n] = shape;
    let mut out = vec![0.0; q.len()];
    for bc in 0..b * c {
        let mut mem = 0.0f32;
        for ti in 0..t {
            let row = (ti * b * c + bc) * n;
            let kv: f32 = (0..n).map(|j| k[row + j] * v[row + j]).sum();
            let s = lif.step(&mut mem, kv);
            for j in 0..n {
                out[row + j] = if s { q[row + j] } else { 0.0 };
            }
        }
    }
    out
}

pub fn cases() -> Vec<Case> {
    let list = [
        [1usize, 1, 1, 1],
        [4, 1, 8, 33],
        [4, 2, 16, 196],
        [1, 3, 5, 64],
        [2, 1, 7, 100],
    ];
    list.into_iter()
        .map(|shape| {
            Case::new(
                "sdsa",
                format!("[T,B,C,N]={shape:?}"),
                0.0,
                move |dev, rng| {
                    // Sparse enough that kv sits near the threshold for some channels.
                    let rate = (1.0 / shape[3] as f64).sqrt().min(0.5);
                    let (q, qs) = random_spikes(dev, rng, &shape, rate)?;
                    let (k, ks) = random_spikes(dev, rng, &shape, rate)?;
                    let (v, vs) = random_spikes(dev, rng, &shape, rate)?;
                    let (words, out) = packed_output(dev, &shape)?;
                    let mut rec = dev.recorder("test");
                    sdsa_into(&mut rec, &qs, &ks, &vs, &Lif::ATTENTION, &out)?;
                    rec.submit()?;
                    check_spikes(
                        dev,
                        &words,
                        &reference(&q, &k, &v, shape, &Lif::ATTENTION),
                        shape[3],
                    )
                },
            )
            .dtype("bits")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sdsa_matches_reference_over_shape_sweep() {
        crate::harness::assert_cases(super::cases());
    }
}
