//! Max pooling (`shaders/pool.wgsl`), as `torch.nn.MaxPool2d` in floor mode, on f32 maps
//! and on packed binary spike maps (where the max is an OR).

use bytemuck::{Pod, Zeroable};

use super::{expect_dtype, expect_out, grid_elems};
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, check_spikes, output, packed_output, Case};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::Recorder;
use crate::spikes::{words_for, PackedSpikes};
use crate::tensor::{DType, Tensor};

/// `torch.nn.MaxPool2d(kernel, stride, padding, dilation)` (index 0 = H, 1 = W).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool2d {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

impl MaxPool2d {
    pub fn new(kernel: usize, stride: usize, padding: usize) -> Self {
        Self {
            kernel: [kernel; 2],
            stride: [stride; 2],
            padding: [padding; 2],
            dilation: [1, 1],
        }
    }
    /// Output shape for `x [N, C, H, W]`, with PyTorch's rule that padding is at most half
    /// the kernel.
    pub fn out_shape(&self, x: &[usize]) -> Result<[usize; 4]> {
        if x.len() != 4 {
            return Err(shape_err(
                "maxpool2d",
                format!("x {x:?} must be [N, C, H, W]"),
            ));
        }
        let mut o = [x[0], x[1], 0, 0];
        for a in 0..2 {
            let (k, s, p, d) = (
                self.kernel[a],
                self.stride[a],
                self.padding[a],
                self.dilation[a],
            );
            if k == 0 || s == 0 || d == 0 || 2 * p > k {
                return Err(shape_err(
                    "maxpool2d",
                    format!("{self:?}: padding must be at most half the kernel"),
                ));
            }
            let span = d * (k - 1) + 1;
            if x[2 + a] + 2 * p < span {
                return Err(shape_err(
                    "maxpool2d",
                    format!("{self:?} does not fit input {x:?}"),
                ));
            }
            o[2 + a] = (x[2 + a] + 2 * p - span) / s + 1;
        }
        Ok(o)
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    k: [u32; 2],
    s: [u32; 2],
    p: [u32; 2],
    d: [u32; 2],
    _pad: [u32; 2],
}

fn params(xs: &[usize], os: &[usize; 4], mp: &MaxPool2d) -> Params {
    let u = |v: [usize; 2]| v.map(|a| a as u32);
    Params {
        n: xs[0] as u32,
        c: xs[1] as u32,
        h: xs[2] as u32,
        w: xs[3] as u32,
        oh: os[2] as u32,
        ow: os[3] as u32,
        k: u(mp.kernel),
        s: u(mp.stride),
        p: u(mp.padding),
        d: u(mp.dilation),
        _pad: [0; 2],
    }
}

pub fn maxpool2d_into(rec: &mut Recorder, x: &Tensor, mp: &MaxPool2d, out: &Tensor) -> Result<()> {
    expect_dtype("maxpool2d", "x", x, DType::F32)?;
    let os = mp.out_shape(x.shape())?;
    expect_out("maxpool2d", out, &os, DType::F32)?;
    let xs = x.shape();
    let p = params(xs, &os, mp);
    let key = PipelineKey::new(Shader::Pool, "maxpool2d", 1, 1);
    let n = out.numel();
    rec.dispatch(&key, &p, &[x], &[out], grid_elems(rec, n), || OpInfo {
        name: "maxpool2d",
        shape: format!("{:?} k={:?} s={:?}", xs, mp.kernel, mp.stride),
        bytes: 4 * (x.numel() + n) as u64,
        flops: (n * mp.kernel[0] * mp.kernel[1]) as u64,
    })
}

pub fn maxpool2d(rec: &mut Recorder, x: &Tensor, mp: &MaxPool2d) -> Result<Tensor> {
    let out = rec.alloc(&mp.out_shape(x.shape())?, DType::F32)?;
    maxpool2d_into(rec, x, mp, &out)?;
    Ok(out)
}

/// Max pooling of packed spikes with logical shape `[N, C, H, W]` (packed along H·W, so the
/// tensor's last two axes are flattened: pass `[N, C, H * W]` spikes and the spatial size).
pub fn maxpool2d_bits_into(
    rec: &mut Recorder,
    x: &PackedSpikes,
    hw: [usize; 2],
    mp: &MaxPool2d,
    out: &PackedSpikes,
) -> Result<()> {
    let s = x.shape();
    if s.len() != 3 || s[2] != hw[0] * hw[1] {
        return Err(shape_err(
            "maxpool2d_bits",
            format!("spikes {s:?} must be [N, C, H * W] with H, W = {hw:?}"),
        ));
    }
    let xs = [s[0], s[1], hw[0], hw[1]];
    let os = mp.out_shape(&xs)?;
    if out.shape() != [os[0], os[1], os[2] * os[3]] {
        return Err(shape_err(
            "maxpool2d_bits",
            format!(
                "output must be [{}, {}, {}], got {:?}",
                os[0],
                os[1],
                os[2] * os[3],
                out.shape()
            ),
        ));
    }
    let p = params(&xs, &os, mp);
    let key = PipelineKey::new(Shader::Pool, "maxpool2d_bits", 1, 1);
    rec.dispatch(
        &key,
        &p,
        &[x.words()],
        &[out.words()],
        grid_elems(rec, os[0] * os[1] * words_for(os[2] * os[3])),
        || OpInfo {
            name: "maxpool2d_bits",
            shape: format!("{xs:?} k={:?} s={:?}", mp.kernel, mp.stride),
            bytes: x.words().bytes() + out.words().bytes(),
            flops: 0,
        },
    )
}

/// [`maxpool2d_bits_into`] into a new packed tensor; returns it and its spatial size.
pub fn maxpool2d_bits(
    rec: &mut Recorder,
    x: &PackedSpikes,
    hw: [usize; 2],
    mp: &MaxPool2d,
) -> Result<(PackedSpikes, [usize; 2])> {
    let s = x.shape();
    let os = mp.out_shape(&[s[0], *s.get(1).unwrap_or(&1), hw[0], hw[1]])?;
    let out = PackedSpikes::alloc_in(rec, &[os[0], os[1], os[2] * os[3]])?;
    maxpool2d_bits_into(rec, x, hw, mp, &out)?;
    Ok((out, [os[2], os[3]]))
}

/// f64 reference.
pub fn reference(x: &[f32], xs: [usize; 4], mp: &MaxPool2d) -> Vec<f64> {
    let os = mp.out_shape(&xs).expect("valid pool");
    let mut out = Vec::with_capacity(os.iter().product());
    for nc in 0..xs[0] * xs[1] {
        for oy in 0..os[2] {
            for ox in 0..os[3] {
                let mut m = f64::NEG_INFINITY;
                for ky in 0..mp.kernel[0] {
                    let iy =
                        (oy * mp.stride[0] + ky * mp.dilation[0]) as isize - mp.padding[0] as isize;
                    for kx in 0..mp.kernel[1] {
                        let ix = (ox * mp.stride[1] + kx * mp.dilation[1]) as isize
                            - mp.padding[1] as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < xs[2] && (ix as usize) < xs[3] {
                            let v = x[(nc * xs[2] + iy as usize) * xs[3] + ix as usize] as f64;
                            if v > m || v.is_nan() {
                                m = v;
                            }
                        }
                    }
                }
                out.push(m);
            }
        }
    }
    out
}

pub fn cases() -> Vec<Case> {
    let list: Vec<([usize; 4], MaxPool2d)> = vec![
        ([1, 1, 1, 1], MaxPool2d::new(1, 1, 0)),
        ([1, 2, 8, 8], MaxPool2d::new(3, 2, 1)),
        ([2, 3, 7, 9], MaxPool2d::new(3, 2, 1)),
        ([1, 4, 5, 6], MaxPool2d::new(2, 2, 0)),
        (
            [1, 1, 9, 9],
            MaxPool2d {
                kernel: [3, 2],
                stride: [1, 2],
                padding: [1, 0],
                dilation: [2, 1],
            },
        ),
    ];
    let mut v: Vec<Case> = list
        .iter()
        .map(|&(xs, mp)| {
            Case::new(
                "maxpool2d",
                format!(
                    "x={xs:?} k={:?} s={:?} p={:?}",
                    mp.kernel, mp.stride, mp.padding
                ),
                0.0,
                move |dev, rng| {
                    let x = rng.vec(xs.iter().product(), -5.0, 5.0);
                    let xt = dev.tensor_f32(&x, &xs)?;
                    let out = output(dev, &mp.out_shape(&xs)?, DType::F32)?;
                    let mut rec = dev.recorder("test");
                    maxpool2d_into(&mut rec, &xt, &mp, &out)?;
                    rec.submit()?;
                    check_f32(dev, &out, &reference(&x, xs, &mp))
                },
            )
        })
        .collect();
    let mut bits = list.clone();
    bits.push(([2, 3, 14, 14], MaxPool2d::new(3, 2, 1)));
    bits.push(([1, 2, 32, 32], MaxPool2d::new(3, 2, 1)));
    v.extend(bits.into_iter().map(|(xs, mp)| {
        Case::new(
            "maxpool2d_bits",
            format!(
                "x={xs:?} k={:?} s={:?} p={:?}",
                mp.kernel, mp.stride, mp.padding
            ),
            0.0,
            move |dev, rng| {
                let x: Vec<f32> = (0..xs.iter().product())
                    .map(|_| if rng.unit() < 0.1 { 1.0 } else { 0.0 })
                    .collect();
                let hw = xs[2] * xs[3];
                let st = PackedSpikes::from_host(dev, &x, &[xs[0], xs[1], hw])?;
                let os = mp.out_shape(&xs)?;
                let ohw = os[2] * os[3];
                let (words, out) = packed_output(dev, &[os[0], os[1], ohw])?;
                let mut rec = dev.recorder("test");
                maxpool2d_bits_into(&mut rec, &st, [xs[2], xs[3]], &mp, &out)?;
                rec.submit()?;
                let want: Vec<f32> = reference(&x, xs, &mp).iter().map(|&m| m as f32).collect();
                check_spikes(dev, &words, &want, ohw)
            },
        )
        .dtype("bits")
    }));
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn maxpool_matches_reference_over_shape_sweep() {
        crate::harness::assert_cases(super::cases());
    }
}
