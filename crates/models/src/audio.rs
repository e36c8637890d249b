//! Audio front end for LMUFormer: WAV reading and the Kaldi-compatible log-mel filterbank
//! the official data loader computes with `torchaudio.compliance.kaldi.fbank(waveform,
//! htk_compat=True, sample_frequency=16000, use_energy=False, window_type='hanning',
//! num_mel_bins=128, dither=0.0, frame_shift=10)` after removing the waveform's mean, then
//! padded with zeros (or cropped) to 128 frames and normalised with the Speech Commands
//! statistics: `(x + 6.845978) / (2 · 5.5654526)`.
//!
//! Kaldi's defaults otherwise: 25 ms frames (400 samples) every 10 ms (160), only frames that
//! fit (`snip_edges`), per-frame DC removal, pre-emphasis 0.97 (the first sample against
//! itself), a symmetric Hann window, a 512-point power spectrum, triangular mel filters on
//! Kaldi's mel scale `1127 ln(1 + f / 700)` from 20 Hz to Nyquist, and `ln(max(e, f32::EPSILON))`.

use std::path::Path;

use crate::{ModelError, Result};

/// The sample rate LMUFormer's Speech Commands models expect.
pub const SAMPLE_RATE: u32 = 16_000;
/// The official dataset statistics (`gsc.yml`).
pub const DATASET_MEAN: f32 = -6.845978;
pub const DATASET_STD: f32 = 5.5654526;

const FRAME_LEN: usize = 400;
const FRAME_SHIFT: usize = 160;
const FFT_LEN: usize = 512;

fn bad(path: &Path, m: impl std::fmt::Display) -> ModelError {
    ModelError::Input(format!("{}: {m}", path.display()))
}

/// Reads the first channel of a RIFF/WAVE file (16-bit PCM or 32-bit float) as samples in
/// [-1, 1] (16-bit values divided by 32768, as torchaudio), with its sample rate.
pub fn read_wav(path: &Path) -> Result<(Vec<f32>, u32)> {
    let bytes = std::fs::read(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    parse_wav(&bytes).map_err(|m| bad(path, m))
}

/// [`read_wav`] of bytes in memory; the error says what is wrong with the file.
pub fn parse_wav(b: &[u8]) -> std::result::Result<(Vec<f32>, u32), String> {
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let u16le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32le = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    let mut pos = 12;
    while pos + 8 <= b.len() {
        let id = &b[pos..pos + 4];
        let size = u32le(pos + 4) as usize;
        let body = pos + 8;
        let end = body.checked_add(size).filter(|&e| e <= b.len());
        match id {
            b"fmt " => {
                if size < 16 || end.is_none() {
                    return Err("truncated fmt chunk".into());
                }
                fmt = Some((
                    u16le(body),
                    u16le(body + 2),
                    u32le(body + 4),
                    u16le(body + 14),
                ));
            }
            b"data" => {
                let (format, channels, rate, bits) =
                    fmt.ok_or("the data chunk comes before any fmt chunk")?;
                let end = end.ok_or("the data chunk is truncated")?;
                let data = &b[body..end];
                let ch = channels.max(1) as usize;
                let samples: Vec<f32> = match (format, bits) {
                    (1, 16) => data
                        .chunks_exact(2 * ch)
                        .map(|f| i16::from_le_bytes([f[0], f[1]]) as f32 / 32768.0)
                        .collect(),
                    (3, 32) | (0xFFFE, 32) => data
                        .chunks_exact(4 * ch)
                        .map(|f| f32::from_le_bytes([f[0], f[1], f[2], f[3]]))
                        .collect(),
                    _ => {
                        return Err(format!(
                            "unsupported sample format (format tag {format}, {bits} bits); use 16-bit PCM or 32-bit float"
                        ))
                    }
                };
                return Ok((samples, rate));
            }
            _ => {}
        }
        pos = body + size + (size & 1);
    }
    Err("no data chunk".into())
}

/// Writes 16-bit PCM mono (for tests and examples).
pub fn wav_bytes(samples: &[f32], rate: u32) -> Vec<u8> {
    let data: Vec<u8> = samples
        .iter()
        .flat_map(|&s| ((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes())
        .collect();
    let mut b = Vec::with_capacity(44 + data.len());
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(&data);
    b
}

/// In-place iterative radix-2 FFT of `n` (a power of two) complex values.
fn fft(re: &mut [f64], im: &mut [f64]) {
    let n = re.len();
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let ang = -2.0 * std::f64::consts::PI / len as f64;
        for start in (0..n).step_by(len) {
            for k in 0..len / 2 {
                let (s, c) = (ang * k as f64).sin_cos();
                let (a, b) = (start + k, start + k + len / 2);
                let (tr, ti) = (re[b] * c - im[b] * s, re[b] * s + im[b] * c);
                re[b] = re[a] - tr;
                im[b] = im[a] - ti;
                re[a] += tr;
                im[a] += ti;
            }
        }
        len <<= 1;
    }
}

fn mel(f: f64) -> f64 {
    1127.0 * (1.0 + f / 700.0).ln()
}

/// Kaldi's triangular mel filters `[bins, FFT_LEN / 2]` (the Nyquist bin gets no weight).
fn mel_banks(bins: usize, rate: f64) -> Vec<f64> {
    let half = FFT_LEN / 2;
    let width = rate / FFT_LEN as f64;
    let (lo, hi) = (mel(20.0), mel(0.5 * rate));
    let delta = (hi - lo) / (bins + 1) as f64;
    let mut w = vec![0.0; bins * half];
    for b in 0..bins {
        let (left, center, right) = (
            lo + b as f64 * delta,
            lo + (b + 1) as f64 * delta,
            lo + (b + 2) as f64 * delta,
        );
        for k in 0..half {
            let m = mel(width * k as f64);
            let up = (m - left) / (center - left);
            let down = (right - m) / (right - center);
            w[b * half + k] = up.min(down).max(0.0);
        }
    }
    w
}

/// Log-mel filterbank `[frames, bins]` of `samples` at `rate` Hz (Kaldi, as above).
pub fn fbank(samples: &[f32], rate: u32, bins: usize) -> Vec<f32> {
    if samples.len() < FRAME_LEN {
        return Vec::new();
    }
    let frames = 1 + (samples.len() - FRAME_LEN) / FRAME_SHIFT;
    let banks = mel_banks(bins, rate as f64);
    let window: Vec<f64> = (0..FRAME_LEN)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (FRAME_LEN - 1) as f64).cos())
        .collect();
    let half = FFT_LEN / 2;
    let mut out = Vec::with_capacity(frames * bins);
    for f in 0..frames {
        let frame = &samples[f * FRAME_SHIFT..f * FRAME_SHIFT + FRAME_LEN];
        let mean = frame.iter().map(|&v| v as f64).sum::<f64>() / FRAME_LEN as f64;
        let x: Vec<f64> = frame.iter().map(|&v| v as f64 - mean).collect();
        let mut re = vec![0.0; FFT_LEN];
        let mut im = vec![0.0; FFT_LEN];
        for i in 0..FRAME_LEN {
            let prev = x[i.saturating_sub(1)];
            re[i] = (x[i] - 0.97 * prev) * window[i];
        }
        fft(&mut re, &mut im);
        let power: Vec<f64> = (0..half).map(|k| re[k] * re[k] + im[k] * im[k]).collect();
        for b in 0..bins {
            let e: f64 = banks[b * half..(b + 1) * half]
                .iter()
                .zip(&power)
                .map(|(w, p)| w * p)
                .sum();
            out.push(e.max(f32::EPSILON as f64).ln() as f32);
        }
    }
    out
}

