//! Image preprocessing as the official evaluations do it: resize the shorter side to
//! `size / crop_pct` (bicubic), center-crop `size`, scale to [0, 1], normalise with the
//! ImageNet mean and std. Returns `[1, 3, size, size]` in CHW order.

use std::path::Path;

use image::imageops::FilterType;

use crate::{ModelError, Result};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Largest image width or height decoded (a header may claim anything).
pub const MAX_DECODED_SIDE: u32 = 16_384;
/// Most bytes the decoder may allocate for one image.
pub const MAX_DECODE_BYTES: u64 = 128 << 20;
/// Most pixels of the resized image (before the center crop).
pub const MAX_RESIZED_PIXELS: u64 = 16 << 20;

/// Decodes a PNG or JPEG file and preprocesses it.
pub fn load_image(path: &Path, size_h: usize, size_w: usize, crop_pct: f64) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| {
        ModelError::Input(format!("{}: cannot read the image ({e})", path.display()))
    })?;
    decode_image(&bytes, size_h, size_w, crop_pct)
        .map_err(|e| ModelError::Input(format!("{}: {e}", path.display())))
}

/// [`load_image`] of PNG or JPEG bytes in memory. Images larger than
/// [`MAX_DECODED_SIDE`] on a side, or needing more than [`MAX_DECODE_BYTES`] to decode, are
/// refused before they are decoded; the error says what is wrong.
pub fn decode_image(
    bytes: &[u8],
    size_h: usize,
    size_w: usize,
    crop_pct: f64,
) -> std::result::Result<Vec<f32>, String> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot decode the image ({e})"))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DECODED_SIDE);
    limits.max_image_height = Some(MAX_DECODED_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| format!("cannot decode the image ({e})"))?
        .to_rgb8();
    check_resize(&img, size_h, size_w, crop_pct)?;
    Ok(preprocess(&img, size_h, size_w, crop_pct))
}

/// The size [`preprocess`] resizes to: the shorter side to `size / crop_pct`, each side at
/// least the crop.
fn resized_size(img: &image::RgbImage, size_h: usize, size_w: usize, crop_pct: f64) -> (f64, f64) {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let short = ((size_h.max(size_w) as f64) / crop_pct).floor().max(1.0);
    let scale = short / w.min(h);
    (
        (w * scale).round().max(size_w as f64),
        (h * scale).round().max(size_h as f64),
    )
}

/// Refuses a crop, crop ratio or aspect ratio whose resized image would be unreasonably large
/// (a 1 x 10000 image whose short side is scaled to 256 px is 2.56 M x 256).
fn check_resize(
    img: &image::RgbImage,
    size_h: usize,
    size_w: usize,
    crop_pct: f64,
) -> std::result::Result<(), String> {
    if !(crop_pct > 0.0 && crop_pct.is_finite()) {
        return Err(format!(
            "crop_pct must be a positive number, got {crop_pct}"
        ));
    }
    if size_h == 0 || size_w == 0 || img.width() == 0 || img.height() == 0 {
        return Err(format!(
            "cannot crop a {}x{} image to {size_w}x{size_h}",
            img.width(),
            img.height()
        ));
    }
    let (nw, nh) = resized_size(img, size_h, size_w, crop_pct);
    if nw * nh > MAX_RESIZED_PIXELS as f64 {
        return Err(format!(
            "a {}x{} image resized for a {size_w}x{size_h} crop (crop_pct {crop_pct}) would be {nw}x{nh} pixels, more than {MAX_RESIZED_PIXELS}",
            img.width(),
            img.height()
        ));
    }
    Ok(())
}

/// Resize (shorter side to `size / crop_pct`, Catmull-Rom bicubic as PIL's), center crop,
/// normalise.
pub fn preprocess(img: &image::RgbImage, size_h: usize, size_w: usize, crop_pct: f64) -> Vec<f32> {
    let (nw, nh) = resized_size(img, size_h, size_w, crop_pct);
    let (nw, nh) = (nw as u32, nh as u32);
    let resized = if (nw, nh) == (img.width(), img.height()) {
        img.clone()
    } else {
        image::imageops::resize(img, nw, nh, FilterType::CatmullRom)
    };
    let (x0, y0) = ((nw as usize - size_w) / 2, (nh as usize - size_h) / 2);
    let mut out = vec![0.0f32; 3 * size_h * size_w];
    for y in 0..size_h {
        for x in 0..size_w {
            let p = resized.get_pixel((x0 + x) as u32, (y0 + y) as u32);
            for c in 0..3 {
                out[(c * size_h + y) * size_w + x] =
                    (p[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_uniform_image_normalises_to_constants_and_crops_to_size() {
        let img = image::RgbImage::from_pixel(300, 200, image::Rgb([255, 128, 0]));
        let v = super::preprocess(&img, 64, 64, 0.875);
        assert_eq!(v.len(), 3 * 64 * 64);
        let want = [
            (1.0 - 0.485) / 0.229,
            (128.0 / 255.0 - 0.456) / 0.224,
            (0.0 - 0.406) / 0.225,
        ];
        for c in 0..3 {
            for &x in &v[c * 4096..(c + 1) * 4096] {
                assert!((x - want[c]).abs() < 1e-4, "{x} vs {}", want[c]);
            }
        }
    }

    #[test]
    fn an_undecodable_file_is_a_clear_error() {
        let dir = std::env::temp_dir().join("spikescan-vision-test");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("broken.png");
        std::fs::write(&p, b"not a png").unwrap();
        let e = super::load_image(&p, 32, 32, 1.0).unwrap_err().to_string();
        assert!(
            e.contains("broken.png") && e.contains("cannot decode"),
            "{e}"
        );
    }
}
