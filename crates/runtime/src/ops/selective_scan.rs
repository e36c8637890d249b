//! Mamba's selective scan (`shaders/selective_scan.wgsl`): the prompt scan (parallel over
//! time within chunks, carried between them) and the one-token state update for decoding.
//! The state accumulates in f32.

use bytemuck::{Pod, Zeroable};

use super::{expect_dtype, grid_1d};
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, output, Case, Rng};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::Recorder;
use crate::tensor::{DType, Tensor};

/// Where the scan's inputs lie: each is `[batch, len, row]` with its own row length, the
/// channel (or state) index added to a column offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanLayout {
    pub batch: usize,
    pub len: usize,
    /// Channels (d_inner).
    pub d: usize,
    /// States (d_state), at most 64.
    pub n: usize,
    /// Row length of u.
    pub u_stride: usize,
    /// Row length of dt (the dt_proj output, before its bias).
    pub dt_stride: usize,
    /// Row length of the tensor holding B and C (x_proj's output), and their offsets.
    pub bc_stride: usize,
    pub b_offset: usize,
    pub c_offset: usize,
    /// Row length of the tensor holding z (in_proj's output) and z's offset.
    pub z_stride: usize,
    pub z_offset: usize,
}

impl ScanLayout {
    /// Contiguous u, dt, z `[B, L, D]` and BC `[B, L, 2N]` (B then C).
    pub fn packed(batch: usize, len: usize, d: usize, n: usize) -> Self {
        Self {
            batch,
            len,
            d,
            n,
            u_stride: d,
            dt_stride: d,
            bc_stride: 2 * n,
            b_offset: 0,
            c_offset: n,
            z_stride: d,
            z_offset: 0,
        }
    }
    fn need(&self, stride: usize, width: usize) -> usize {
        (self.batch * self.len - 1) * stride + width
    }
}

/// The per-channel constants, packed in one `[D, N + 2]` f32 tensor (one storage binding:
/// default WebGPU limits allow 8 per shader stage, and the scan needs the rest): row `d` is
/// `A[d, 0..N]` (`A = -exp(A_log)`), dt_proj's bias, `D`. Built by [`pack_scan_weights`].
pub struct ScanWeights<'a> {
    pub packed: &'a Tensor,
}

/// The host data of [`ScanWeights`] from `A [D, N]`, `dt_bias [D]` and `D [D]`.
pub fn pack_scan_weights(a: &[f32], dt_bias: &[f32], d_skip: &[f32]) -> Result<Vec<f32>> {
    let d = dt_bias.len();
    if d == 0 || d_skip.len() != d || !a.len().is_multiple_of(d) {
        return Err(shape_err(
            "selective_scan",
            format!(
                "A ({}) must be [D, N] with dt_bias ({d}) and D ({}) of length D",
                a.len(),
                d_skip.len()
            ),
        ));
    }
    let n = a.len() / d;
    let mut out = Vec::with_capacity(d * (n + 2));
    for c in 0..d {
        out.extend_from_slice(&a[c * n..(c + 1) * n]);
        out.push(dt_bias[c]);
        out.push(d_skip[c]);
    }
    Ok(out)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    batch: u32,
    len: u32,
    d: u32,
    n: u32,
    u_stride: u32,
    dt_stride: u32,
    bc_stride: u32,
    b_offset: u32,
    c_offset: u32,
    z_stride: u32,
    z_offset: u32,
    has_h0: u32,
}

fn params(l: &ScanLayout, h0: bool) -> Params {
    let u = |v: usize| v as u32;
    Params {
        batch: u(l.batch),
        len: u(l.len),
        d: u(l.d),
        n: u(l.n),
        u_stride: u(l.u_stride),
        dt_stride: u(l.dt_stride),
        bc_stride: u(l.bc_stride),
        b_offset: u(l.b_offset),
        c_offset: u(l.c_offset),
        z_stride: u(l.z_stride),
        z_offset: u(l.z_offset),
        has_h0: h0 as u32,
    }
}

