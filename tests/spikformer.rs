//! Spikformer against the official code (ZK-Zhou/spikformer, `imagenet/model.py` and
//! `cifar10/model.py`, run by tools/reference/make_fixtures.py): logits, top-1, and every LIF
//! layer's spikes, free-running and teacher-forced; the residual stream at every block
//! boundary and the readout of the official final stream.

mod common;
use common::*;

use spikescan::loader::Checkpoint;
use spikescan::models::spikformer::{SpikeMap, Spikformer, SpsInput};
use spikescan::models::{Model, ModelDir};
use spikescan::{Device, PackedSpikes, Tensor};
use std::path::PathBuf;

struct Io {
    ck: Checkpoint,
}

impl Io {
    fn open(name: &str) -> Self {
        Io {
            ck: Checkpoint::open(fixture(name).join("io.safetensors")).unwrap(),
        }
    }
    fn get(&self, key: &str) -> (Vec<f32>, Vec<usize>) {
        (
            self.ck.f32_any(key).unwrap(),
            self.ck.shape(key).unwrap().to_vec(),
        )
    }
    fn spikes(&self, layer: &str) -> (Vec<f32>, Vec<usize>) {
        self.get(&format!("spikes.{layer}"))
    }
    /// A residual-stream tensor, `[T, B, C, N]` (`[T, B, C, H, W]` for imagenet).
    fn stream(&self, key: &str) -> Vec<f32> {
        self.get(key).0
    }
}

fn load(dev: &Device, name: &str) -> Spikformer {
    match Model::load(dev, fixture(name)).unwrap() {
        Model::Spikformer(m) => m,
        _ => panic!("{name} is not a Spikformer"),
    }
}

/// End to end: logits within 1e-3 (relative L2), the same top-1, and every layer's spikes.
#[test]
fn spikformer_imagenet_matches_pytorch_end_to_end() {
    end_to_end("spikformer-imagenet-exact", 1.0, 1e-6);
}

#[test]
fn spikformer_cifar_matches_pytorch_end_to_end() {
    end_to_end("spikformer-cifar-exact", 1.0, 1e-6);
}

#[test]
fn spikformer_cifar_t4_odd_widths_matches_pytorch_end_to_end() {
    end_to_end("spikformer-cifar-exact-t4", 1.0, 1e-6);
}

