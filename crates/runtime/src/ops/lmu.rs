//! The Legendre Memory Unit's linear memory (`shaders/lmu.wgsl`): `m_t = Ā m_{t-1} + B̄ u_t`
//! for one scalar input per token, over token-major `[N, B, M]` activations.
//!
//! - Whole sequence: the causal convolution with the impulse response `H[:, k] = Ā^k B̄` as
//!   one Toeplitz product (`N <=` the columns of H; LMUFormer stores 128), or, for longer
//!   sequences, in chunks of C tokens: Toeplitz inside each chunk, the state at each chunk's
//!   end carried by `Ā^C`, and each chunk's free response `Ā^{τ+1} e` added. Ā is never
//!   diagonalised (its eigenvectors are ill-conditioned in f32); its powers are formed in f64.
//! - Streaming: `m ← Ā m + B̄ u` for S streams (a GEMV per stream).

use std::sync::Mutex;

use bytemuck::{Pod, Zeroable};

use super::{expect_dtype, grid_elems};
use crate::device::Device;
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, output, Case, Rng};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::{grid_1d, Recorder};
use crate::tensor::{DType, Tensor};

/// The largest memory the chunked carry kernel holds in workgroup memory.
pub const MAX_CHUNKED_MEMORY: usize = 2048;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct Params {
    n: u32,
    b: u32,
    m: u32,
    chunk: u32,
    h_cols: u32,
    chunks: u32,
    _pad: [u32; 2],
}

/// Chunk matrices: `(Ā^C)ᵀ` and `(Ā^{τ+1})ᵀ` for τ < C.
struct Chunked {
    c: usize,
    pt: Tensor,
    kt: Tensor,
}

/// An LMU's matrices on the GPU (from the checkpoint's `A [M, M]`, `B [M, 1]`, `H [M, L]`).
pub struct LmuMatrices {
    pub m: usize,
    /// Columns of H (the longest sequence the one-shot Toeplitz product covers).
    pub h_cols: usize,
    a: Vec<f32>,
    ht: Tensor,
    at: Tensor,
    b: Tensor,
    chunked: Mutex<Option<std::sync::Arc<Chunked>>>,
}

fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = x[r * cols + c];
        }
    }
    t
}

impl LmuMatrices {
    /// `a [M, M]` (Ā), `b [M]` (B̄), `h [M, h_cols]` (H[:, k] = Ā^k B̄), row-major.
    pub fn new(dev: &Device, a: &[f32], b: &[f32], h: &[f32], m: usize) -> Result<Self> {
        if m == 0 || a.len() != m * m || b.len() != m || h.is_empty() || !h.len().is_multiple_of(m)
        {
            return Err(shape_err(
                "lmu",
                format!(
                    "A must be [M, M], B [M, 1] and H [M, L] with M = {m}: got {}, {}, {} values",
                    a.len(),
                    b.len(),
                    h.len()
                ),
            ));
        }
        let h_cols = h.len() / m;
        Ok(Self {
            m,
            h_cols,
            a: a.to_vec(),
            ht: dev.weight_f32(&transpose(h, m, h_cols), &[h_cols, m])?,
            at: dev.weight_f32(&transpose(a, m, m), &[m, m])?,
            b: dev.weight_f32(b, &[m])?,
            chunked: Mutex::new(None),
        })
    }

    /// The chunk matrices for chunk length `c` (formed once, in f64, on first use).
    fn chunked(&self, dev: &Device, c: usize) -> Result<std::sync::Arc<Chunked>> {
        let mut slot = self
            .chunked
            .lock()
            .map_err(|_| shape_err("lmu", "chunk matrices lock poisoned"))?;
        if let Some(ch) = slot.as_ref().filter(|ch| ch.c == c) {
            return Ok(ch.clone());
        }
        let m = self.m;
        let a: Vec<f64> = self.a.iter().map(|&v| v as f64).collect();
        let pows = powers(&a, m, c);
        let mut kt = vec![0.0f32; c * m * m];
        for (tau, p) in pows.iter().enumerate() {
            for i in 0..m {
                for l in 0..m {
                    kt[tau * m * m + l * m + i] = p[i * m + l] as f32;
                }
            }
        }
        let pt = kt[(c - 1) * m * m..].to_vec();
        let ch = std::sync::Arc::new(Chunked {
            c,
            pt: dev.weight_f32(&pt, &[m, m])?,
            kt: dev.weight_f32(&kt, &[c, m, m])?,
        });
        *slot = Some(ch.clone());
        Ok(ch)
    }
}

