//! Vocabulary-sized matrices (an embedding table, an LM head) split into row blocks that each
//! fit one storage binding, with the gather and the head product over the blocks. mamba-1.4b's
//! table is 412 MB in f32; WebGPU's default binding limit, many mobile GPUs and lavapipe allow
//! 128 MiB. The values stay f32 (no precision is given up to fit): each block is one binding,
//! the gather writes the rows whose ids fall in its block, and the head writes each block's
//! logits into its column range of one `[rows, vocab]` output (strided GEMM output).

use super::embedding::embedding_blocks_into;
use super::matmul::{gemm_into, gemm_norm_into, plan, split_norm, Gemm, PreNorm};
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, output, Case};
use crate::record::Recorder;
use crate::tensor::{DType, Tensor};
use crate::Device;

/// A `[rows, dim]` f32 matrix stored as row blocks, each within the device's binding limit.
#[derive(Clone, Debug)]
pub struct RowBlocks {
    /// (first row, the block `[block_rows, dim]`).
    blocks: Vec<(usize, Tensor)>,
    rows: usize,
    dim: usize,
}

impl RowBlocks {
    /// Uploads `data` (`[rows, dim]`, row-major) in as few blocks as the binding limit allows.
    pub fn new(dev: &Device, data: &[f32], rows: usize, dim: usize) -> Result<Self> {
        let limit = dev.limits().max_storage_buffer_binding_size;
        let per = (limit / (4 * dim.max(1) as u64)).max(1) as usize;
        Self::with_block_rows(dev, data, rows, dim, per)
    }

