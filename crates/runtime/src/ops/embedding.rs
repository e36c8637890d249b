//! Embedding gather (`shaders/embedding.wgsl`); the table may be f16 (shader-f16) or f32.

use bytemuck::{Pod, Zeroable};

use super::{expect_dtype, expect_float, grid_elems};
use crate::error::{shape_err, Result};
use crate::harness::{check_f32, output, Case, Feature};
use crate::pipeline::{PipelineKey, Shader};
use crate::profile::OpInfo;
use crate::record::Recorder;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    dim: u32,
    vocab: u32,
    first: u32,
    zero_from: u32,
    vocab_b: u32,
    _pad: [u32; 2],
}

/// `out[.., :] = table[ids[..], :]`. Ids must be checked against the vocabulary by the
/// caller (the model's boundary); an id out of range yields a zero row here.
pub fn embedding_into(
    rec: &mut Recorder,
    ids: &Tensor,
    table: &Tensor,
    out: &Tensor,
) -> Result<()> {
    let vocab = if table.rank() == 2 { table.dim(0) } else { 0 };
    embedding_block_into(rec, ids, table, 0, vocab, out)
}

/// The gather for one row block of a larger table: `table` holds rows `first ..` of it; rows
/// of `out` whose id falls in the block are written, ids `>= zero_from` get a zero row, and
/// the other rows are left as they are.
pub fn embedding_block_into(
    rec: &mut Recorder,
    ids: &Tensor,
    table: &Tensor,
    first: usize,
    zero_from: usize,
    out: &Tensor,
) -> Result<()> {
    embedding_blocks_into(rec, ids, table, None, first, zero_from, out)
}

/// [`embedding_block_into`] over one block or two consecutive ones (`next`: the block of
/// the rows after `table`'s, same width and dtype) in one dispatch.
pub fn embedding_blocks_into(
    rec: &mut Recorder,
    ids: &Tensor,
    table: &Tensor,
    next: Option<&Tensor>,
    first: usize,
    zero_from: usize,
    out: &Tensor,
) -> Result<()> {
    expect_dtype("embedding", "ids", ids, DType::U32)?;
    expect_float("embedding", "table", table)?;
    if table.rank() != 2 {
        return Err(shape_err(
            "embedding",
            format!("table {:?} must be [vocab, dim]", table.shape()),
        ));
    }
    let (vocab, dim) = (table.dim(0), table.dim(1));
    if let Some(nb) = next {
        if nb.rank() != 2 || nb.dim(1) != dim || nb.dtype() != table.dtype() {
            return Err(shape_err(
                "embedding",
                format!(
                    "the second block {:?} ({:?}) must be [rows, {dim}] {:?} like the first",
                    nb.shape(),
                    nb.dtype(),
                    table.dtype()
                ),
            ));
        }
    }
    let mut os = ids.shape().to_vec();
    os.push(dim);
    if out.shape() != os.as_slice() || out.dtype() != DType::F32 {
        return Err(shape_err(
            "embedding",
            format!("output must be f32{os:?}, got {out:?}"),
        ));
    }
    let f16 = table.dtype() == DType::F16;
    let key = PipelineKey::new(
        Shader::Embedding,
        "gather_rows",
        2 + next.is_some() as u8,
        1,
    )
    .define_if("F16", f16)
    .define_if("PAIR", next.is_some());
    let p = Params {
        rows: ids.numel() as u32,
        dim: dim as u32,
        vocab: vocab as u32,
        first: first as u32,
        zero_from: zero_from.min(u32::MAX as usize) as u32,
        vocab_b: next.map_or(0, |t| t.dim(0)) as u32,
        _pad: [0; 2],
    };
    let mut ins = vec![ids, table];
    ins.extend(next);
    rec.dispatch(&key, &p, &ins, &[out], grid_elems(rec, out.numel()), || {
        OpInfo {
            name: "embedding",
            shape: match next {
                Some(nb) => format!(
                    "ids={:?} table={:?} + {:?}",
                    ids.shape(),
                    table.shape(),
                    nb.shape()
                ),
                None => format!("ids={:?} table={:?}", ids.shape(), table.shape()),
            },
            bytes: (4 * ids.numel() + out.numel() * (4 + table.dtype().size())) as u64,
            flops: 0,
        }
    })
}