/// A WAV file as LMUFormer's input `[frames, bins]`: mean removed, fbank, zero-padded or
/// cropped to `frames`, normalised with the dataset statistics. The file must be 16 kHz.
pub fn wav_to_features(path: &Path, frames: usize, bins: usize) -> Result<Vec<f32>> {
    let (samples, rate) = read_wav(path)?;
    if rate != SAMPLE_RATE {
        return Err(bad(
            path,
            format!("sample rate is {rate} Hz; the model expects {SAMPLE_RATE} Hz mono (resample it, e.g. `sox in.wav -r 16000 out.wav`)"),
        ));
    }
    Ok(features(&samples, frames, bins))
}

/// [`wav_to_features`] of 16 kHz samples.
pub fn features(samples: &[f32], frames: usize, bins: usize) -> Vec<f32> {
    let mean = samples.iter().map(|&v| v as f64).sum::<f64>() / samples.len().max(1) as f64;
    let centred: Vec<f32> = samples.iter().map(|&v| (v as f64 - mean) as f32).collect();
    let mut fb = fbank(&centred, SAMPLE_RATE, bins);
    fb.resize(frames * bins, 0.0);
    fb.iter()
        .map(|&v| (v - DATASET_MEAN) / (DATASET_STD * 2.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft_matches_a_direct_dft() {
        let n = 16;
        let x: Vec<f64> = (0..n).map(|i| ((i * 7) % 5) as f64 - 2.0).collect();
        let (mut re, mut im) = (x.clone(), vec![0.0; n]);
        fft(&mut re, &mut im);
        for k in 0..n {
            let (mut r, mut i) = (0.0, 0.0);
            for (t, v) in x.iter().enumerate() {
                let a = -2.0 * std::f64::consts::PI * (k * t) as f64 / n as f64;
                r += v * a.cos();
                i += v * a.sin();
            }
            assert!((re[k] - r).abs() < 1e-9 && (im[k] - i).abs() < 1e-9);
        }
    }

    #[test]
    fn wav_round_trips_and_bad_files_are_named() {
        let s: Vec<f32> = (0..100).map(|i| (i as f32 / 50.0) - 1.0).collect();
        let (back, rate) = parse_wav(&wav_bytes(&s, 8000)).unwrap();
        assert_eq!(rate, 8000);
        assert!(back.iter().zip(&s).all(|(a, b)| (a - b).abs() < 1e-4));
        assert!(parse_wav(b"RIFF....WAVE").unwrap_err().contains("no data"));
        assert!(parse_wav(b"hello").unwrap_err().contains("RIFF"));
        let mut cut = wav_bytes(&s, 8000);
        cut.truncate(60);
        assert!(parse_wav(&cut).unwrap_err().contains("truncated"));
    }
}