fn padded_states(n: usize) -> Result<u32> {
    if n == 0 || n > 64 {
        return Err(shape_err(
            "selective_scan",
            format!("d_state = {n} must be in 1..=64"),
        ));
    }
    Ok(n.next_power_of_two().max(4) as u32)
}

fn check(
    l: &ScanLayout,
    u: &Tensor,
    dt: &Tensor,
    bc: &Tensor,
    z: &Tensor,
    w: &ScanWeights,
) -> Result<()> {
    for (name, t) in [
        ("u", u),
        ("dt", dt),
        ("bc", bc),
        ("z", z),
        ("A, dt_bias, D", w.packed),
    ] {
        expect_dtype("selective_scan", name, t, DType::F32)?;
    }
    let short = |name: &str, t: &Tensor, need: usize| -> Result<()> {
        if t.numel() < need {
            return Err(shape_err(
                "selective_scan",
                format!("{name} {:?} is too small for {l:?}", t.shape()),
            ));
        }
        Ok(())
    };
    if l.batch == 0 || l.len == 0 || l.d == 0 {
        return Err(shape_err("selective_scan", format!("empty scan {l:?}")));
    }
    short("u", u, l.need(l.u_stride, l.d))?;
    short("dt", dt, l.need(l.dt_stride, l.d))?;
    short(
        "bc",
        bc,
        l.need(l.bc_stride, l.b_offset.max(l.c_offset) + l.n),
    )?;
    short("z", z, l.need(l.z_stride, l.z_offset + l.d))?;
    if w.packed.numel() != l.d * (l.n + 2) {
        return Err(shape_err(
            "selective_scan",
            format!(
                "the packed A, dt_bias, D must be [{}, {} + 2], got {:?}",
                l.d,
                l.n,
                w.packed.shape()
            ),
        ));
    }
    Ok(())
}

/// The prompt scan: writes gated `y [B, L, D]` and the final state `[B, D, N]`, starting
/// from `h0 [B, D, N]` (or zeros).
#[allow(clippy::too_many_arguments)]
pub fn selective_scan_into(
    rec: &mut Recorder,
    l: &ScanLayout,
    u: &Tensor,
    dt: &Tensor,
    bc: &Tensor,
    z: &Tensor,
    w: &ScanWeights,
    h0: Option<&Tensor>,
    y: &Tensor,
    h_out: &Tensor,
) -> Result<()> {
    check(l, u, dt, bc, z, w)?;
    let ns = padded_states(l.n)?;
    if y.numel() != l.batch * l.len * l.d || h_out.numel() != l.batch * l.d * l.n {
        return Err(shape_err(
            "selective_scan",
            "y must be [B, L, D] and the state [B, D, N]",
        ));
    }
    if let Some(h) = h0 {
        if h.numel() != l.batch * l.d * l.n {
            return Err(shape_err(
                "selective_scan",
                "the initial state must be [B, D, N]",
            ));
        }
    }
    let key = PipelineKey::new(Shader::SelectiveScan, "selective_scan", 6, 2).constant("NS", ns);
    let p = params(l, h0.is_some());
    let tokens = (l.batch * l.len) as u64;
    rec.dispatch(
        &key,
        &p,
        &[u, dt, bc, z, w.packed, h0.unwrap_or(w.packed)],
        &[y, h_out],
        grid_1d((l.batch * l.d) as u32),
        || OpInfo {
            name: "selective_scan",
            shape: format!("B={} L={} D={} N={}", l.batch, l.len, l.d, l.n),
            // u, dt, z, y per channel and token; B, C per token.
            bytes: 4 * (tokens * (4 * l.d as u64 + 2 * l.n as u64)),
            flops: tokens * (l.d * l.n) as u64 * 7,
        },
    )
}

