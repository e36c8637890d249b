//! Packed spike tensors: binary spikes, 32 per u32 word along the last axis (bit j of word w
//! is position 32·w + j; padding bits are zero). A packed spike tensor is not an f32 tensor:
//! kernels that take one say so in their types.

use crate::device::Device;
use crate::error::{shape_err, Result};
use crate::tensor::{DType, Tensor};

/// Binary spikes with a logical shape `[.., n]`, stored as `[.., ceil(n / 32)]` u32 words.
#[derive(Clone, Debug)]
pub struct PackedSpikes {
    words: Tensor,
    shape: Vec<usize>,
}

/// Words per row of `n` positions.
pub fn words_for(n: usize) -> usize {
    n.div_ceil(32)
}

impl PackedSpikes {
    /// An uninitialised (pooled) packed tensor of logical `shape`.
    pub fn alloc(dev: &Device, shape: &[usize]) -> Result<Self> {
        let (rows, n) = Self::split(shape)?;
        Ok(Self {
            words: dev.alloc(&[rows, words_for(n)], DType::U32)?,
            shape: shape.to_vec(),
        })
    }
    /// An uninitialised packed tensor for `rec`'s ops (see [`Recorder::alloc`]).
    pub fn alloc_in(rec: &crate::record::Recorder, shape: &[usize]) -> Result<Self> {
        let (rows, n) = Self::split(shape)?;
        Ok(Self {
            words: rec.alloc(&[rows, words_for(n)], DType::U32)?,
            shape: shape.to_vec(),
        })
    }
    /// Wraps existing words (`[rows, ceil(n / 32)]` u32).
    pub fn from_words(words: Tensor, shape: &[usize]) -> Result<Self> {
        let (rows, n) = Self::split(shape)?;
        if words.dtype() != DType::U32 || words.numel() != rows * words_for(n) {
            return Err(shape_err(
                "spikes",
                format!("{words:?} cannot hold packed spikes of shape {shape:?}"),
            ));
        }
        Ok(Self {
            words: words.reshape(&[rows, words_for(n)])?,
            shape: shape.to_vec(),
        })
    }
    /// Packs host 0/1 data (non-zero is a spike).
    pub fn from_host(dev: &Device, data: &[f32], shape: &[usize]) -> Result<Self> {
        let (rows, n) = Self::split(shape)?;
        if data.len() != rows * n {
            return Err(shape_err(
                "spikes",
                format!("{} values for shape {shape:?}", data.len()),
            ));
        }
        let words = pack_host(data, n);
        Self::from_words(dev.tensor_u32(&words, &[rows, words_for(n)])?, shape)
    }
    fn split(shape: &[usize]) -> Result<(usize, usize)> {
        match shape.split_last() {
            Some((&n, rest)) if n > 0 => Ok((rest.iter().product(), n)),
            _ => Err(shape_err(
                "spikes",
                format!("shape {shape:?} needs a non-empty last axis"),
            )),
        }
    }
    /// The same words seen with another shape of the same rows and last axis.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        let (rows, n) = Self::split(shape)?;
        if n != self.len() || rows != self.rows() {
            return Err(shape_err(
                "spikes",
                format!(
                    "cannot view packed spikes {:?} as {shape:?} (the last axis stays)",
                    self.shape
                ),
            ));
        }
        Self::from_words(self.words.clone(), shape)
    }
    /// Logical shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Positions along the packed (last) axis.
    pub fn len(&self) -> usize {
        *self.shape.last().expect("non-empty")
    }
    /// Always false: a packed tensor has a non-empty last axis.
    pub fn is_empty(&self) -> bool {
        false
    }
    /// Rows: the product of every axis but the last.
    pub fn rows(&self) -> usize {
        self.shape[..self.shape.len() - 1].iter().product()
    }
    pub fn words_per_row(&self) -> usize {
        words_for(self.len())
    }
    /// The u32 words, `[rows, words_per_row]`.
    pub fn words(&self) -> &Tensor {
        &self.words
    }
    /// Reads back as 0/1 values in the logical shape.
    pub fn read(&self, dev: &Device) -> Result<Vec<f32>> {
        Ok(unpack_host(&dev.read_u32(&self.words)?, self.len()))
    }
}

/// Packs rows of `n` 0/1 values into words (host side).
pub fn pack_host(data: &[f32], n: usize) -> Vec<u32> {
    let w = words_for(n);
    let mut out = vec![0u32; data.len() / n * w];
    for (r, row) in data.chunks(n).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            if v != 0.0 {
                out[r * w + j / 32] |= 1 << (j % 32);
            }
        }
    }
    out
}

/// Unpacks words into rows of `n` 0/1 values (host side).
pub fn unpack_host(words: &[u32], n: usize) -> Vec<f32> {
    let w = words_for(n);
    words
        .chunks(w)
        .flat_map(|row| (0..n).map(move |j| ((row[j / 32] >> (j % 32)) & 1) as f32))
        .collect()
}
