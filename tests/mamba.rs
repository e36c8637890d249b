//! Mamba against transformers' MambaForCausalLM (fixtures from
//! tools/reference/make_mamba_fixtures.py), in Hugging Face (tied head) and mamba_ssm
//! (untied head, bf16 weights) formats: prompt logits, greedy continuations, prompt-then-step
//! against the full forward, chunked prompts, and state snapshot/restore. Falcon-Mamba
//! against transformers' FalconMambaForCausalLM: prompt logits, greedy tokens, and the decode
//! path's logits (recorded steps and the captured step graph) against transformers' own
//! cached decoding.

mod common;
use common::*;

use spikescan::loader::Checkpoint;
use spikescan::models::{Mamba, MambaConfig, Model, ModelDir, Sampling};
use spikescan::Device;

fn load(dev: &Device, name: &str) -> Mamba {
    match Model::load(dev, fixture(name)).unwrap() {
        Model::Mamba(m) => m,
        _ => panic!("{name} is not a Mamba model"),
    }
}

fn io(name: &str) -> Checkpoint {
    Checkpoint::open(fixture(name).join("io.safetensors")).unwrap()
}

fn ids(io: &Checkpoint, key: &str) -> Vec<u32> {
    io.ints(key)
        .unwrap()
        .into_iter()
        .map(|v| v as u32)
        .collect()
}