    /// As [`RowBlocks::new`] with at most `block_rows` rows per block (tests force splits).
    pub fn with_block_rows(
        dev: &Device,
        data: &[f32],
        rows: usize,
        dim: usize,
        block_rows: usize,
    ) -> Result<Self> {
        if rows == 0 || dim == 0 || data.len() != rows * dim || block_rows == 0 {
            return Err(shape_err(
                "row_blocks",
                format!(
                    "{} values for a [{rows}, {dim}] matrix in blocks of {block_rows} rows",
                    data.len()
                ),
            ));
        }
        let mut blocks = Vec::new();
        for first in (0..rows).step_by(block_rows) {
            let n = block_rows.min(rows - first);
            let t = dev.weight_f32(&data[first * dim..(first + n) * dim], &[n, dim])?;
            blocks.push((first, t));
        }
        Ok(Self { blocks, rows, dim })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// How many bindings the matrix takes.
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Embedding gather: `ids [..]` → `[.., dim]`; an id out of range gives a zero row.
    pub fn gather(&self, rec: &mut Recorder, ids: &Tensor) -> Result<Tensor> {
        let mut os = ids.shape().to_vec();
        os.push(self.dim);
        let out = rec.alloc(&os, DType::F32)?;
        self.gather_into(rec, ids, &out)?;
        Ok(out)
    }

    pub fn gather_into(&self, rec: &mut Recorder, ids: &Tensor, out: &Tensor) -> Result<()> {
        // Two blocks a dispatch (a table over two bindings is one gather); the first
        // dispatch also zeroes the rows of ids past the vocabulary.
        for (i, pair) in self.blocks.chunks(2).enumerate() {
            let zero_from = if i == 0 { self.rows } else { usize::MAX };
            let next = pair.get(1).map(|b| &b.1);
            embedding_blocks_into(rec, ids, &pair[0].1, next, pair[0].0, zero_from, out)?;
        }
        Ok(())
    }

    /// The head product `out[b, m, :] = x[b, m, :] · thisᵀ` for the product `g` with the full
    /// vocabulary as `n` (`g.n == rows`, `g.k == dim`, `g.w_strides` ignored): each block
    /// writes its column range of `out` (contiguous `[batch, m, rows]`).
    pub fn head_into(&self, rec: &mut Recorder, g: &Gemm, x: &Tensor, out: &Tensor) -> Result<()> {
        self.head_inner(rec, g, x, None, out)
    }

    /// [`RowBlocks::head_into`] of x's rows RMS-normalised (`norm`): inside each block's
    /// product where the skinny kernel serves (no dispatch of its own), else once before
    /// them. `g` must be a plain Linear product ([`Gemm::linear`]).
    pub fn head_norm_into(
        &self,
        rec: &mut Recorder,
        g: &Gemm,
        x: &Tensor,
        norm: PreNorm,
        out: &Tensor,
    ) -> Result<()> {
        self.head_inner(rec, g, x, Some(norm), out)
    }

    fn head_inner(
        &self,
        rec: &mut Recorder,
        g: &Gemm,
        x: &Tensor,
        norm: Option<PreNorm>,
        out: &Tensor,
    ) -> Result<()> {
        if g.n != self.rows || g.k != self.dim {
            return Err(shape_err(
                "row_blocks head",
                format!(
                    "a product with n={} k={} over a [{}, {}] matrix",
                    g.n, g.k, self.rows, self.dim
                ),
            ));
        }
        let block = |t: &Tensor, first: usize| Gemm {
            n: t.dim(0),
            w_strides: [0, self.dim, 1],
            out_row_stride: self.rows,
            out_offset: first,
            ..*g
        };
        if norm.is_some() && *g != Gemm::linear(g.m, g.n, g.k) {
            return Err(shape_err(
                "row_blocks head",
                format!("a normalised head takes a plain Linear product, not {g:?}"),
            ));
        }
        let wg = rec.device().wg() as usize;
        let (first0, t0) = &self.blocks[0];
        let fuse = x.dtype() == DType::F32 && plan(&block(t0, *first0), wg).skinny.is_some();
        let (normed, fused) = split_norm(rec, x, norm, fuse)?;
        let x = normed.as_ref().unwrap_or(x);
        for (first, t) in &self.blocks {
            let bg = block(t, *first);
            match fused {
                Some(nm) => gemm_norm_into(rec, &bg, x, nm, t, out)?,
                None => gemm_into(rec, &bg, x, t, None, out)?,
            }
        }
        Ok(())
    }

    /// `x [.., dim]` → `[.., rows]` (a bias-free Linear layer with this as its weight).
    pub fn head(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        self.head_alloc(rec, x, None)
    }

    /// [`RowBlocks::head`] of x's rows RMS-normalised (see [`RowBlocks::head_norm_into`]).
    pub fn head_norm(&self, rec: &mut Recorder, x: &Tensor, norm: PreNorm) -> Result<Tensor> {
        self.head_alloc(rec, x, Some(norm))
    }

    fn head_alloc(&self, rec: &mut Recorder, x: &Tensor, norm: Option<PreNorm>) -> Result<Tensor> {
        if x.rank() == 0 || x.dim(-1) != self.dim {
            return Err(shape_err(
                "row_blocks head",
                format!("x {:?} does not end in {}", x.shape(), self.dim),
            ));
        }
        let m = x.numel() / self.dim;
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("rank >= 1") = self.rows;
        let out = rec.alloc(&shape, DType::F32)?;
        self.head_inner(rec, &Gemm::linear(m, self.rows, self.dim), x, norm, &out)?;
        Ok(out)
    }
}

/// Harness cases: the gather and the head over 1 to 4 blocks (uneven last block), against the
/// f64 references of the unsplit matrix; GEMV (m ≤ 4) and tiled products.
pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (rows, dim, block, m) in [
        (1usize, 1usize, 1usize, 1usize),
        (10, 5, 3, 1),
        (70, 33, 64, 2),
        (130, 64, 33, 7),
        (200, 17, 200, 65),
    ] {
        v.push(Case::new(
            "vocab_blocks",
            format!("gather rows={rows} dim={dim} block={block} ids={m}"),
            0.0,
            move |dev, rng| {
                let table = rng.vec(rows * dim, -1.0, 1.0);
                let mt = RowBlocks::with_block_rows(dev, &table, rows, dim, block)?;
                let mut ids: Vec<u32> = (0..m).map(|_| rng.below(rows) as u32).collect();
                if m > 2 {
                    ids[1] = rows as u32 + 5; // out of range: a zero row
                    ids[2] = (rows - 1) as u32; // the last row of the last block
                }
                let it = dev.tensor_u32(&ids, &[m])?;
                let out = output(dev, &[m, dim], DType::F32)?;
                let mut rec = dev.recorder("test");
                mt.gather_into(&mut rec, &it, &out)?;
                rec.submit()?;
                check_f32(dev, &out, &super::embedding::reference(&ids, &table, dim))
            },
        ));
        v.push(Case::new(
            "vocab_blocks",
            format!("head rows={rows} dim={dim} block={block} m={m}"),
            1e-11,
            move |dev, rng| {
                let w = rng.vec(rows * dim, -1.0, 1.0);
                let x = rng.vec(m * dim, -1.0, 1.0);
                let mt = RowBlocks::with_block_rows(dev, &w, rows, dim, block)?;
                let xt = dev.tensor_f32(&x, &[m, dim])?;
                let out = output(dev, &[m, rows], DType::F32)?;
                let mut rec = dev.recorder("test");
                mt.head_into(&mut rec, &Gemm::linear(m, rows, dim), &xt, &out)?;
                rec.submit()?;
                let g = Gemm::linear(m, rows, dim);
                check_f32(dev, &out, &super::matmul::reference(&g, &x, &w, None))
            },
        ));
        // The head after an RMSNorm: in each block's skinny product (m <= 32), else once.
        v.push(Case::new(
            "vocab_blocks",
            format!("rms_norm+head rows={rows} dim={dim} block={block} m={m}"),
            1e-11,
            move |dev, rng| {
                let w = rng.vec(rows * dim, -1.0, 1.0);
                let x = rng.vec(m * dim, -1.0, 1.0);
                let gw = rng.vec(dim, 0.5, 1.5);
                let mt = RowBlocks::with_block_rows(dev, &w, rows, dim, block)?;
                let (xt, gt) = (dev.tensor_f32(&x, &[m, dim])?, dev.weight_f32(&gw, &[dim])?);
                let out = output(dev, &[m, rows], DType::F32)?;
                let norm = PreNorm {
                    weight: &gt,
                    eps: 1e-5,
                };
                let mut rec = dev.recorder("test");
                mt.head_norm_into(&mut rec, &Gemm::linear(m, rows, dim), &xt, norm, &out)?;
                rec.submit()?;
                let g = Gemm::linear(m, rows, dim);
                let xn = super::matmul::reference_norm_rows(&x, dim, &gw, 1e-5);
                check_f32(dev, &out, &super::matmul::reference(&g, &xn, &w, None))
            },
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn row_blocks_match_the_unsplit_references() {
        crate::harness::assert_cases(super::cases());
    }
}