/// `Ā^{τ+1}` for τ < c, in f64, row-major.
pub fn powers(a: &[f64], m: usize, c: usize) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = vec![a.to_vec()];
    for _ in 1..c {
        let prev = out.last().expect("non-empty");
        out.push(matmul(prev, a, m));
    }
    out
}

fn matmul(x: &[f64], y: &[f64], m: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * m];
    for i in 0..m {
        for k in 0..m {
            let xv = x[i * m + k];
            if xv == 0.0 {
                continue;
            }
            let row = &y[k * m..(k + 1) * m];
            for (o, yv) in out[i * m..(i + 1) * m].iter_mut().zip(row) {
                *o += xv * yv;
            }
        }
    }
    out
}

/// The LMU's ZOH-discretised Legendre state-space matrices (dt = 1), in f64: `(Ā [M, M],
/// B̄ [M])`, as the official `stateSpaceMatrices` (scipy's `cont2discrete`, method "zoh").
/// Computed as `expm([[A, B], [0, 0]])` by scaling and squaring.
pub fn legendre_zoh(m: usize, theta: f64) -> (Vec<f64>, Vec<f64>) {
    let n = m + 1;
    let mut z = vec![0.0f64; n * n];
    for i in 0..m {
        let r = (2 * i + 1) as f64 / theta;
        for j in 0..m {
            let v = if i < j {
                -1.0
            } else if (i - j + 1) % 2 == 0 {
                1.0
            } else {
                -1.0
            };
            z[i * n + j] = r * v;
        }
        z[i * n + m] = r * if i % 2 == 0 { 1.0 } else { -1.0 };
    }
    let e = expm(&z, n);
    let a = (0..m)
        .flat_map(|i| e[i * n..i * n + m].to_vec())
        .collect::<Vec<_>>();
    let b = (0..m).map(|i| e[i * n + m]).collect();
    (a, b)
}

fn expm(z: &[f64], n: usize) -> Vec<f64> {
    let norm = (0..n)
        .map(|j| (0..n).map(|i| z[i * n + j].abs()).sum::<f64>())
        .fold(0.0, f64::max);
    let s = if norm > 0.5 {
        (norm / 0.5).log2().ceil() as i32
    } else {
        0
    };
    let scale = 0.5f64.powi(s);
    let x: Vec<f64> = z.iter().map(|v| v * scale).collect();
    let mut result = vec![0.0; n * n];
    let mut term = vec![0.0; n * n];
    for i in 0..n {
        result[i * n + i] = 1.0;
        term[i * n + i] = 1.0;
    }
    for k in 1..=20 {
        term = matmul(&term, &x, n);
        let f = 1.0 / k as f64;
        term.iter_mut().for_each(|v| *v *= f);
        result.iter_mut().zip(&term).for_each(|(r, t)| *r += t);
    }
    for _ in 0..s {
        result = matmul(&result, &result, n);
    }
    result
}

/// `H [M, cols]` with `H[:, k] = Ā^k B̄`, in f64 (the official `impulse`).
pub fn impulse(a: &[f64], b: &[f64], m: usize, cols: usize) -> Vec<f64> {
    let mut h = vec![0.0; m * cols];
    let mut v = b.to_vec();
    for k in 0..cols {
        for i in 0..m {
            h[i * cols + k] = v[i];
        }
        v = (0..m)
            .map(|i| (0..m).map(|j| a[i * m + j] * v[j]).sum())
            .collect();
    }
    h
}

fn check_u(u: &Tensor, n: usize, b: usize) -> Result<()> {
    expect_dtype("lmu_memory", "u", u, DType::F32)?;
    if u.numel() != n * b {
        return Err(shape_err(
            "lmu_memory",
            format!("u {:?} must hold {n} tokens x {b} sequences", u.shape()),
        ));
    }
    Ok(())
}

/// The chunk length the whole-sequence memory uses for `n` tokens: `n` itself when H covers
/// it (one Toeplitz product), else chunks of up to 32 tokens.
pub fn chunk_for(mats: &LmuMatrices, n: usize) -> usize {
    if n <= mats.h_cols {
        n
    } else {
        mats.h_cols.min(32)
    }
}

/// `out [N, B, M]`: the memory of `u [N, B]` from a zero state.
pub fn memory_into(
    rec: &mut Recorder,
    mats: &LmuMatrices,
    u: &Tensor,
    n: usize,
    b: usize,
    out: &Tensor,
) -> Result<()> {
    memory_chunked_into(rec, mats, u, n, b, chunk_for(mats, n), out)
}

