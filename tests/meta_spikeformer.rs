//! Meta-SpikeFormer against the official code (BICLab/Spike-Driven-Transformer-V2,
//! `classification/models.py`, run by tools/reference/make_fixtures.py): logits, top-1 and
//! every LIF layer's spikes end to end; each unit teacher-forced with the official real-valued
//! input, its spikes and its real-valued output compared; the readout from the official final
//! stream; two width/head settings, T = 1 and 4, kd on and off; the readout of commit 03cc73e
//! (`"head_input": "membrane"`).

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

#[test]
fn wide_meta_spikeformer_t1_with_kd_matches_pytorch_end_to_end() {
    end_to_end("meta-spikeformer-wide-exact-t1-kd", 1.0, 1e-6);
}

#[test]
fn wide_meta_spikeformer_t4_matches_pytorch_end_to_end() {
    end_to_end("meta-spikeformer-wide-exact-t4", 1.0, 1e-6);
}

/// A copy of fixture `name`'s model directory in a temporary folder, its config edited.
fn with_config(
    name: &str,
    tag: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("spikescan-meta-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture(name);
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    dir
}

/// The official code before commit d95ad13: `head` read the token mean, not the spikes.
#[test]
fn meta_spikeformer_membrane_readout_matches_commit_03cc73e() {
    end_to_end("meta-spikeformer-03cc73e-exact-t4-kd", 1.0, 1e-6);
    // The same weights read as today's code would: the logits differ.
    let dev = device();
    let name = "meta-spikeformer-03cc73e-exact-t4-kd";
    let dir = with_config(name, "readout", |cfg| {
        assert_eq!(cfg["head_input"], "membrane");
        cfg.as_object_mut().unwrap().remove("head_input");
    });
    let io = Checkpoint::open(fixture(name).join("io.safetensors")).unwrap();
    let m = load_dir(&dev, &dir);
    let got = m
        .run(
            &dev,
            &io.f32_any("input").unwrap(),
            io.shape("input").unwrap(),
        )
        .unwrap();
    let err = rel_l2(&got, &io.f32_any("logits").unwrap());
    eprintln!("03cc73e fixture read with the current readout: relative L2 {err:.3e}");
    assert!(err > 1e-2, "the readouts should differ, got {err:.3e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_head_input_is_a_config_error() {
    let dir = with_config("meta-spikeformer-exact-t1", "badhead", |cfg| {
        cfg["head_input"] = "logits".into();
    });
    let err = match Model::load(&device(), &dir) {
        Ok(_) => panic!("a bad head_input loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("head_input") && err.contains("membrane"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Each unit (downsampling layer, conv block, transformer block) fed the official real-valued
/// input: every LIF layer inside it must agree on ≥ 99.9% of its spikes and its real-valued
/// output must be within `max_rel` of the official one; the readout of the official final
/// stream must give the official logits.
fn teacher_forced(name: &str, max_rel: f64) {
    let dev = device();
    let m = load(&dev, name);
    let io = Checkpoint::open(fixture(name).join("io.safetensors")).unwrap();
    let mut worst = 1.0f64;
    let mut worst_out = 0.0f64;
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
        let out = m
            .unit(&mut rec, &unit_name, unit, &x, Some(&mut taps))
            .unwrap();
        rec.submit().unwrap();
        let want = io.f32_any(&format!("out.{unit_name}")).unwrap();
        let err = rel_l2(&dev.read_f32(&out).unwrap(), &want);
        worst_out = worst_out.max(err);
        assert!(
            err <= max_rel,
            "{name}: {unit_name} output relative L2 {err:.3e}"
        );
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
    let logits = m.readout(&mut rec, &x, Some(&mut taps)).unwrap();
    rec.submit().unwrap();
    let readout_err = rel_l2(
        &dev.read_f32(&logits).unwrap(),
        &io.f32_any("logits").unwrap(),
    );
    assert!(
        readout_err <= max_rel.min(1e-5),
        "{name}: readout of the official final stream: logits relative L2 {readout_err:.3e}"
    );
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
    eprintln!(
        "{name} (teacher-forced per unit): {layers} LIF layers, worst agreement {worst:.5}, \
         worst unit output relative L2 {worst_out:.3e}, readout logits {readout_err:.3e}"
    );
}

#[test]
fn meta_spikeformer_units_agree_teacher_forced() {
    for name in [
        "meta-spikeformer-exact-t1",
        "meta-spikeformer-exact-t4-kd",
        "meta-spikeformer-wide-exact-t1-kd",
        "meta-spikeformer-wide-exact-t4",
        "meta-spikeformer-03cc73e-exact-t4-kd",
    ] {
        teacher_forced(name, 1e-6);
    }
    // Not exact in f32: a spike a rounding away from its threshold may flip, and a flipped
    // spike moves a unit's output by one weight. Free-running, this network is chaotic:
    // PyTorch's own float32 and float64 runs of the official code differ by 0.147 in the
    // logits and agree on only 80.5% of one layer's spikes (the engine: 0.146, 80.5%), so it
    // is checked unit by unit only.
    teacher_forced("meta-spikeformer-realistic-t4", 5e-2);
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