/// Each layer fed the reference's own input, so one flipped spike cannot cascade.
fn teacher_forced(name: &str) {
    let dev = device();
    let m = load(&dev, name);
    let io = Io::open(name);
    let up = |v: &(Vec<f32>, Vec<usize>)| dev.tensor_f32(&v.0, &v.1).unwrap();
    // Spikes as the engine packs them, tokens last: `[T, B, C, N]`.
    let packed = |layer: &str| {
        let (v, s) = io.spikes(layer);
        let s = if s.len() == 5 {
            vec![s[0], s[1], s[2], s[3] * s[4]]
        } else {
            s
        };
        PackedSpikes::from_host(&dev, &v, &s).unwrap()
    };
    let check = |layer: &str, got: Vec<f32>| {
        let (want, _) = io.spikes(layer);
        let a = agreement(&got, &want);
        eprintln!("{name} (teacher-forced): {layer:<28} agreement {a:.5}");
        assert!(a >= 0.999, "{name}: {layer} teacher-forced agreement {a}");
    };
    let read = |t: &Tensor| dev.read_f32(t).unwrap();
    let sub = |a: &Tensor, b: &Tensor| -> Vec<f32> {
        read(a).iter().zip(read(b)).map(|(x, y)| x - y).collect()
    };

    // SPS stages: each from the reference's previous stage (pooled where the model pools).
    let img = up(&io.get("input"));
    let mut input = SpsInput::Image(img);
    let mut x_feat = None;
    for i in 0..4 {
        let layer = if i == 0 {
            "patch_embed.proj_lif".to_string()
        } else {
            format!("patch_embed.proj_lif{i}")
        };
        let mut rec = dev.recorder("t");
        let out = m.sps_stage(&mut rec, i, &input, None).unwrap();
        rec.submit().unwrap();
        check(&layer, out.spikes.read(&dev).unwrap());
        // The next stage's input: the reference's spikes, pooled as the model does.
        let (v, s) = io.spikes(&layer);
        let spikes = PackedSpikes::from_host(&dev, &v, &[s[0], s[1], s[2], s[3] * s[4]]).unwrap();
        let r = SpikeMap {
            spikes,
            hw: [s[3], s[4]],
        };
        let next = if m.pools_after(i) {
            let mut rec = dev.recorder("t");
            let p = m.pool(&mut rec, &r).unwrap();
            rec.submit().unwrap();
            p
        } else {
            r
        };
        x_feat = Some(next.clone());
        input = SpsInput::Spikes(next);
    }
    let x_feat = x_feat.unwrap();
    let mut rec = dev.recorder("t");
    let x0 = m.rpe(&mut rec, &x_feat, None).unwrap();
    rec.submit().unwrap();
    let feat = x_feat.spikes.read(&dev).unwrap();
    check(
        "patch_embed.rpe_lif",
        read(&x0).iter().zip(&feat).map(|(a, b)| a - b).collect(),
    );

    // The reference's residual stream: x0 = rpe + x_feat, then + proj_lif, + fc2_lif.
    let (rpe, _) = io.spikes("patch_embed.rpe_lif");
    let mut x: Vec<f32> = rpe.iter().zip(&feat).map(|(a, b)| a + b).collect();
    let xs = x0.shape().to_vec();
    for i in 0..m.config.depths {
        // The stream rebuilt from the official spikes is the official block input.
        assert_eq!(
            x,
            io.stream(&format!("stream.block.{i}")),
            "{name}: block {i} input"
        );
        let a = format!("block.{i}.attn");
        let xt = dev.tensor_f32(&x, &xs).unwrap();
        let mut rec = dev.recorder("t");
        let [q, k, v] = m.qkv(&mut rec, i, &xt).unwrap();
        rec.submit().unwrap();
        check(&format!("{a}.q_lif"), q.read(&dev).unwrap());
        check(&format!("{a}.k_lif"), k.read(&dev).unwrap());
        check(&format!("{a}.v_lif"), v.read(&dev).unwrap());
        let (rq, rk, rv) = (
            packed(&format!("{a}.q_lif")),
            packed(&format!("{a}.k_lif")),
            packed(&format!("{a}.v_lif")),
        );
        let mut rec = dev.recorder("t");
        let attn = m.attention(&mut rec, &rq, &rk, &rv).unwrap();
        rec.submit().unwrap();
        check(&format!("{a}.attn_lif"), attn.read(&dev).unwrap());
        let ra = packed(&format!("{a}.attn_lif"));
        let mut rec = dev.recorder("t");
        let x1 = m.proj(&mut rec, i, &ra, &xt).unwrap();
        rec.submit().unwrap();
        check(&format!("{a}.proj_lif"), sub(&x1, &xt));
        let (rp, _) = io.spikes(&format!("{a}.proj_lif"));
        let x1: Vec<f32> = x.iter().zip(&rp).map(|(a, b)| a + b).collect();
        let x1t = dev.tensor_f32(&x1, &xs).unwrap();
        let mut rec = dev.recorder("t");
        let h = m.fc1(&mut rec, i, &x1t).unwrap();
        rec.submit().unwrap();
        check(&format!("block.{i}.mlp.fc1_lif"), h.read(&dev).unwrap());
        let rh = packed(&format!("block.{i}.mlp.fc1_lif"));
        let mut rec = dev.recorder("t");
        let x2 = m.fc2(&mut rec, i, &rh, &x1t).unwrap();
        rec.submit().unwrap();
        check(&format!("block.{i}.mlp.fc2_lif"), sub(&x2, &x1t));
        let (rf, _) = io.spikes(&format!("block.{i}.mlp.fc2_lif"));
        x = x1.iter().zip(&rf).map(|(a, b)| a + b).collect();
    }
    assert_eq!(x, io.stream("stream.readout"), "{name}: final stream");
    // The readout of the official final stream.
    let xt = dev.tensor_f32(&io.stream("stream.readout"), &xs).unwrap();
    let mut rec = dev.recorder("t");
    let logits = m.readout(&mut rec, &xt).unwrap();
    rec.submit().unwrap();
    let err = rel_l2(&read(&logits), &io.get("logits").0);
    eprintln!("{name}: readout of the official final stream: logits relative L2 {err:.3e}");
    assert!(err <= 1e-6, "{name}: readout logits relative L2 {err:.3e}");
}