/// [`memory_into`] with an explicit chunk length (`chunk >= n` is the one-shot Toeplitz
/// product; needs `min(chunk, n) <=` the columns of H).
pub fn memory_chunked_into(
    rec: &mut Recorder,
    mats: &LmuMatrices,
    u: &Tensor,
    n: usize,
    b: usize,
    chunk: usize,
    out: &Tensor,
) -> Result<()> {
    check_u(u, n, b)?;
    let m = mats.m;
    let c = chunk.min(n);
    if n == 0 || b == 0 || c == 0 || c > mats.h_cols {
        return Err(shape_err(
            "lmu_memory",
            format!(
                "{n} tokens in chunks of {chunk}: chunks must be 1..={} tokens (the columns of H)",
                mats.h_cols
            ),
        ));
    }
    if out.dtype() != DType::F32 || out.numel() != n * b * m {
        return Err(shape_err(
            "lmu_memory",
            format!("output must be f32 [{n}, {b}, {m}], got {:?}", out.shape()),
        ));
    }
    let chunks = n.div_ceil(c);
    if chunks > 1 && m > MAX_CHUNKED_MEMORY {
        return Err(shape_err(
            "lmu_memory",
            format!("chunked memory supports M <= {MAX_CHUNKED_MEMORY}, got {m}"),
        ));
    }
    let p = Params {
        n: n as u32,
        b: b as u32,
        m: m as u32,
        chunk: c as u32,
        h_cols: mats.h_cols as u32,
        chunks: chunks as u32,
        _pad: [0; 2],
    };
    let local = PipelineKey::new(Shader::Lmu, "memory_local", 2, 1);
    rec.dispatch(
        &local,
        &p,
        &[u, &mats.ht],
        &[out],
        grid_elems(rec, n * b * m),
        || OpInfo {
            name: "lmu_toeplitz",
            shape: format!("n={n} b={b} m={m} chunk={c}"),
            bytes: 4 * (n * b + c * m + n * b * m) as u64,
            flops: (n * b * m * (c + 1)) as u64,
        },
    )?;
    if chunks == 1 {
        return Ok(());
    }
    let ch = mats.chunked(rec.device(), c)?;
    let carry = rec.alloc(&[chunks - 1, b, m], DType::F32)?;
    // One workgroup per batch entry along x (the kernel reads `wid.x`).
    if b > 65_535 {
        return Err(shape_err(
            "lmu_carry",
            format!("batch {b} exceeds 65,535 (one workgroup per sequence)"),
        ));
    }
    let key = PipelineKey::new(Shader::Lmu, "memory_carry", 2, 1);
    rec.dispatch(
        &key,
        &p,
        &[out, &ch.pt],
        &[&carry],
        grid_1d(b as u32),
        || OpInfo {
            name: "lmu_carry",
            shape: format!("chunks={chunks} b={b} m={m}"),
            bytes: 4 * (m * m + 2 * chunks * b * m) as u64,
            flops: 2 * (chunks * b * m * m) as u64,
        },
    )?;
    let key = PipelineKey::new(Shader::Lmu, "memory_free", 2, 1);
    rec.dispatch(
        &key,
        &p,
        &[&ch.kt, &carry],
        &[out],
        grid_elems(rec, (n - c) * b * m),
        || OpInfo {
            name: "lmu_free",
            shape: format!("n={n} b={b} m={m} chunk={c}"),
            bytes: 4 * (c * m * m + 2 * n * b * m) as u64,
            flops: 2 * ((n - c) * b * m * m) as u64,
        },
    )
}

/// One token for S streams: `m_out = Ā m_in + B̄ u` (`u [S]`, `m_* [S, M]`).
pub fn memory_step_into(
    rec: &mut Recorder,
    mats: &LmuMatrices,
    u: &Tensor,
    m_in: &Tensor,
    m_out: &Tensor,
) -> Result<()> {
    let s = u.numel();
    check_u(u, 1, s)?;
    let m = mats.m;
    for (what, t) in [("m_in", m_in), ("m_out", m_out)] {
        expect_dtype("lmu_step", what, t, DType::F32)?;
        if t.numel() != s * m {
            return Err(shape_err(
                "lmu_step",
                format!("{what} {:?} must be [{s}, {m}]", t.shape()),
            ));
        }
    }
    let p = Params {
        b: s as u32,
        m: m as u32,
        ..Params::default()
    };
    let key = PipelineKey::new(Shader::Lmu, "memory_step", 4, 1);
    rec.dispatch(
        &key,
        &p,
        &[&mats.at, &mats.b, u, m_in],
        &[m_out],
        grid_elems(rec, s * m),
        || OpInfo {
            name: "lmu_step",
            shape: format!("s={s} m={m}"),
            bytes: 4 * (m * m + 2 * s * m + s) as u64,
            flops: 2 * (s * m * m) as u64,
        },
    )
}

