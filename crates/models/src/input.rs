//! Model inputs from files, as `spikescan run` takes them: a PNG/JPEG image (preprocessed as
//! the official evaluation), a 16 kHz WAV clip (Kaldi fbank), or a safetensors file with the
//! tensor `input`.

use std::path::Path;

use spikescan_loader::Checkpoint;

use crate::{audio, vision, Lmuformer, Model, ModelError, Result};

/// A `.png`, `.jpg` or `.jpeg` file name.
pub fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

/// A `.wav` file name.
pub fn is_wav(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("wav"))
}

/// Opens an input safetensors file, saying so when it does not exist.
pub fn open_input(path: &Path) -> Result<Checkpoint> {
    if !path.exists() {
        return Err(ModelError::Input(format!(
            "input file {} does not exist",
            path.display()
        )));
    }
    Ok(Checkpoint::open(path)?)
}

/// The error for an input file without the tensor `name`: what it has, and `what` to give.
pub fn missing(path: &Path, ck: &Checkpoint, name: &str, what: &str) -> ModelError {
    ModelError::Input(format!(
        "{} has no tensor named '{name}' (found: {}); {what}",
        path.display(),
        ck.keys().collect::<Vec<_>>().join(", ")
    ))
}

/// Images for an image classifier: a PNG/JPEG preprocessed for the model (`[1, 3, H, W]`)
/// or a safetensors `input` (f32 `[B, C, H, W]`, already normalised).
pub fn read_images(path: &Path, model: &Model) -> Result<(Vec<f32>, Vec<usize>)> {
    let spec = model
        .image_spec()
        .ok_or_else(|| ModelError::Input("not an image model".into()))?;
    if is_image(path) {
        let v = vision::load_image(path, spec.height, spec.width, spec.crop_pct)?;
        return Ok((v, vec![1, 3, spec.height, spec.width]));
    }
    input_tensor(
        path,
        "give the images as f32 [B, C, H, W] under 'input', or a PNG/JPEG file",
    )
}

/// The tensor `input` of a safetensors file with its shape; `what` says what to give when
/// the file has none.
fn input_tensor(path: &Path, what: &str) -> Result<(Vec<f32>, Vec<usize>)> {
    let ck = open_input(path)?;
    let shape = ck
        .shape("input")
        .map(|s| s.to_vec())
        .ok_or_else(|| missing(path, &ck, "input", what))?;
    Ok((ck.f32_any("input")?, shape))
}

/// Features for an LMUFormer: a 16 kHz WAV (fbank, `[1, seq_len, mel]`) or a safetensors
/// `input` `[B, frames, mel]`.
pub fn read_features(path: &Path, m: &Lmuformer) -> Result<(Vec<f32>, Vec<usize>)> {
    let c = &m.config;
    if is_wav(path) {
        if !path.exists() {
            return Err(ModelError::Input(format!(
                "input file {} does not exist",
                path.display()
            )));
        }
        let x = audio::wav_to_features(path, c.seq_len, c.in_channels)?;
        return Ok((x, vec![1, c.seq_len, c.in_channels]));
    }
    input_tensor(
        path,
        "give normalised fbank features as f32 [B, frames, mel] under 'input', or a 16 kHz WAV file",
    )
}

/// Token ids as `--prompt-ids` takes them: `1,2,3` (spaces around the commas allowed). The
/// error names the first entry that is not a token id (`u32`).
pub fn parse_token_ids(text: &str) -> Result<Vec<u32>> {
    text.split(',')
        .map(|s| {
            let s = s.trim();
            s.parse::<u32>().map_err(|e| {
                let shown: String = s.chars().take(40).collect();
                let more = if shown.len() < s.len() { "…" } else { "" };
                ModelError::Input(format!("'{shown}{more}' is not a token id ({e})"))
            })
        })
        .collect()
}