/// One decoding step: `state [B, D, N]` updated in place, gated `y [B, D]` written.
#[allow(clippy::too_many_arguments)]
pub fn selective_state_update(
    rec: &mut Recorder,
    l: &ScanLayout,
    u: &Tensor,
    dt: &Tensor,
    bc: &Tensor,
    z: &Tensor,
    w: &ScanWeights,
    state: &Tensor,
    y: &Tensor,
) -> Result<()> {
    if l.len != 1 {
        return Err(shape_err(
            "selective_state_update",
            format!("one token per sequence, got len {}", l.len),
        ));
    }
    check(l, u, dt, bc, z, w)?;
    let ns = padded_states(l.n)?;
    if state.numel() != l.batch * l.d * l.n || y.numel() != l.batch * l.d {
        return Err(shape_err(
            "selective_state_update",
            "the state must be [B, D, N] and y [B, D]",
        ));
    }
    let per = (rec.device().wg() / ns) as usize;
    let key =
        PipelineKey::new(Shader::SelectiveScan, "selective_state_update", 5, 2).constant("NS", ns);
    rec.dispatch(
        &key,
        &params(l, true),
        &[u, dt, bc, z, w.packed],
        &[y, state],
        grid_1d((l.batch * l.d).div_ceil(per) as u32),
        || OpInfo {
            name: "selective_state_update",
            shape: format!("B={} D={} N={}", l.batch, l.d, l.n),
            bytes: 4 * (l.batch * (2 * l.d * l.n + 4 * l.d + 2 * l.n)) as u64,
            flops: (l.batch * l.d * l.n * 7) as u64,
        },
    )
}

/// Host data of one scan problem (contiguous layout), for references and tests.
pub struct ScanData {
    pub u: Vec<f32>,
    pub dt: Vec<f32>,
    pub bc: Vec<f32>,
    pub z: Vec<f32>,
    pub a: Vec<f32>,
    pub dt_bias: Vec<f32>,
    pub d_skip: Vec<f32>,
    pub h0: Vec<f32>,
}

impl ScanData {
    /// Random inputs in Mamba's ranges (A = -(1..N), dt around softplus⁻¹ of 0.001..0.1).
    pub fn random(rng: &mut Rng, l: &ScanLayout) -> Self {
        let (bl, d, n) = (l.batch * l.len, l.d, l.n);
        Self {
            u: rng.vec(bl * d, -2.0, 2.0),
            dt: rng.vec(bl * d, -1.0, 1.0),
            bc: rng.vec(bl * 2 * n, -1.5, 1.5),
            z: rng.vec(bl * d, -3.0, 3.0),
            a: (0..d * n)
                .map(|i| -((i % n) as f32 + 1.0) * rng.uniform(0.8, 1.2))
                .collect(),
            dt_bias: rng.vec(d, -4.0, -2.0),
            d_skip: rng.vec(d, 0.5, 1.5),
            h0: rng.vec(l.batch * d * n, -1.0, 1.0),
        }
    }

    /// A, dt_bias and D packed as [`ScanWeights`] holds them.
    pub fn packed_weights(&self) -> Result<Vec<f32>> {
        pack_scan_weights(&self.a, &self.dt_bias, &self.d_skip)
    }

    /// Sequential f64 reference: `(y [B, L, D], final state [B, D, N])`.
    pub fn reference(&self, l: &ScanLayout, with_h0: bool) -> (Vec<f64>, Vec<f64>) {
        let (d, n) = (l.d, l.n);
        let sp = |x: f64| if x > 20.0 { x } else { x.exp().ln_1p() };
        let silu = |x: f64| x / (1.0 + (-x).exp());
        let mut y = vec![0.0; l.batch * l.len * d];
        let mut hs = vec![0.0; l.batch * d * n];
        for b in 0..l.batch {
            for c in 0..d {
                let mut h: Vec<f64> = (0..n)
                    .map(|k| {
                        if with_h0 {
                            self.h0[(b * d + c) * n + k] as f64
                        } else {
                            0.0
                        }
                    })
                    .collect();
                for t in 0..l.len {
                    let row = b * l.len + t;
                    let uv = self.u[row * d + c] as f64;
                    let delta = sp(self.dt[row * d + c] as f64 + self.dt_bias[c] as f64);
                    let mut acc = 0.0;
                    for (k, hk) in h.iter_mut().enumerate() {
                        let a = (delta * self.a[c * n + k] as f64).exp();
                        *hk = a * *hk + delta * self.bc[row * 2 * n + k] as f64 * uv;
                        acc += *hk * self.bc[row * 2 * n + n + k] as f64;
                    }
                    y[row * d + c] =
                        (acc + self.d_skip[c] as f64 * uv) * silu(self.z[row * d + c] as f64);
                }
                hs[(b * d + c) * n..(b * d + c + 1) * n].copy_from_slice(&h);
            }
        }
        (y, hs)
    }
}

pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (batch, len, d, n, h0) in [
        (1usize, 1usize, 1usize, 1usize, false),
        (1, 7, 5, 16, false),
        (3, 64, 9, 16, true),
        (2, 1031, 4, 16, true),
        (1, 33, 3, 5, false),
        (2, 17, 6, 32, true),
    ] {
        v.push(Case::new(
            "selective_scan",
            format!(
                "B={batch} L={len} D={d} N={n}{}",
                if h0 { " +h0" } else { "" }
            ),
            1e-9,
            move |dev, rng| {
                let l = ScanLayout::packed(batch, len, d, n);
                let s = ScanData::random(rng, &l);
                let up = |x: &Vec<f32>, shape: &[usize]| dev.tensor_f32(x, shape);
                let (u, dt, bc, z) = (
                    up(&s.u, &[batch, len, d])?,
                    up(&s.dt, &[batch, len, d])?,
                    up(&s.bc, &[batch, len, 2 * n])?,
                    up(&s.z, &[batch, len, d])?,
                );
                let cw = dev.weight_f32(&s.packed_weights()?, &[d, n + 2])?;
                let hh = up(&s.h0, &[batch, d, n])?;
                let y = output(dev, &[batch, len, d], DType::F32)?;
                let h = output(dev, &[batch, d, n], DType::F32)?;
                let mut rec = dev.recorder("test");
                let w = ScanWeights { packed: &cw };
                selective_scan_into(
                    &mut rec,
                    &l,
                    &u,
                    &dt,
                    &bc,
                    &z,
                    &w,
                    h0.then_some(&hh),
                    &y,
                    &h,
                )?;
                rec.submit()?;
                let (wy, wh) = s.reference(&l, h0);
                Ok(check_f32(dev, &y, &wy)?.merge(check_f32(dev, &h, &wh)?))
            },
        ));
    }
    for (batch, d, n) in [
        (1usize, 1usize, 1usize),
        (3, 37, 16),
        (8, 64, 16),
        (2, 5, 32),
    ] {
        v.push(Case::new(
            "selective_state_update",
            format!("B={batch} D={d} N={n}"),
            1e-10,
            move |dev, rng| {
                let l = ScanLayout::packed(batch, 1, d, n);
                let s = ScanData::random(rng, &l);
                let up = |x: &Vec<f32>, shape: &[usize]| dev.tensor_f32(x, shape);
                let (u, dt, bc, z) = (
                    up(&s.u, &[batch, d])?,
                    up(&s.dt, &[batch, d])?,
                    up(&s.bc, &[batch, 2 * n])?,
                    up(&s.z, &[batch, d])?,
                );
                let cw = dev.weight_f32(&s.packed_weights()?, &[d, n + 2])?;
                let state = dev.alloc_with_capacity(&[batch, d, n], DType::F32, 0)?;
                dev.write(&state, bytemuck::cast_slice(&s.h0))?;
                let y = output(dev, &[batch, d], DType::F32)?;
                let mut rec = dev.recorder("test");
                let w = ScanWeights { packed: &cw };
                selective_state_update(&mut rec, &l, &u, &dt, &bc, &z, &w, &state, &y)?;
                rec.submit()?;
                let (wy, wh) = s.reference(&l, true);
                let got_h = dev.read_f32(&state)?;
                let mut c = check_f32(dev, &y, &wy)?;
                let (num, den) = got_h.iter().zip(&wh).fold((0.0, 0.0), |(a, b), (g, r)| {
                    (a + (*g as f64 - r).powi(2), b + r * r)
                });
                c.nmse = c.nmse.max(num / den.max(1e-30));
                Ok(c)
            },
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn selective_scan_matches_reference_over_shape_sweep() {
        crate::harness::assert_cases(super::cases());
    }
}
