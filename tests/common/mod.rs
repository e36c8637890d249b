//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::PathBuf;

use spikescan::{Device, DeviceOptions};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn device() -> Device {
    Device::with_options(DeviceOptions::from_env())
        .expect("a GPU adapter (install mesa-vulkan-drivers)")
}

/// Fraction of equal entries (spike agreement).
pub fn agreement(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

/// Relative L2 error of `a` against the reference `b`.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// Index of the largest entry of each row of `n`.
pub fn argmax_rows(v: &[f32], n: usize) -> Vec<usize> {
    v.chunks(n)
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(0, |best, (i, x)| if *x > r[best] { i } else { best })
        })
        .collect()
}
