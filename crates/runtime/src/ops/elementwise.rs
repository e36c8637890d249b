//! Elementwise ops (`shaders/elementwise.wgsl`): unary activations and broadcasting binary ops.

use bytemuck::{Pod, Zeroable};

use super::{expect_dtype, expect_out, grid_elems};
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, output, Case, Rng};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::Recorder;
use crate::tensor::{DType, Tensor};

/// A unary activation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    Relu,
    /// Exact (erf) GELU, as `torch.nn.GELU()`.
    Gelu,
    Silu,
    /// PyTorch's softplus with beta 1 and threshold 20.
    Softplus,
    /// `alpha * x + beta`.
    Affine {
        alpha: f32,
        beta: f32,
    },
    Sigmoid,
}

impl Unary {
    fn code(self) -> u32 {
        match self {
            Unary::Relu => 0,
            Unary::Gelu => 1,
            Unary::Silu => 2,
            Unary::Softplus => 3,
            Unary::Affine { .. } => 4,
            Unary::Sigmoid => 5,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Unary::Relu => "relu",
            Unary::Gelu => "gelu",
            Unary::Silu => "silu",
            Unary::Softplus => "softplus",
            Unary::Affine { .. } => "scale",
            Unary::Sigmoid => "sigmoid",
        }
    }
    /// The f64 reference.
    pub fn reference(self, x: f64) -> f64 {
        match self {
            Unary::Relu => x.max(0.0),
            Unary::Gelu => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
            Unary::Silu => x / (1.0 + (-x).exp()),
            Unary::Softplus => {
                if x > 20.0 {
                    x
                } else {
                    x.exp().ln_1p()
                }
            }
            Unary::Affine { alpha, beta } => alpha as f64 * x + beta as f64,
            Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct UnaryParams {
    n: u32,
    alpha: f32,
    beta: f32,
    _pad: u32,
}

/// `out = op(x)`, elementwise.
pub fn unary_into(rec: &mut Recorder, op: Unary, x: &Tensor, out: &Tensor) -> Result<()> {
    expect_dtype("unary", "x", x, DType::F32)?;
    expect_out("unary", out, x.shape(), DType::F32)?;
    let n = x.numel();
    let (alpha, beta) = match op {
        Unary::Affine { alpha, beta } => (alpha, beta),
        _ => (1.0, 0.0),
    };
    let key = PipelineKey::new(Shader::Elementwise, "unary", 1, 1).constant("OP", op.code());
    let p = UnaryParams {
        n: n as u32,
        alpha,
        beta,
        _pad: 0,
    };
    rec.dispatch(&key, &p, &[x], &[out], grid_elems(rec, n), || OpInfo {
        name: op.name(),
        shape: x.shape_str(),
        bytes: 8 * n as u64,
        flops: n as u64,
    })
}

/// `op(x)` into a new tensor.
pub fn unary(rec: &mut Recorder, op: Unary, x: &Tensor) -> Result<Tensor> {
    let out = rec.alloc(x.shape(), DType::F32)?;
    unary_into(rec, op, x, &out)?;
    Ok(out)
}

pub fn relu(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    unary(rec, Unary::Relu, x)
}
pub fn gelu(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    unary(rec, Unary::Gelu, x)
}
pub fn silu(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    unary(rec, Unary::Silu, x)
}
pub fn softplus(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    unary(rec, Unary::Softplus, x)
}
/// `alpha * x`.
pub fn scale(rec: &mut Recorder, x: &Tensor, alpha: f32) -> Result<Tensor> {
    unary(rec, Unary::Affine { alpha, beta: 0.0 }, x)
}

/// A broadcasting binary op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Mul,
    Sub,
    Max,
}

impl Binary {
    fn code(self) -> u32 {
        match self {
            Binary::Add => 0,
            Binary::Mul => 1,
            Binary::Sub => 2,
            Binary::Max => 3,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Mul => "mul",
            Binary::Sub => "sub",
            Binary::Max => "max",
        }
    }
    pub fn reference(self, a: f64, b: f64) -> f64 {
        match self {
            Binary::Add => a + b,
            Binary::Mul => a * b,
            Binary::Sub => a - b,
            Binary::Max => a.max(b),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct BinaryParams {
    n: u32,
    d: [u32; 3],
    a: [u32; 4],
    b: [u32; 4],
}

/// The output shape of a broadcast, then (padded to rank 4) the output dims and each
/// operand's strides (0 where it repeats).
pub type Broadcast = (Vec<usize>, [usize; 4], [usize; 4], [usize; 4]);

/// NumPy broadcasting of two shapes (rank <= 4).
pub fn broadcast(a: &[usize], b: &[usize]) -> Option<Broadcast> {
    if a == b && a.len() > 4 {
        // Same shapes of any rank: one flat axis.
        let n: usize = a.iter().product();
        let (_, d, sa, sb) = broadcast(&[n], &[n])?;
        return Some((a.to_vec(), d, sa, sb));
    }
    let r = a.len().max(b.len());
    if r > 4 {
        return None;
    }
    let pad = |s: &[usize]| -> Vec<usize> {
        let mut v = vec![1; 4 - s.len()];
        v.extend_from_slice(s);
        v
    };
    let (pa, pb) = (pad(a), pad(b));
    let mut out = [1usize; 4];
    for i in 0..4 {
        out[i] = match (pa[i], pb[i]) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    let strides = |p: &[usize]| -> [usize; 4] {
        let mut s = [0usize; 4];
        let mut acc = 1;
        for i in (0..4).rev() {
            s[i] = if p[i] == 1 { 0 } else { acc };
            acc *= p[i];
        }
        s
    };
    let shape = out[4 - r..].to_vec();
    Some((shape, out, strides(&pa), strides(&pb)))
}

/// `out = a op b` with broadcasting.
pub fn binary_into(
    rec: &mut Recorder,
    op: Binary,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
) -> Result<()> {
    expect_dtype("binary", "a", a, DType::F32)?;
    expect_dtype("binary", "b", b, DType::F32)?;
    let (shape, dims, sa, sb) = broadcast(a.shape(), b.shape()).ok_or_else(|| {
        shape_err(
            "binary",
            format!(
                "{} of {:?} and {:?}: shapes do not broadcast (rank <= 4)",
                op.name(),
                a.shape(),
                b.shape()
            ),
        )
    })?;
    expect_out("binary", out, &shape, DType::F32)?;
    let n = out.numel();
    let u = |v: [usize; 4]| v.map(|x| x as u32);
    let p = BinaryParams {
        n: n as u32,
        d: [dims[1] as u32, dims[2] as u32, dims[3] as u32],
        a: u(sa),
        b: u(sb),
    };
    let key = PipelineKey::new(Shader::Elementwise, "binary", 2, 1).constant("OP", op.code());
    rec.dispatch(&key, &p, &[a, b], &[out], grid_elems(rec, n), || OpInfo {
        name: op.name(),
        shape: format!("{:?} {:?}", a.shape(), b.shape()),
        bytes: 4 * (a.numel() + b.numel() + n) as u64,
        flops: n as u64,
    })
}

/// `a op b` into a new tensor.
pub fn binary(rec: &mut Recorder, op: Binary, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let shape = broadcast(a.shape(), b.shape())
        .map(|s| s.0)
        .ok_or_else(|| {
            shape_err(
                "binary",
                format!("{:?} and {:?} do not broadcast", a.shape(), b.shape()),
            )
        })?;
    let out = rec.alloc(&shape, DType::F32)?;
    binary_into(rec, op, a, b, &out)?;
    Ok(out)
}

pub fn add(rec: &mut Recorder, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(rec, Binary::Add, a, b)
}
pub fn mul(rec: &mut Recorder, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(rec, Binary::Mul, a, b)
}

/// f64 reference of a broadcasting binary op.
pub fn reference_binary(
    op: Binary,
    a: &[f32],
    ash: &[usize],
    b: &[f32],
    bsh: &[usize],
) -> Vec<f64> {
    let (shape, d, sa, sb) = broadcast(ash, bsh).expect("broadcastable");
    let n: usize = shape.iter().product();
    (0..n)
        .map(|i| {
            let i3 = i % d[3];
            let i2 = (i / d[3]) % d[2];
            let i1 = (i / (d[3] * d[2])) % d[1];
            let i0 = i / (d[3] * d[2] * d[1]);
            let ia = i0 * sa[0] + i1 * sa[1] + i2 * sa[2] + i3 * sa[3];
            let ib = i0 * sb[0] + i1 * sb[1] + i2 * sb[2] + i3 * sb[3];
            op.reference(a[ia] as f64, b[ib] as f64)
        })
        .collect()
}

/// Harness cases.
pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let ops = [
        (Unary::Relu, 1e-14, 4.0),
        (Unary::Gelu, 1e-12, 6.0),
        (Unary::Silu, 1e-12, 12.0),
        (Unary::Softplus, 1e-12, 30.0),
        (
            Unary::Affine {
                alpha: 0.125,
                beta: -1.5,
            },
            1e-14,
            8.0,
        ),
        (Unary::Sigmoid, 1e-12, 12.0),
    ];
    for (op, bound, range) in ops {
        for n in [1usize, 7, 256, 1000, 4099] {
            v.push(Case::new(
                op.name(),
                format!("n={n}"),
                bound,
                move |dev, rng: &mut Rng| {
                    let x = rng.vec(n, -range, range);
                    let xt = dev.tensor_f32(&x, &[n])?;
                    let out = output(dev, &[n], DType::F32)?;
                    let mut rec = dev.recorder("test");
                    unary_into(&mut rec, op, &xt, &out)?;
                    rec.submit()?;
                    let r: Vec<f64> = x.iter().map(|&a| op.reference(a as f64)).collect();
                    check_f32(dev, &out, &r)
                },
            ));
        }
    }
    // Past 65,535 workgroups the grid folds into y.
    let big = 65_536 * 256 + 1001;
    v.push(Case::new(
        "relu",
        format!("n={big} (folded grid)"),
        0.0,
        move |dev, rng| {
            let x = rng.vec(big, -1.0, 1.0);
            let xt = dev.tensor_f32(&x, &[big])?;
            let out = output(dev, &[big], DType::F32)?;
            let mut rec = dev.recorder("test");
            unary_into(&mut rec, Unary::Relu, &xt, &out)?;
            rec.submit()?;
            check_f32(
                dev,
                &out,
                &x.iter().map(|&a| (a as f64).max(0.0)).collect::<Vec<_>>(),
            )
        },
    ));
    let shapes: [(&[usize], &[usize]); 8] = [
        (&[2, 3, 1, 4, 5], &[2, 3, 1, 4, 5]),
        (&[1], &[1]),
        (&[7], &[7]),
        (&[3, 5], &[5]),
        (&[2, 3, 4], &[3, 1]),
        (&[2, 1, 4, 5], &[3, 1, 1]),
        (&[1], &[4, 33]),
        (&[17, 1], &[1, 9]),
    ];
    for op in [Binary::Add, Binary::Mul, Binary::Sub, Binary::Max] {
        for (sa, sb) in shapes {
            let (sa, sb) = (sa.to_vec(), sb.to_vec());
            v.push(Case::new(
                op.name(),
                format!("{sa:?}{sb:?}"),
                1e-14,
                move |dev, rng| {
                    let a = rng.vec(sa.iter().product(), -4.0, 4.0);
                    let b = rng.vec(sb.iter().product(), -4.0, 4.0);
                    let (at, bt) = (dev.tensor_f32(&a, &sa)?, dev.tensor_f32(&b, &sb)?);
                    let shape = broadcast(&sa, &sb).expect("valid").0;
                    let out = output(dev, &shape, DType::F32)?;
                    let mut rec = dev.recorder("test");
                    binary_into(&mut rec, op, &at, &bt, &out)?;
                    rec.submit()?;
                    check_f32(dev, &out, &reference_binary(op, &a, &sa, &b, &sb))
                },
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn elementwise_matches_reference_over_shape_sweep() {
        crate::harness::assert_cases(super::cases());
    }

    /// Per element, not in the mean: softplus of very negative inputs is tiny, and a driver
    /// whose `log` is inaccurate near 1 gets it wrong by up to 2x there while the normalised
    /// MSE of a sweep stays small (Mamba's dt lives around softplus⁻¹(0.001..0.1) ≈ -7..-2).
    /// Run on both test devices, so it also checks lib/math.wgsl under each variant.
    #[test]
    fn softplus_and_sigmoid_are_accurate_to_a_few_ulp_everywhere() {
        use super::{unary, Unary};
        let xs: Vec<f32> = (0..40_001)
            .map(|i| -30.0 + i as f32 * 60.0 / 40_000.0)
            .collect();
        for (name, dev) in crate::harness::test_devices() {
            let x = dev.tensor_f32(&xs, &[xs.len()]).unwrap();
            for op in [Unary::Softplus, Unary::Sigmoid, Unary::Silu] {
                let mut rec = dev.recorder("accuracy");
                let y = unary(&mut rec, op, &x).unwrap();
                rec.submit().unwrap();
                let got = dev.read_f32(&y).unwrap();
                let worst = |range: f32| {
                    got.iter()
                        .zip(&xs)
                        .filter(|(_, x)| x.abs() > 1e-3 && x.abs() <= range) // silu's zero
                        .map(|(g, x)| {
                            let r = op.reference(*x as f64);
                            ((*g as f64 - r) / r).abs()
                        })
                        .fold(0.0f64, f64::max)
                };
                let (near, far) = (worst(10.0), worst(30.0));
                eprintln!(
                    "{name}: {op:?} worst relative error {near:.2e} on [-10, 10], {far:.2e} on [-30, 30]"
                );
                // f32's ulp is 6e-8 relative: a few ulp (lib/math.wgsl, not the driver's exp
                // and log, which were 2x off for softplus(-15) and ~30 ulp at |x| = 30).
                assert!(
                    near <= 3e-7,
                    "{name}: {op:?} relative error {near:.2e} on [-10, 10]"
                );
                assert!(
                    far <= 4e-7,
                    "{name}: {op:?} relative error {far:.2e} on [-30, 30]"
                );
            }
            // NaN in, NaN out (a clamp by min/max would turn it into a number).
            let nan = dev.tensor_f32(&[f32::NAN; 3], &[3]).unwrap();
            for op in [Unary::Softplus, Unary::Sigmoid, Unary::Silu] {
                let mut rec = dev.recorder("nan");
                let y = unary(&mut rec, op, &nan).unwrap();
                rec.submit().unwrap();
                let got = dev.read_f32(&y).unwrap();
                assert!(
                    got.iter().all(|v| v.is_nan()),
                    "{name}: {op:?}(NaN) = {got:?}"
                );
            }
        }
    }

    #[test]
    fn shapes_that_do_not_broadcast_are_refused() {
        assert!(super::broadcast(&[3, 4], &[5]).is_none());
        assert!(super::broadcast(&[1, 2, 3, 4, 5], &[5]).is_none());
        assert_eq!(super::broadcast(&[3, 1], &[1, 4]).unwrap().0, vec![3, 4]);
    }
}