pub fn embedding(rec: &mut Recorder, ids: &Tensor, table: &Tensor) -> Result<Tensor> {
    let mut os = ids.shape().to_vec();
    os.push(table.shape().last().copied().unwrap_or(0));
    let out = rec.alloc(&os, DType::F32)?;
    embedding_into(rec, ids, table, &out)?;
    Ok(out)
}

/// f64 reference (zero rows for ids out of range).
pub fn reference(ids: &[u32], table: &[f32], dim: usize) -> Vec<f64> {
    let vocab = table.len() / dim;
    ids.iter()
        .flat_map(|&t| {
            (0..dim).map(move |c| {
                if (t as usize) < vocab {
                    table[t as usize * dim + c] as f64
                } else {
                    0.0
                }
            })
        })
        .collect()
}

/// `n` random ids below `vocab` (the second out of range where n > 2: a zero row) and a
/// `[vocab, dim]` table (its values f16-exact where `f16`).
fn ids_and_table(
    rng: &mut crate::harness::Rng,
    n: usize,
    vocab: usize,
    dim: usize,
    f16: bool,
) -> (Vec<u32>, Vec<f32>) {
    let mut ids: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).collect();
    if n > 2 {
        ids[1] = vocab as u32 + 3;
    }
    let mut table = rng.vec(vocab * dim, -1.0, 1.0);
    if f16 {
        table
            .iter_mut()
            .for_each(|x| *x = half::f16::from_f32(*x).to_f32());
    }
    (ids, table)
}

pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (n, vocab, dim) in [
        (1usize, 1usize, 1usize),
        (7, 10, 5),
        (33, 104, 64),
        (5, 50, 768),
    ] {
        for f16 in [false, true] {
            let c = Case::new(
                "embedding",
                format!("ids={n} vocab={vocab} dim={dim}"),
                0.0,
                move |dev, rng| {
                    let (ids, table) = ids_and_table(rng, n, vocab, dim, f16);
                    let it = dev.tensor_u32(&ids, &[n])?;
                    let tt = if f16 {
                        dev.weight_f16(&table, &[vocab, dim])?
                    } else {
                        dev.weight_f32(&table, &[vocab, dim])?
                    };
                    let out = output(dev, &[n, dim], DType::F32)?;
                    let mut rec = dev.recorder("test");
                    embedding_into(&mut rec, &it, &tt, &out)?;
                    rec.submit()?;
                    check_f32(dev, &out, &reference(&ids, &table, dim))
                },
            );
            v.push(if f16 {
                c.dtype("f16").feature(Feature::F16)
            } else {
                c
            });
            // The same table as two blocks in one dispatch (PAIR): the split at `cut`.
            if vocab > 1 {
                let c = Case::new(
                    "embedding",
                    format!("ids={n} vocab={vocab} dim={dim} in two blocks"),
                    0.0,
                    move |dev, rng| {
                        let (mut ids, table) = ids_and_table(rng, n, vocab, dim, f16);
                        ids[0] = (vocab - 1) as u32; // the second block's last row
                        let cut = vocab / 3 + 1;
                        let (ta, tb) = table.split_at(cut * dim);
                        let up = |t: &[f32], rows: usize| {
                            if f16 {
                                dev.weight_f16(t, &[rows, dim])
                            } else {
                                dev.weight_f32(t, &[rows, dim])
                            }
                        };
                        let (a, b) = (up(ta, cut)?, up(tb, vocab - cut)?);
                        let it = dev.tensor_u32(&ids, &[n])?;
                        let out = output(dev, &[n, dim], DType::F32)?;
                        let mut rec = dev.recorder("test");
                        embedding_blocks_into(&mut rec, &it, &a, Some(&b), 0, vocab, &out)?;
                        let dispatches = rec.dispatch_count();
                        rec.submit()?;
                        let c = check_f32(dev, &out, &reference(&ids, &table, dim))?;
                        Ok(c.with_dispatches(dispatches, 1))
                    },
                );
                v.push(if f16 {
                    c.dtype("f16").feature(Feature::F16)
                } else {
                    c
                });
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedding_matches_reference_over_shape_sweep() {
        crate::harness::assert_cases(super::cases());
    }
}
