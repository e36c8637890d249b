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

/// End to end on a vision fixture: logits within `max_rel` (relative L2), the same top-1, and
/// every LIF layer of the fixture compared (agreement at least `min_agreement`).
pub fn end_to_end(name: &str, min_agreement: f64, max_rel: f64) {
    use spikescan::loader::Checkpoint;
    use spikescan::models::taps::Taps;
    use spikescan::models::Model;

    let dev = device();
    let model = Model::load(&dev, fixture(name)).unwrap();
    let io = Checkpoint::open(fixture(name).join("io.safetensors")).unwrap();
    let want = io.f32_any("logits").unwrap();
    let k = io.shape("logits").unwrap()[1];
    let x = dev
        .tensor_f32(&io.f32_any("input").unwrap(), io.shape("input").unwrap())
        .unwrap();
    let mut taps = Taps::default();
    let mut rec = dev.recorder("test");
    let logits = model.forward(&mut rec, &x, Some(&mut taps)).unwrap();
    rec.submit().unwrap();
    let got = dev.read_f32(&logits).unwrap();
    let err = rel_l2(&got, &want);
    eprintln!("{name}: logits relative L2 error {err:.3e}");
    assert!(err <= max_rel, "{name}: logits relative L2 {err:.3e}");
    assert_eq!(argmax_rows(&got, k), argmax_rows(&want, k), "{name}: top-1");
    let spikes = taps.read(&dev).unwrap();
    assert_eq!(
        spikes.len(),
        io.keys().filter(|k| k.starts_with("spikes.")).count(),
        "every LIF layer is compared"
    );
    let mut worst = 1.0f64;
    for (layer, s) in &spikes {
        let a = agreement(s, &io.f32_any(&format!("spikes.{layer}")).unwrap());
        worst = worst.min(a);
        assert!(a >= min_agreement, "{name}: {layer} spike agreement {a}");
    }
    eprintln!(
        "{name}: {} LIF layers, worst spike agreement {worst:.5}",
        spikes.len()
    );
}
