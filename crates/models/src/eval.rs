//! Evaluation on a held-out set shipped with a bundled model (`heldout.safetensors`):
//! classification accuracy for the image and sequence classifiers, per-token loss for a
//! language model. Used by `spikescan demo` and by the tests that check the model cards.

use std::path::Path;

use spikescan_loader::Checkpoint;
use spikescan_runtime::Device;

use crate::vision::{IMAGENET_MEAN, IMAGENET_STD};
use crate::{Mamba, Model, ModelError, Result};

/// A held-out set: model inputs (already in the model's input layout), and labels.
pub struct Heldout {
    /// `[N, ...]` model input.
    pub input: Vec<f32>,
    pub shape: Vec<usize>,
    /// Class labels (classifiers) or next-token ids (language models), `N x per_item`.
    pub labels: Vec<i64>,
}

/// Grey images `[N, H, W]` (0..255) as normalised RGB `[N, 3, H, W]`, exactly as
/// `spikescan run` preprocesses a PNG of the same size.
pub fn grey_to_rgb(images: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * 3 * h * w);
    for i in 0..n {
        let img = &images[i * h * w..(i + 1) * h * w];
        for c in 0..3 {
            out.extend(
                img.iter()
                    .map(|&v| (v / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]),
            );
        }
    }
    out
}

impl Heldout {
    /// Reads `dir/heldout.safetensors`: `images` (u8 `[N, H, W]`, for image models) or
    /// `input` (f32, model layout) or `input_ids` (token ids), and `labels`.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("heldout.safetensors");
        let ck = Checkpoint::open(&path)?;
        let labels = ck.ints("labels")?;
        if ck.contains("images") {
            let s = ck.shape("images").unwrap_or(&[]).to_vec();
            if s.len() != 3 {
                return Err(ModelError::Input(format!(
                    "{}: 'images' must be [N, H, W], got {s:?}",
                    path.display()
                )));
            }
            let raw = ck.f32_any("images")?;
            return Ok(Self {
                input: grey_to_rgb(&raw, s[0], s[1], s[2]),
                shape: vec![s[0], 3, s[1], s[2]],
                labels,
            });
        }
        for key in ["input", "input_ids"] {
            if ck.contains(key) {
                let shape = ck.shape(key).unwrap_or(&[]).to_vec();
                let input = if key == "input" {
                    ck.f32_any(key)?
                } else {
                    ck.ints(key)?.into_iter().map(|v| v as f32).collect()
                };
                return Ok(Self {
                    input,
                    shape,
                    labels,
                });
            }
        }
        Err(ModelError::Input(format!(
            "{}: no 'images', 'input' or 'input_ids' tensor",
            path.display()
        )))
    }

    /// Items in the set.
    pub fn len(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Top-1 class of each input of a classifier, in batches of `batch`.
pub fn predict(
    dev: &Device,
    model: &Model,
    input: &[f32],
    shape: &[usize],
    batch: usize,
) -> Result<Vec<usize>> {
    model.check_input(shape)?;
    let n = shape[0];
    let per: usize = shape[1..].iter().product();
    let mut preds = Vec::with_capacity(n);
    for start in (0..n).step_by(batch.max(1)) {
        let b = batch.max(1).min(n - start);
        let mut s = shape.to_vec();
        s[0] = b;
        let x = dev.tensor_f32(&input[start * per..(start + b) * per], &s)?;
        let mut rec = dev.recorder("predict");
        let y = model.forward(&mut rec, &x, None)?;
        rec.submit()?;
        let logits = dev.read_f32(&y)?;
        let k = logits.len() / b;
        preds.extend(logits.chunks(k).map(|row| {
            (0..k)
                .max_by(|&a, &c| row[a].total_cmp(&row[c]).then(c.cmp(&a)))
                .unwrap_or(0)
        }));
    }
    Ok(preds)
}

/// Correct predictions of a classifier on its held-out set: `(correct, total)`.
pub fn accuracy(
    dev: &Device,
    model: &Model,
    set: &Heldout,
    batch: usize,
) -> Result<(usize, usize)> {
    let preds = predict(dev, model, &set.input, &set.shape, batch)?;
    let correct = preds
        .iter()
        .zip(&set.labels)
        .filter(|(p, l)| **p as i64 == **l)
        .count();
    Ok((correct, preds.len()))
}

/// Mean next-token negative log-likelihood (nats) of a language model over windows
/// `input_ids [N, L]` with targets `labels [N, L]`, in batches of `batch` windows.
pub fn token_loss(dev: &Device, m: &Mamba, set: &Heldout, batch: usize) -> Result<f64> {
    let (n, l) = match set.shape.as_slice() {
        [n, l] => (*n, *l),
        s => {
            return Err(ModelError::Input(format!(
                "input_ids must be [N, L], got {s:?}"
            )))
        }
    };
    let (v, vocab) = (m.config.vocab_padded, m.config.vocab_size);
    let mut total = 0.0f64;
    for start in (0..n).step_by(batch.max(1)) {
        let b = batch.max(1).min(n - start);
        let ids: Vec<u32> = set.input[start * l..(start + b) * l]
            .iter()
            .map(|&x| x as u32)
            .collect();
        let logits = m.logits(dev, &ids, b)?;
        for (row, &target) in logits
            .chunks(v)
            .zip(&set.labels[start * l..(start + b) * l])
        {
            let row = &row[..vocab];
            let max = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x)) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            total += lse - row[target as usize] as f64;
        }
    }
    Ok(total / (n * l) as f64)
}
