//! Mamba against transformers' MambaForCausalLM (fixtures from
//! tools/reference/make_mamba_fixtures.py), in Hugging Face (tied head) and mamba_ssm
//! (untied head, bf16 weights) formats: prompt logits, greedy continuations, prompt-then-step
//! against the full forward, chunked prompts, and state snapshot/restore.

mod common;
use common::*;

use spikescan::loader::Checkpoint;
use spikescan::models::{Mamba, Model, Sampling};
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
    for name in ["mamba-hf-tied", "mamba-ssm-untied"] {
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
    for name in ["mamba-hf-tied", "mamba-ssm-untied"] {
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
