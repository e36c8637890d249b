//! Image preprocessing as the official evaluations do it: resize the shorter side to
//! `size / crop_pct` (bicubic), center-crop `size`, scale to [0, 1], normalise with the
//! ImageNet mean and std. Returns `[1, 3, size, size]` in CHW order.

use std::path::Path;

use image::imageops::FilterType;

use crate::{ModelError, Result};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Decodes a PNG or JPEG file and preprocesses it.
pub fn load_image(path: &Path, size_h: usize, size_w: usize, crop_pct: f64) -> Result<Vec<f32>> {
    let img = image::open(path)
        .map_err(|e| {
            ModelError::Input(format!("{}: cannot decode the image ({e})", path.display()))
        })?
        .to_rgb8();
    Ok(preprocess(&img, size_h, size_w, crop_pct))
}

/// Resize (shorter side to `size / crop_pct`, Catmull-Rom bicubic as PIL's), center crop,
/// normalise.
pub fn preprocess(img: &image::RgbImage, size_h: usize, size_w: usize, crop_pct: f64) -> Vec<f32> {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let short = ((size_h.max(size_w) as f64) / crop_pct).floor().max(1.0);
    let scale = short / w.min(h);
    let (nw, nh) = (
        ((w * scale).round() as u32).max(size_w as u32),
        ((h * scale).round() as u32).max(size_h as u32),
    );
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