#[test]
fn prompt_logits_match_transformers() {
    let dev = device();
    for name in ["mamba-hf-tied", "mamba-ssm-untied", "falcon-mamba-tiny"] {
        let m = load(&dev, name);
        let io = io(name);
        let prompt = ids(&io, "input_ids");
        let want = io.f32_any("logits").unwrap();
        let got = m.logits(&dev, &prompt, 2).unwrap();
        let err = rel_l2(&got, &want);
        eprintln!("{name}: prompt logits relative L2 error {err:.3e}");
        assert!(err <= 1e-3, "{name}: {err}");
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    let dev = device();
    for name in ["mamba-hf-tied", "mamba-ssm-untied", "falcon-mamba-tiny"] {
        let m = load(&dev, name);
        let io = io(name);
        let want = ids(&io, "greedy");
        let prompt = &ids(&io, "input_ids")[..12];
        let mut streamed = Vec::new();
        let got = m
            .generate(
                &dev,
                prompt,
                want.len() - prompt.len(),
                &Sampling::default(),
                |t| streamed.push(t),
            )
            .unwrap();
        assert_eq!(got, want, "{name}: greedy tokens");
        assert_eq!(streamed, want[prompt.len()..].to_vec());
    }
}

/// The captured decoder (graphs replayed, ids kept on the GPU, two steps in flight) gives the
/// tokens of a loop that records every step afresh and reads each id back, greedy and
/// sampled; a greedy step is one replay of a fixed number of dispatches.
#[test]
fn graph_decoding_equals_a_freshly_recorded_loop() {
    let dev = device();
    let m = load(&dev, "mamba-ssm-untied");
    let prompt = &ids(&io("mamba-ssm-untied"), "input_ids")[..7];
    let reference = |s: &Sampling, n: usize| -> Vec<u32> {
        let mut state = m.new_state(&dev, 1).unwrap();
        let t = dev.tensor_u32(prompt, &[1, prompt.len()]).unwrap();
        let mut rec = dev.recorder("ref prefill");
        let mut logits = m.prefill(&mut rec, &t, &mut state, false).unwrap();
        let mut rng = s.seed ^ 0x9E37_79B9_7F4A_7C15;
        let mut out = prompt.to_vec();
        for i in 0..n {
            let next = m.pick(rec, &logits, s, &mut rng).unwrap()[0];
            out.push(next);
            rec = dev.recorder("ref step");
            if i + 1 < n {
                let t = dev.tensor_u32(&[next], &[1]).unwrap();
                logits = m.step(&mut rec, &t, &mut state).unwrap();
            }
        }
        out
    };
    for s in [
        Sampling::default(),
        Sampling {
            temperature: 0.9,
            top_k: 20,
            top_p: 0.95,
            seed: 5,
        },
    ] {
        for n in [1usize, 2, 9] {
            let got = m.generate(&dev, prompt, n, &s, |_| {}).unwrap();
            assert_eq!(got, reference(&s, n), "{s:?}, {n} tokens");
        }
    }
    let mut state = m.new_state(&dev, 3).unwrap();
    let dec = m.decoder(&dev, &mut state).unwrap();
    let per_layer = dec.step.dispatches() as f64 / m.config.n_layer as f64;
    eprintln!(
        "decoder: {} dispatches per greedy step ({per_layer:.1} per layer), {} bytes held",
        dec.dispatches_per_step(),
        dec.step.held_bytes() + dec.argmax.held_bytes()
    );
    assert!(dec.argmax.dispatches() == 1 && dec.batch == 3);
}

#[test]
fn prompt_then_step_equals_the_full_forward() {
    let dev = device();
    let m = load(&dev, "mamba-ssm-untied");
    let prompt = ids(&io("mamba-ssm-untied"), "input_ids");
    let (row, l, v) = (&prompt[..12], 12, m.config.vocab_padded);
    let full = m.logits(&dev, row, 1).unwrap();
    // Prefill the first L - 1 tokens, then one decoding step with the last.
    let mut state = m.new_state(&dev, 1).unwrap();
    let mut rec = dev.recorder("t");
    let t = dev.tensor_u32(&row[..l - 1], &[1, l - 1]).unwrap();
    m.prefill(&mut rec, &t, &mut state, false).unwrap();
    let last = dev.tensor_u32(&row[l - 1..], &[1]).unwrap();
    let step = m.step(&mut rec, &last, &mut state).unwrap();
    rec.submit().unwrap();
    let got = dev.read_f32(&step).unwrap();
    let err = rel_l2(&got, &full[(l - 1) * v..]);
    eprintln!("prompt-then-step vs full forward: relative L2 {err:.3e}");
    assert!(err <= 1e-4, "{err}");
    // A prompt in two chunks (the scan and the conv continue from the state) agrees too.
    let mut state = m.new_state(&dev, 1).unwrap();
    let mut rec = dev.recorder("t");
    m.prefill(
        &mut rec,
        &dev.tensor_u32(&row[..5], &[1, 5]).unwrap(),
        &mut state,
        false,
    )
    .unwrap();
    let two = m
        .prefill(
            &mut rec,
            &dev.tensor_u32(&row[5..], &[1, l - 5]).unwrap(),
            &mut state,
            false,
        )
        .unwrap();
    rec.submit().unwrap();
    let err = rel_l2(&dev.read_f32(&two).unwrap(), &full[(l - 1) * v..]);
    assert!(err <= 1e-4, "chunked prompt: {err}");
    // A prompt of one token runs the decoding step (its dispatch count), and a prompt whose
    // last chunk is one token still agrees with the full forward.
    let mut state = m.new_state(&dev, 1).unwrap();
    let mut rec = dev.recorder("t");
    m.prefill(
        &mut rec,
        &dev.tensor_u32(&row[..l - 1], &[1, l - 1]).unwrap(),
        &mut state,
        false,
    )
    .unwrap();
    let before = rec.dispatch_count();
    let last = m
        .prefill(
            &mut rec,
            &dev.tensor_u32(&row[l - 1..], &[1, 1]).unwrap(),
            &mut state,
            true,
        )
        .unwrap();
    let prefill_dispatches = rec.dispatch_count() - before;
    let mut probe = m.new_state(&dev, 1).unwrap();
    let step_dispatches = {
        let mut r2 = dev.recorder("t2");
        m.step(
            &mut r2,
            &dev.tensor_u32(&row[..1], &[1]).unwrap(),
            &mut probe,
        )
        .unwrap();
        r2.dispatch_count()
    };
    rec.submit().unwrap();
    assert_eq!(last.shape(), &[1, 1, v]);
    assert_eq!(
        prefill_dispatches, step_dispatches,
        "L = 1 on the step path"
    );
    let err = rel_l2(&dev.read_f32(&last).unwrap(), &full[(l - 1) * v..]);
    assert!(err <= 1e-4, "one-token last chunk: {err}");
}

#[test]
fn a_state_snapshot_restores_identical_continuations() {
    let dev = device();
    let m = load(&dev, "mamba-hf-tied");
    let prompt = &ids(&io("mamba-hf-tied"), "input_ids")[12..];
    let mut state = m.new_state(&dev, 1).unwrap();
    let mut rec = dev.recorder("t");
    let logits = m
        .prefill(
            &mut rec,
            &dev.tensor_u32(prompt, &[1, prompt.len()]).unwrap(),
            &mut state,
            false,
        )
        .unwrap();
    rec.submit().unwrap();
    let first = dev.read_f32(&logits).unwrap();
    let snap = state.snapshot(&dev).unwrap();
    let sampling = Sampling {
        temperature: 0.8,
        top_k: 20,
        top_p: 0.9,
        seed: 3,
    };
    let run = |state: &mut spikescan::models::MambaState| -> Vec<u32> {
        let mut rng = 99u64;
        let mut out = Vec::new();
        let mut logits = dev.tensor_f32(&first, &[1, first.len()]).unwrap();
        for _ in 0..6 {
            let rec = dev.recorder("pick");
            let next = m.pick(rec, &logits, &sampling, &mut rng).unwrap()[0];
            out.push(next);
            let mut rec = dev.recorder("step");
            logits = m
                .step(&mut rec, &dev.tensor_u32(&[next], &[1]).unwrap(), state)
                .unwrap();
            rec.submit().unwrap();
        }
        out
    };
    let a = run(&mut state);
    state.restore(&dev, &snap).unwrap();
    let b = run(&mut state);
    assert_eq!(a, b);
    assert!(a.iter().all(|&t| (t as usize) < m.config.vocab_size));
}

#[test]
fn bad_token_ids_and_empty_prompts_are_errors() {
    let dev = device();
    let m = load(&dev, "mamba-ssm-untied");
    let e = m.logits(&dev, &[1, 2, 104], 1).unwrap_err().to_string();
    assert!(
        e.contains("token id 104") && e.contains("104 entries"),
        "{e}"
    );
    let e = m
        .generate(&dev, &[], 3, &Sampling::default(), |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty"), "{e}");
}

#[test]
fn a_prefix_state_seeds_any_slot_of_a_batch() {
    let dev = device();
    let m = load(&dev, "mamba-ssm-untied");
    let prompt = &ids(&io("mamba-ssm-untied"), "input_ids")[..12];
    // The prefix, once, in a batch of one.
    let mut single = m.new_state(&dev, 1).unwrap();
    let mut rec = dev.recorder("t");
    m.prefill(
        &mut rec,
        &dev.tensor_u32(prompt, &[1, 12]).unwrap(),
        &mut single,
        false,
    )
    .unwrap();
    rec.submit().unwrap();
    // A batch of two: slot 1 continues the prefix, slot 0 starts fresh.
    let mut batch = m.new_state(&dev, 2).unwrap();
    batch.copy_slot(&dev, 1, &single, 0).unwrap();
    let mut rec = dev.recorder("t");
    let both = m
        .step(
            &mut rec,
            &dev.tensor_u32(&[5, 9], &[2]).unwrap(),
            &mut batch,
        )
        .unwrap();
    let alone = m
        .step(&mut rec, &dev.tensor_u32(&[9], &[1]).unwrap(), &mut single)
        .unwrap();
    rec.submit().unwrap();
    let v = m.config.vocab_padded;
    let (both, alone) = (dev.read_f32(&both).unwrap(), dev.read_f32(&alone).unwrap());
    assert!(rel_l2(&both[v..], &alone) < 1e-6);
    // Slot 0 is an independent fresh sequence.
    let fresh = m.logits(&dev, &[5], 1).unwrap();
    assert!(rel_l2(&both[..v], &fresh) < 1e-5);
    assert!(batch.copy_slot(&dev, 2, &single, 0).is_err());
}

/// tools/reference/make_mamba_fixtures.py's counter-based generator: `n` values
/// `(k - 2^23) * scale`, k the top 24 bits of splitmix64 over the key's FNV-1a hash and the
/// element index, scale = f32(bound / 2^23); the product is exact in f64, rounded once.
fn counter_uniform(key: &str, n: usize, bound: f64) -> Vec<f32> {
    let mut seed = 0xCBF2_9CE4_8422_2325u64;
    for b in key.bytes() {
        seed = (seed ^ b as u64).wrapping_mul(0x0100_0000_01B3);
    }
    let scale = (bound / (1u64 << 23) as f64) as f32 as f64;
    (0..n as u64)
        .map(|i| {
            let mut z = seed.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (((z >> 40) as i64 - (1 << 23)) as f64 * scale) as f32
        })
        .collect()
}

/// The mamba-130m-shaped checkpoint of `mamba-130m-precision`, rebuilt in `dir`.
fn precision_model(io: &Checkpoint, dir: &std::path::Path) {
    let (d, di, n, r, k, layers, vocab) = (768, 1536, 16, 48, 4, 24, 50280);
    let std = 0.1 * 3f64.sqrt();
    let a_row = io.f32("A_log_row", &[n]).unwrap();
    let dt_bias = io.f32("dt_bias", &[layers, di]).unwrap();
    let mut w: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut u = |key: String, shape: Vec<usize>, bound: f64| {
        let data = counter_uniform(&key, shape.iter().product(), bound);
        w.push((key, shape, data));
    };
    u("backbone.embeddings.weight".into(), vec![vocab, d], std);
    let kb = (k as f64).powf(-0.5);
    for i in 0..layers {
        let p = format!("backbone.layers.{i}.mixer");
        u(format!("{p}.in_proj.weight"), vec![2 * di, d], std);
        u(format!("{p}.conv1d.weight"), vec![di, 1, k], kb);
        u(format!("{p}.x_proj.weight"), vec![r + 2 * n, di], std);
        u(
            format!("{p}.dt_proj.weight"),
            vec![di, r],
            (r as f64).powf(-0.5),
        );
        u(
            format!("{p}.out_proj.weight"),
            vec![d, di],
            (di as f64).powf(-0.5),
        );
    }
    for i in 0..layers {
        let p = format!("backbone.layers.{i}");
        w.push((format!("{p}.norm.weight"), vec![d], vec![1.0; d]));
        w.push((format!("{p}.mixer.conv1d.bias"), vec![di], vec![0.0; di]));
        w.push((
            format!("{p}.mixer.dt_proj.bias"),
            vec![di],
            dt_bias[i * di..(i + 1) * di].to_vec(),
        ));
        w.push((format!("{p}.mixer.A_log"), vec![di, n], a_row.repeat(di)));
        w.push((format!("{p}.mixer.D"), vec![di], vec![1.0; di]));
    }
    w.push(("backbone.norm_f.weight".into(), vec![d], vec![1.0; d]));
    std::fs::create_dir_all(dir).unwrap();
    spikescan::loader::save_f32(dir.join("model.safetensors"), &w).unwrap();
    std::fs::copy(
        fixture("mamba-130m-precision").join("config.json"),
        dir.join("config.json"),
    )
    .unwrap();
}

/// At the mamba-130m shape the engine's prompt logits are no farther from transformers'
/// float64 run than PyTorch's own float32 run is (the fixture's `torch_f32_rel_l2`).
#[test]
fn mamba_130m_shaped_logits_are_as_close_to_f64_as_pytorch_f32() {
    let io = io("mamba-130m-precision");
    let dir = std::env::temp_dir()
        .join(format!("spikescan-mamba-precision-{}", std::process::id()))
        .join("mamba-130m-precision");
    precision_model(&io, &dir);
    let dev = device();
    let m = match Model::load(&dev, &dir).unwrap() {
        Model::Mamba(m) => m,
        _ => panic!("not a Mamba model"),
    };
    let stride: usize = io.metadata("column_stride").unwrap().parse().unwrap();
    let bound: f64 = io.metadata("torch_f32_rel_l2").unwrap().parse().unwrap();
    let prompt = ids(&io, "input_ids");
    let l = prompt.len();
    let v = m.config.vocab_padded;
    let got = m.logits(&dev, &prompt, 1).unwrap();
    let cols: Vec<f32> = (0..l)
        .flat_map(|t| {
            let row = &got[t * v..t * v + m.config.vocab_size];
            row.iter().step_by(stride).copied().collect::<Vec<_>>()
        })
        .collect();
    let want = io.f32_any("logits_f64").unwrap();
    assert_eq!(cols.len(), want.len());
    assert!(cols.iter().all(|x| x.is_finite()));
    let err = rel_l2(&cols, &want);
    let w = want.len() / l;
    let first = rel_l2(&cols[..w], &want[..w]);
    let last = rel_l2(&cols[(l - 1) * w..], &want[(l - 1) * w..]);
    eprintln!(
        "mamba-130m shape, {l}-token prompt on {}: logits relative L2 to float64 {err:.3e} \
         (position 0 {first:.2e}, last {last:.2e}); PyTorch float32: {bound:.3e}",
        dev.describe()
    );
    assert!(err <= bound, "{err:.3e} > PyTorch f32's {bound:.3e}");
    std::fs::remove_dir_all(dir.parent().unwrap()).ok();
}

/// Prompts whose activations exceed one storage binding run in chunks of sequences and
/// tokens (here: 2 x 100 tokens on a device capped at 64 KiB bindings, 32 tokens a pass),
/// with the same logits as one pass.
#[test]
fn prompts_over_the_binding_limit_run_in_chunks() {
    use spikescan::DeviceOptions;
    let name = "mamba-hf-tied";
    let whole_dev = device();
    let prompt: Vec<u32> = (0..200u32).map(|i| 1 + (i * 37 + i / 7) % 96).collect();
    let want = load(&whole_dev, name)
        .logits(&whole_dev, &prompt, 2)
        .unwrap();
    let small = Device::with_options(DeviceOptions {
        max_binding: Some(64 << 10),
        ..DeviceOptions::from_env()
    })
    .unwrap();
    let m = load(&small, name);
    // One pass over all 200 tokens does not fit.
    let t = small.tensor_u32(&prompt, &[2, 100]).unwrap();
    let mut state = m.new_state(&small, 2).unwrap();
    let mut rec = small.recorder("one pass");
    assert!(m.prefill(&mut rec, &t, &mut state, true).is_err());
    drop(rec);
    let got = m.logits(&small, &prompt, 2).unwrap();
    let err = rel_l2(&got, &want);
    eprintln!("chunked prompt (64 KiB bindings) vs one pass: relative L2 {err:.3e}");
    assert!(err <= 1e-5, "{err:.3e}");
}

/// Falcon-Mamba's decode path: the logits behind each of transformers' 8 greedy tokens (its
/// cached decoding: the prompt, then one-token steps through the recurrent-form mixer) against
/// the engine's prompt pass then recorded steps, and then replays of the captured step graph;
/// the captured step has one more dispatch per layer than plain Mamba's (the dt/B/C norms).
#[test]
fn falcon_mamba_decode_logits_match_transformers() {
    let dev = device();
    let name = "falcon-mamba-tiny";
    let m = load(&dev, name);
    assert_eq!(m.config.mixer_rms_eps, Some(1e-6));
    let io = io(name);
    let greedy = ids(&io, "greedy");
    let want = io.f32_any("step_logits").unwrap();
    let v = m.config.vocab_padded;
    let steps = greedy.len() - 12;
    assert_eq!(want.len(), steps * v);
    let prompt = &greedy[..12];
    let prefilled = |state: &mut spikescan::models::MambaState| -> Vec<f32> {
        let mut rec = dev.recorder("prefill");
        let t = dev.tensor_u32(prompt, &[1, 12]).unwrap();
        let logits = m.prefill(&mut rec, &t, state, false).unwrap();
        rec.submit().unwrap();
        dev.read_f32(&logits).unwrap()
    };
    let check = |what: &str, i: usize, got: &[f32], worst: &mut f64| {
        let err = rel_l2(got, &want[i * v..(i + 1) * v]);
        assert!(
            err <= 1e-3,
            "{what}, token {i}: logits relative L2 {err:.3e}"
        );
        assert_eq!(
            argmax_rows(got, v)[0] as u32,
            greedy[12 + i],
            "{what}, token {i}"
        );
        *worst = worst.max(err);
    };
    // Recorded steps.
    let mut worst = 0.0f64;
    let mut state = m.new_state(&dev, 1).unwrap();
    check("prompt", 0, &prefilled(&mut state), &mut worst);
    for i in 1..steps {
        let mut rec = dev.recorder("step");
        let t = dev.tensor_u32(&[greedy[12 + i - 1]], &[1]).unwrap();
        let logits = m.step(&mut rec, &t, &mut state).unwrap();
        rec.submit().unwrap();
        check(
            "recorded step",
            i,
            &dev.read_f32(&logits).unwrap(),
            &mut worst,
        );
    }
    // The captured step graph, replayed.
    let mut worst_graph = 0.0f64;
    let mut state = m.new_state(&dev, 1).unwrap();
    let dec = m.decoder(&dev, &mut state).unwrap();
    check("prompt", 0, &prefilled(&mut state), &mut worst_graph);
    for i in 1..steps {
        dev.write(&dec.ids, &greedy[12 + i - 1].to_le_bytes())
            .unwrap();
        dev.replay(&[&dec.step], None).unwrap();
        check(
            "captured step",
            i,
            &dev.read_f32(&dec.logits).unwrap(),
            &mut worst_graph,
        );
    }
    eprintln!(
        "{name}: decode logits vs transformers' cached decoding, worst relative L2 {worst:.3e} \
         (recorded steps), {worst_graph:.3e} (captured graph)"
    );
    let plain = load(&dev, "mamba-hf-tied");
    assert_eq!(
        (plain.config.n_layer, plain.config.d_model),
        (m.config.n_layer, m.config.d_model)
    );
    let mut s = plain.new_state(&dev, 1).unwrap();
    let plain_dec = plain.decoder(&dev, &mut s).unwrap();
    assert_eq!(
        dec.step.dispatches(),
        plain_dec.step.dispatches() + m.config.n_layer,
        "one dt/B/C norm dispatch per layer"
    );
}

/// Falcon-Mamba configs: `model_type: "falcon_mamba"` names the architecture, the model
/// reports it, `mixer_rms_eps` defaults to transformers' 1e-6 and must be a number.
#[test]
fn falcon_mamba_configs_are_read_and_checked() {
    let md = ModelDir::open(fixture("falcon-mamba-tiny")).unwrap();
    assert_eq!(md.architecture().unwrap(), "falcon_mamba");
    let dev = device();
    assert_eq!(
        Model::from_dir(&dev, &md).unwrap().architecture(),
        "falcon_mamba"
    );
    assert_eq!(
        Model::load(&dev, fixture("mamba-hf-tied"))
            .unwrap()
            .architecture(),
        "mamba"
    );
    let path = std::path::Path::new("config.json");
    let mut cfg = md.config.clone();
    let c = MambaConfig::from_json(&cfg, path).unwrap();
    assert_eq!(
        (c.mixer_rms_eps, c.d_inner, c.dt_rank),
        (Some(1e-6), 128, 4)
    );
    cfg.as_object_mut().unwrap().remove("mixer_rms_eps");
    assert_eq!(
        MambaConfig::from_json(&cfg, path).unwrap().mixer_rms_eps,
        Some(1e-6)
    );
    for bad in [
        serde_json::json!("1e-6"),
        serde_json::json!(null),
        serde_json::json!(-1.0),
    ] {
        cfg["mixer_rms_eps"] = bad.clone();
        let e = MambaConfig::from_json(&cfg, path).unwrap_err().to_string();
        assert!(
            e.contains("config.json") && e.contains("\"mixer_rms_eps\" must be"),
            "{bad}: {e}"
        );
    }
    // Plain Mamba has no mixer norms, whatever else the config holds.
    let plain = ModelDir::open(fixture("mamba-hf-tied")).unwrap();
    let c = MambaConfig::from_json(&plain.config, path).unwrap();
    assert_eq!(c.mixer_rms_eps, None);
}