#[test]
fn spikformer_layers_agree_teacher_forced_exact_weights() {
    teacher_forced("spikformer-imagenet-exact");
    teacher_forced("spikformer-cifar-exact");
    teacher_forced("spikformer-cifar-exact-t4");
}

#[test]
fn spikformer_layers_agree_teacher_forced_realistic_weights() {
    teacher_forced("spikformer-imagenet-realistic");
}

#[test]
fn spikformer_realistic_weights_end_to_end() {
    // Default-initialised weights: not exact in f32, so a spike a rounding away from the
    // threshold may flip and cascade; the top-1 and the logits must still agree.
    end_to_end("spikformer-imagenet-realistic", 0.99, 1e-3);
}

#[test]
fn model_directory_reads_config_and_checkpoint() {
    let md = ModelDir::open(fixture("spikformer-cifar-exact")).unwrap();
    assert_eq!(md.architecture().unwrap(), "spikformer");
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("spikescan-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn small_config() -> spikescan::models::SpikformerConfig {
    let md = ModelDir::open(fixture("spikformer-cifar-exact")).unwrap();
    spikescan::models::SpikformerConfig::from_json(&md.config, &md.path).unwrap()
}

fn write_model(
    dir: &std::path::Path,
    config: Option<&str>,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) {
    if let Some(c) = config {
        std::fs::write(dir.join("config.json"), c).unwrap();
    }
    spikescan::loader::save_f32(dir.join("model.safetensors"), tensors).unwrap();
}

/// The config.json of `spikformer-cifar-exact`, whose weights the checkpoint tests reuse.
fn cifar_config() -> String {
    std::fs::read_to_string(fixture("spikformer-cifar-exact").join("config.json")).unwrap()
}

#[test]
fn official_shaped_spikformer_8_384_loads_from_a_preset_directory_and_runs_at_224() {
    // A directory named after the preset, holding only model.safetensors.
    let dir = temp_dir("preset").join("spikformer-8-384");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = spikescan::models::preset("spikformer-8-384").unwrap();
    let cfg = spikescan::models::SpikformerConfig::from_json(&cfg, &dir).unwrap();
    assert_eq!(
        (cfg.embed_dims, cfg.depths, cfg.num_heads, cfg.num_classes),
        (384, 8, 8, 1000)
    );
    let weights = spikescan::models::random_weights(&cfg.weight_shapes(), 7);
    let params: usize = weights
        .iter()
        .map(|(_, s, _)| s.iter().product::<usize>())
        .sum();
    assert!(
        (16_000_000..17_000_000).contains(&params),
        "{params} parameters"
    );
    write_model(&dir, None, &weights);
    let dev = device();
    let Model::Spikformer(m) = Model::load(&dev, &dir).unwrap() else {
        panic!("not a Spikformer")
    };
    let img: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0)
        .collect();
    let t0 = std::time::Instant::now();
    let logits = m.run(&dev, &img, &[1, 3, 224, 224]).unwrap();
    eprintln!(
        "spikformer-8-384, 224x224, T=4, batch 1: {:.2} s on {}",
        t0.elapsed().as_secs_f64(),
        dev.describe()
    );
    assert_eq!(logits.len(), 1000);
    assert!(logits.iter().all(|v| v.is_finite()));
    assert!(
        logits.iter().any(|v| *v != logits[0]),
        "constant logits: nothing fired"
    );
}

