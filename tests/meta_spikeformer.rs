//! Meta-SpikeFormer against the PyTorch reference (tools/reference/meta_spikeformer.py):
//! logits, top-1 and every LIF layer's spikes end to end; each unit teacher-forced with the
//! reference's real-valued input; T = 1 and 4; kd on and off.

mod common;
use common::*;

use spikescan::loader::Checkpoint;
use spikescan::models::taps::Taps;
use spikescan::models::{MetaSpikeformer, Model};
use spikescan::Device;

fn load(dev: &Device, name: &str) -> MetaSpikeformer {
    match Model::load(dev, fixture(name)).unwrap() {
        Model::MetaSpikeformer(m) => m,
        _ => panic!("{name} is not a Meta-SpikeFormer"),
    }
}

#[test]
fn meta_spikeformer_t1_matches_pytorch_end_to_end() {
    end_to_end("meta-spikeformer-exact-t1", 1.0, 1e-6);
}

#[test]
fn meta_spikeformer_t4_with_kd_matches_pytorch_end_to_end() {
    end_to_end("meta-spikeformer-exact-t4-kd", 1.0, 1e-6);
}

/// Each unit (downsampling layer, conv block, transformer block) fed the reference's own
/// real-valued input; every LIF layer inside it must agree on ≥ 99.9% of its spikes.
fn teacher_forced(name: &str) {
    let dev = device();
    let m = load(&dev, name);
    let io = Checkpoint::open(fixture(name).join("io.safetensors")).unwrap();
    let mut worst = 1.0f64;
    let mut layers = 0;
    for (unit_name, unit) in MetaSpikeformer::units() {
        let key = if unit_name == "downsample1_1" {
            "input".to_string()
        } else {
            format!("stream.{unit_name}")
        };
        let x = dev
            .tensor_f32(&io.f32_any(&key).unwrap(), io.shape(&key).unwrap())
            .unwrap();
        let mut taps = Taps::default();
        let mut rec = dev.recorder("t");
        m.unit(&mut rec, &unit_name, unit, &x, Some(&mut taps))
            .unwrap();
        rec.submit().unwrap();
        for (layer, s) in taps.read(&dev).unwrap() {
            let r = io.f32_any(&format!("spikes.{layer}")).unwrap();
            let a = agreement(&s, &r);
            worst = worst.min(a);
            layers += 1;
            assert!(a >= 0.999, "{name}: {layer} teacher-forced agreement {a}");
        }
    }
    // The readout's lif, from the reference's final stream.
    let key = "stream.readout";
    let x = dev
        .tensor_f32(&io.f32_any(key).unwrap(), io.shape(key).unwrap())
        .unwrap();
    let mut taps = Taps::default();
    let mut rec = dev.recorder("t");
    m.readout(&mut rec, &x, Some(&mut taps)).unwrap();
    rec.submit().unwrap();
    let (layer, s) = taps.read(&dev).unwrap().remove(0);
    let a = agreement(&s, &io.f32_any(&format!("spikes.{layer}")).unwrap());
    worst = worst.min(a);
    layers += 1;
    assert!(a >= 0.999, "{name}: {layer} teacher-forced agreement {a}");
    assert_eq!(
        layers,
        io.keys().filter(|k| k.starts_with("spikes.")).count(),
        "every LIF layer is compared"
    );
    eprintln!("{name} (teacher-forced per unit): {layers} LIF layers, worst agreement {worst:.5}");
}

#[test]
fn meta_spikeformer_units_agree_teacher_forced() {
    teacher_forced("meta-spikeformer-exact-t1");
    teacher_forced("meta-spikeformer-exact-t4-kd");
    teacher_forced("meta-spikeformer-realistic-t4");
}

#[test]
fn official_shaped_meta_spikeformer_8_384_loads_and_runs_at_224() {
    let dir = std::env::temp_dir()
        .join(format!("spikescan-meta-{}", std::process::id()))
        .join("meta-spikeformer-8-384");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = spikescan::models::preset("meta-spikeformer-8-384").unwrap();
    let cfg = spikescan::models::MetaSpikeformerConfig::from_json(&cfg, &dir).unwrap();
    let weights = spikescan::models::random_weights(&cfg.weight_shapes(), 11);
    let params: usize = weights
        .iter()
        .map(|(_, s, _)| s.iter().product::<usize>())
        .sum();
    // 31.3M in the paper's count (which leaves BN statistics out).
    assert!(
        (30_000_000..33_000_000).contains(&params),
        "{params} parameters"
    );
    spikescan::loader::save_f32(dir.join("model.safetensors"), &weights).unwrap();
    let dev = device();
    let m = load_dir(&dev, &dir);
    let img: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0)
        .collect();
    let t0 = std::time::Instant::now();
    let logits = m.run(&dev, &img, &[1, 3, 224, 224]).unwrap();
    eprintln!(
        "meta-spikeformer-8-384, 224x224, T=1, batch 1: {:.2} s on {}",
        t0.elapsed().as_secs_f64(),
        dev.describe()
    );
    assert_eq!(logits.len(), 1000);
    assert!(logits.iter().all(|v| v.is_finite()));
    assert!(logits.iter().any(|v| *v != logits[0]));
}

fn load_dir(dev: &Device, dir: &std::path::Path) -> MetaSpikeformer {
    match Model::load(dev, dir).unwrap() {
        Model::MetaSpikeformer(m) => m,
        _ => panic!("not a Meta-SpikeFormer"),
    }
}
