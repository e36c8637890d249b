//! One thin launcher per kernel family (`shaders/<family>.wgsl`), each with its plain-Rust
//! f64 reference and its harness cases beside it.

pub mod batch_norm;
pub mod causal_conv1d;
pub mod conv;
pub mod elementwise;
pub mod embedding;
pub mod layer_norm;
pub mod lif;
pub mod lmu;
pub mod matmul;
pub mod pool;
pub mod reduce;
pub mod rms_norm;
pub mod sdsa;
pub mod select;
pub mod selective_scan;
pub mod spike_matmul;
pub mod ssa;
pub mod tokens;
pub mod vocab;

use crate::error::{shape_err, Result};
use crate::harness::Case;
pub(crate) use crate::record::grid_1d;
use crate::record::Recorder;
use crate::tensor::{DType, Tensor};

/// Grid for one invocation per element with the device's workgroup width
/// ([`crate::Device::wg`]).
pub(crate) fn grid_elems(rec: &Recorder, n: usize) -> [u32; 3] {
    let wg = rec.device().wg() as usize;
    // Saturates rather than truncating: a grid that large is refused by the dispatch.
    grid_1d(u32::try_from(n.div_ceil(wg)).unwrap_or(u32::MAX))
}

/// Grid for one workgroup per row.
pub(crate) fn grid_rows(rows: usize) -> [u32; 3] {
    grid_1d(rows as u32)
}

pub(crate) fn expect_dtype(op: &'static str, what: &str, t: &Tensor, d: DType) -> Result<()> {
    if t.dtype() != d {
        return Err(shape_err(
            op,
            format!("{what} must be {}, got {}", d.name(), t.dtype().name()),
        ));
    }
    Ok(())
}

pub(crate) fn expect_float(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    if !matches!(t.dtype(), DType::F32 | DType::F16) {
        return Err(shape_err(
            op,
            format!("{what} must be f32 or f16, got {}", t.dtype().name()),
        ));
    }
    Ok(())
}

pub(crate) fn expect_out(op: &'static str, out: &Tensor, shape: &[usize], d: DType) -> Result<()> {
    if out.shape() != shape || out.dtype() != d {
        return Err(shape_err(
            op,
            format!(
                "output must be {}{:?}, got {}{:?}",
                d.name(),
                shape,
                out.dtype().name(),
                out.shape()
            ),
        ));
    }
    Ok(())
}

/// Every harness case of every kernel family (for `spikescan ops` and the test suite).
pub fn all_cases() -> Vec<Case> {
    let mut v = Vec::new();
    v.extend(elementwise::cases());
    v.extend(matmul::cases());
    v.extend(conv::cases());
    v.extend(batch_norm::cases());
    v.extend(layer_norm::cases());
    v.extend(rms_norm::cases());
    v.extend(pool::cases());
    v.extend(reduce::cases());
    v.extend(embedding::cases());
    v.extend(select::cases());
    v.extend(lif::cases());
    v.extend(spike_matmul::cases());
    v.extend(ssa::cases());
    v.extend(sdsa::cases());
    v.extend(selective_scan::cases());
    v.extend(causal_conv1d::cases());
    v.extend(tokens::cases());
    v.extend(lmu::cases());
    v.extend(vocab::cases());
    v
}