#[test]
fn checkpoint_keys_with_a_module_prefix_and_extra_keys_load() {
    let dir = temp_dir("prefix");
    let mut w = spikescan::models::random_weights(&small_config().weight_shapes(), 1);
    for (k, _, _) in w.iter_mut() {
        *k = format!("module.{k}");
    }
    w.push((
        "module.block.0.norm1.weight".into(),
        vec![32],
        vec![1.0; 32],
    ));
    write_model(&dir, Some(&cifar_config()), &w);
    let dev = device();
    let md = ModelDir::open(&dir).unwrap();
    let m = spikescan::models::Spikformer::load(&dev, &md).unwrap();
    assert_eq!(
        md.checkpoint.unused_keys(),
        vec!["block.0.norm1.weight".to_string()]
    );
    let logits = m
        .run(&dev, &vec![0.5; 2 * 3 * 32 * 32], &[2, 3, 32, 32])
        .unwrap();
    assert_eq!(logits.len(), 20);
}

fn load_err(dir: &std::path::Path) -> String {
    match Model::load(&device(), dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_model_directories_get_errors_that_name_the_problem() {
    let w = spikescan::models::random_weights(&small_config().weight_shapes(), 2);
    let e = load_err(std::path::Path::new("/no/such/model"));
    assert!(
        e.contains("/no/such/model") && e.contains("does not exist"),
        "{e}"
    );

    let d = temp_dir("noarch");
    write_model(&d, Some(r#"{"embed_dims": 32}"#), &w);
    let e = load_err(&d);
    assert!(
        e.contains("config.json") && e.contains("architecture"),
        "{e}"
    );

    let d = temp_dir("unknown");
    write_model(&d, Some(r#"{"architecture": "resnet"}"#), &w);
    let e = load_err(&d);
    assert!(e.contains("resnet") && e.contains("spikformer"), "{e}");

    let d = temp_dir("badjson");
    write_model(&d, Some("{not json"), &w);
    assert!(load_err(&d).contains("not valid JSON"));

    let d = temp_dir("badfield");
    write_model(
        &d,
        Some(&cifar_config().replace("\"num_heads\": 4", "\"num_heads\": 5")),
        &w,
    );
    assert!(load_err(&d).contains("num_heads"));

    let d = temp_dir("missingfield");
    write_model(
        &d,
        Some(&cifar_config().replace("\"depths\": 2", "\"depth\": 2")),
        &w,
    );
    assert!(load_err(&d).contains("missing \"depths\""));

    let d = temp_dir("missing");
    let less: Vec<_> = w
        .iter()
        .filter(|(k, _, _)| k != "block.1.attn.k_bn.running_var")
        .cloned()
        .collect();
    write_model(&d, Some(&cifar_config()), &less);
    let e = load_err(&d);
    assert!(
        e.contains("'block.1.attn.k_bn.running_var' is missing"),
        "{e}"
    );

    let d = temp_dir("shape");
    let mut bad = w.clone();
    let i = bad.iter().position(|(k, _, _)| k == "head.weight").unwrap();
    bad[i] = ("head.weight".into(), vec![11, 48], vec![0.0; 11 * 48]);
    write_model(&d, Some(&cifar_config()), &bad);
    let e = load_err(&d);
    assert!(
        e.contains("'head.weight'") && e.contains("[11, 48]") && e.contains("expected [10, 48]"),
        "{e}"
    );

    let d = temp_dir("truncated");
    write_model(&d, Some(&cifar_config()), &w);
    let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
    std::fs::write(d.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&d);
    assert!(
        e.contains("model.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );

    let d = temp_dir("noweights");
    std::fs::write(d.join("config.json"), cifar_config()).unwrap();
    assert!(load_err(&d).contains("model.safetensors"));
}

#[test]
fn inputs_of_the_wrong_shape_are_refused() {
    let dev = device();
    let m = load(&dev, "spikformer-cifar-exact");
    let e = m
        .run(&dev, &[0.0; 32 * 32], &[1, 1, 32, 32])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[B, 3, H, W]") && e.contains("[1, 1, 32, 32]"),
        "{e}"
    );
    let e = m
        .run(&dev, &[0.0; 3 * 8 * 8], &[1, 3, 8, 8])
        .unwrap_err()
        .to_string();
    assert!(e.contains("too small"), "{e}");
    let e = m
        .run(&dev, &[0.0; 5], &[1, 3, 32, 32])
        .unwrap_err()
        .to_string();
    assert!(e.contains("5 values"), "{e}");
}

/// A batch whose activations do not fit one storage binding runs in micro-batches inside
/// `forward` itself: on a device capped between one image's largest activation and the whole
/// batch's, one recording of `forward` gives the logits of an uncapped device, bit for bit
/// (Spikformer and Meta-SpikeFormer); with per-layer taps, which need one pass, it is an
/// error that says so; and `run` gives the same logits.
#[test]
fn batches_over_the_binding_limit_run_in_micro_batches_inside_forward() {
    use spikescan::runtime::tensor::largest_allocation;
    use spikescan::{Device, DeviceOptions};
    for name in ["spikformer-imagenet-exact", "meta-spikeformer-exact-t1"] {
        let io = Io::open(name);
        let (img, s) = io.get("input");
        // Five images (an odd count): the fixture's, repeated.
        let per = img.len() / s[0];
        let five: Vec<f32> = img.iter().cycle().take(5 * per).copied().collect();
        let shape = [5, s[1], s[2], s[3]];
        let forward =
            |dev: &Device, m: &Model, n: usize| -> (spikescan::models::Result<Vec<f32>>, u64) {
                let mut sh = shape;
                sh[0] = n;
                let x = dev.tensor_f32(&five[..n * per], &sh).unwrap();
                let (r, largest) = largest_allocation(|| {
                    let mut rec = dev.recorder("forward");
                    let y = m.forward(&mut rec, &x, None)?;
                    rec.submit()?;
                    Ok(dev.read_f32(&y)?)
                });
                (r, largest)
            };
        let whole_dev = device();
        let whole = Model::load(&whole_dev, fixture(name)).unwrap();
        let (want, _) = forward(&whole_dev, &whole, 5);
        let want = want.unwrap();
        let (logits, _) = io.get("logits");
        assert_eq!(
            &want[..logits.len()],
            &logits[..],
            "{name}: the batch of five repeats the fixture"
        );
        let (_, one) = forward(&whole_dev, &whole, 1);
        let (_, all) = forward(&whole_dev, &whole, 5);
        assert!(
            all > 2 * one,
            "{name}: activations grow with the batch ({one} -> {all})"
        );
        // Room for two images per micro-batch: three micro-batches (2, 2, 1).
        let cap = (2 * one).div_ceil(1024) * 1024;
        let small = Device::with_options(DeviceOptions {
            max_binding: Some(cap),
            ..DeviceOptions::from_env()
        })
        .unwrap();
        let m = match Model::load(&small, fixture(name)) {
            Ok(m) => m,
            Err(e) => panic!("{name}: the weights must fit {cap}-byte bindings: {e}"),
        };
        let (got, largest) = forward(&small, &m, 5);
        assert_eq!(
            got.unwrap(),
            want,
            "{name}: micro-batched logits ({cap}-byte bindings)"
        );
        assert!(
            largest <= cap,
            "{name}: every buffer fits ({largest} > {cap})"
        );
        let x = small.tensor_f32(&five, &shape).unwrap();
        let mut taps = spikescan::models::taps::Taps::default();
        let mut rec = small.recorder("taps");
        let e = m
            .forward(&mut rec, &x, Some(&mut taps))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("micro-batches of 2") && e.contains("taps"),
            "{e}"
        );
        drop(rec);
        if let Model::Spikformer(sf) = &m {
            assert_eq!(sf.run(&small, &five, &shape).unwrap(), want);
        }
        eprintln!("{name}: {cap}-byte bindings, 5 images in micro-batches of 2, logits identical");
    }
}