/// f64 reference: the recurrence `m_t = Ā m_{t-1} + B̄ u_t` over `u [N, B]` → `[N, B, M]`.
pub fn reference(a: &[f32], b: &[f32], u: &[f32], n: usize, batch: usize) -> Vec<f64> {
    let m = b.len();
    let mut out = vec![0.0; n * batch * m];
    for s in 0..batch {
        let mut state = vec![0.0f64; m];
        for t in 0..n {
            let next: Vec<f64> = (0..m)
                .map(|i| {
                    (0..m).map(|j| a[i * m + j] as f64 * state[j]).sum::<f64>()
                        + b[i] as f64 * u[t * batch + s] as f64
                })
                .collect();
            out[(t * batch + s) * m..(t * batch + s + 1) * m].copy_from_slice(&next);
            state = next;
        }
    }
    out
}

/// An LMU of memory `m` (θ = `theta`) with `h_cols` columns of H, as f32 like a checkpoint.
pub fn test_matrices(m: usize, theta: f64, h_cols: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (a, b) = legendre_zoh(m, theta);
    let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let (a, b) = (f(&a), f(&b));
    let g = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let h = impulse(&g(&a), &g(&b), m, h_cols);
    (a, b, f(&h))
}

/// Spike-like or real inputs: LMUFormer feeds ReLU outputs, the spiking one 0/1 spikes.
fn inputs(rng: &mut Rng, len: usize, spikes: bool) -> Vec<f32> {
    (0..len)
        .map(|_| {
            if spikes {
                (rng.below(3) == 0) as u32 as f32
            } else {
                rng.uniform(0.0, 2.0)
            }
        })
        .collect()
}

pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    // (tokens, batch, memory, chunk, spikes); chunk >= tokens is the one-shot product.
    for (n, b, m, chunk, spikes) in [
        (1, 1, 1, 128, false),
        (7, 3, 5, 128, true),
        (128, 1, 64, 128, false),
        (128, 2, 256, 128, true),
        (50, 2, 17, 16, false),
        (300, 1, 64, 32, true),
        (33, 3, 8, 1, false),
    ] {
        v.push(Case::new(
            "lmu_memory",
            format!(
                "n={n},b={b},m={m},chunk={chunk}{}",
                if spikes { ",spikes" } else { "" }
            ),
            1e-10,
            move |dev, rng| {
                let (a, bv, h) = test_matrices(m, 128.0, 128);
                let mats = LmuMatrices::new(dev, &a, &bv, &h, m)?;
                let u = inputs(rng, n * b, spikes);
                let ut = dev.tensor_f32(&u, &[n, b])?;
                let out = output(dev, &[n, b, m], DType::F32)?;
                let mut rec = dev.recorder("test");
                memory_chunked_into(&mut rec, &mats, &ut, n, b, chunk, &out)?;
                rec.submit()?;
                check_f32(dev, &out, &reference(&a, &bv, &u, n, b))
            },
        ));
    }
    for (n, s, m) in [(1, 1, 1), (9, 3, 33), (20, 8, 256)] {
        v.push(Case::new(
            "lmu_step",
            format!("tokens={n},streams={s},m={m}"),
            1e-10,
            move |dev, rng| {
                let (a, bv, h) = test_matrices(m, 128.0, 128);
                let mats = LmuMatrices::new(dev, &a, &bv, &h, m)?;
                let u = inputs(rng, n * s, false);
                let mut state = dev.tensor_f32(&vec![0.0; s * m], &[s, m])?;
                let mut got = Vec::new();
                for t in 0..n {
                    let ut = dev.tensor_f32(&u[t * s..(t + 1) * s], &[s])?;
                    let next = output(dev, &[s, m], DType::F32)?;
                    let mut rec = dev.recorder("test");
                    memory_step_into(&mut rec, &mats, &ut, &state, &next)?;
                    rec.submit()?;
                    got.extend(dev.read_f32(&next)?);
                    state = next;
                }
                let out = output(dev, &[n, s, m], DType::F32)?;
                dev.write(&out, bytemuck::cast_slice(&got))?;
                check_f32(dev, &out, &reference(&a, &bv, &u, n, s))
            },
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn lmu_memory_matches_recurrence_over_shape_sweep() {
        crate::harness::assert_cases(super::cases());
    }

    #[test]
    fn legendre_matrices_match_the_known_first_entries() {
        // M = 1: A = -1/θ, B = 1/θ, so Ā = e^{-1/θ}, B̄ = 1 - e^{-1/θ}.
        let (a, b) = super::legendre_zoh(1, 128.0);
        let e = (-1.0f64 / 128.0).exp();
        assert!((a[0] - e).abs() < 1e-14 && (b[0] - (1.0 - e)).abs() < 1e-14);
    }
}
