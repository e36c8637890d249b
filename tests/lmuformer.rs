//! LMUFormer and Spiking LMUFormer against the official code (zeyuliu1037/LMUFormer,
//! `src/lmu_rnn.py`, run by tools/reference/make_lmu_fixtures.py), two widths and depths each:
//! whole-clip logits (mean and `all_seq`), every LIF layer's spikes free-running and
//! teacher-forced per unit with each unit's real-valued output, the LMU memory against the
//! official FFT convolution, and streaming against the whole clip.

mod common;

use common::{agreement, argmax_rows, device, fixture, rel_l2};
use spikescan::loader::Checkpoint;
use spikescan::models::lmuformer::LOOKAHEAD;
use spikescan::models::taps::Taps;
use spikescan::models::{Lmuformer, Model};
use spikescan::ops::lmu::{memory_chunked_into, memory_step_into};
use spikescan::{DType, Device, Tensor};

fn load(dev: &Device, name: &str) -> Lmuformer {
    match Model::load(dev, fixture(name)).unwrap() {
        Model::Lmuformer(m) => m,
        _ => panic!("{name} is not an LMUFormer"),
    }
}

fn io(name: &str) -> Checkpoint {
    Checkpoint::open(fixture(name).join("io.safetensors")).unwrap()
}

fn upload(dev: &Device, io: &Checkpoint, key: &str) -> Tensor {
    dev.tensor_f32(&io.f32_any(key).unwrap(), io.shape(key).unwrap())
        .unwrap()
}

/// Whole clip: logits and the per-frame (`all_seq`) logits, free-running spikes.
fn whole_clip(name: &str, min_agreement: f64) {
    let dev = device();
    let m = load(&dev, name);
    let io = io(name);
    let k = m.config.num_classes;
    let x = upload(&dev, &io, "input");
    let mut taps = Taps::default();
    let mut rec = dev.recorder("test");
    let logits = m.forward(&mut rec, &x, false, Some(&mut taps)).unwrap();
    rec.submit().unwrap();
    let got = dev.read_f32(&logits).unwrap();
    let want = io.f32_any("logits").unwrap();
    let err = rel_l2(&got, &want);
    eprintln!("{name}: logits relative L2 {err:.3e}");
    assert!(err <= 1e-5, "{name}: logits relative L2 {err:.3e}");
    assert_eq!(argmax_rows(&got, k), argmax_rows(&want, k), "{name}: top-1");

    let shape = io.shape("input").unwrap().to_vec();
    let all = m
        .run(&dev, &io.f32_any("input").unwrap(), &shape, true)
        .unwrap();
    let want_all = io.f32_any("logits_all").unwrap();
    let err = rel_l2(&all, &want_all);
    eprintln!("{name}: all_seq logits relative L2 {err:.3e}");
    assert!(err <= 1e-5, "{name}: all_seq relative L2 {err:.3e}");
    let (a, b) = (argmax_rows(&all, k), argmax_rows(&want_all, k));
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    assert!(
        same as f64 >= 0.99 * a.len() as f64,
        "{name}: per-frame top-1 {same}/{}",
        a.len()
    );

    let spikes = taps.read(&dev).unwrap();
    assert_eq!(
        spikes.len(),
        io.keys().filter(|k| k.starts_with("spikes.")).count(),
        "every LIF layer is compared"
    );
    for (layer, s) in &spikes {
        let a = agreement(s, &io.f32_any(&format!("spikes.{layer}")).unwrap());
        eprintln!("{name}: {layer:<28} free-running agreement {a:.5}");
        assert!(a >= min_agreement, "{name}: {layer} agreement {a}");
    }
}

#[test]
fn lmuformer_matches_pytorch_whole_clip() {
    whole_clip("lmuformer-small", 1.0);
}

#[test]
fn spiking_lmuformer_matches_pytorch_whole_clip() {
    whole_clip("spiking-lmuformer-small", 0.999);
}

#[test]
fn two_block_lmuformers_match_pytorch_whole_clip() {
    whole_clip("lmuformer-small-d2", 1.0);
    whole_clip("spiking-lmuformer-small-d2", 0.999);
}

/// Each unit (embedding, LMU block, MLP block, head) fed the official real-valued input: its
/// output against the official input of the next unit (the logits for the head), and every
/// LIF layer's spikes.
fn teacher_forced(name: &str, max_rel: f64) {
    let dev = device();
    let m = load(&dev, name);
    let io = io(name);
    let depth = m.config.depths;
    let mut keys = vec!["input".to_string()];
    for i in 0..depth {
        keys.push(format!("stream.block.{i}.attn"));
        keys.push(format!("stream.block.{i}.mlp"));
    }
    keys.push("stream.head".into());
    keys.push("logits".into());
    let mut taps = Taps::default();
    let mut worst_out = 0.0f64;
    for (u, pair) in keys.windows(2).enumerate() {
        let x = upload(&dev, &io, &pair[0]);
        let mut rec = dev.recorder("test");
        let t = Some(&mut taps);
        let out = match u {
            0 => m.embed(&mut rec, &x, t),
            _ if u == 2 * depth + 1 => m.head(&mut rec, &x, false, t),
            _ if u % 2 == 1 => m.attn(&mut rec, u / 2, &x, t),
            _ => m.mlp(&mut rec, u / 2 - 1, &x, t),
        }
        .unwrap();
        rec.submit().unwrap();
        let err = rel_l2(&dev.read_f32(&out).unwrap(), &io.f32_any(&pair[1]).unwrap());
        eprintln!(
            "{name} (teacher-forced): {} -> {}: relative L2 {err:.3e}",
            pair[0], pair[1]
        );
        assert!(
            err <= max_rel,
            "{name}: {} -> {}: relative L2 {err:.3e}",
            pair[0],
            pair[1]
        );
        worst_out = worst_out.max(err);
    }
    let spikes = taps.read(&dev).unwrap();
    assert_eq!(
        spikes.len(),
        io.keys().filter(|k| k.starts_with("spikes.")).count(),
        "every LIF layer is compared"
    );
    let mut worst = 1.0f64;
    for (layer, s) in &spikes {
        let want = io.f32_any(&format!("spikes.{layer}")).unwrap();
        let rate = want.iter().sum::<f32>() / want.len() as f32;
        assert!(rate > 0.0 && rate < 1.0, "{layer} fires at {rate}");
        let a = agreement(s, &want);
        worst = worst.min(a);
        eprintln!("{name} (teacher-forced): {layer:<28} rate {rate:.3} agreement {a:.5}");
        assert!(a >= 0.999, "{name}: {layer} teacher-forced agreement {a}");
    }
    eprintln!(
        "{name}: {} LIF layers, worst teacher-forced agreement {worst:.5}, worst unit output {worst_out:.3e}",
        spikes.len()
    );
}

#[test]
fn lmuformer_units_agree_teacher_forced() {
    teacher_forced("lmuformer-small", 1e-5);
    teacher_forced("lmuformer-small-d2", 1e-5);
}

#[test]
fn spiking_lmuformer_units_agree_teacher_forced() {
    teacher_forced("spiking-lmuformer-small", 1e-2);
    teacher_forced("spiking-lmuformer-small-d2", 1e-2);
}

/// The LMU memory of the reference's `u`: Toeplitz product, chunked form and the streaming
/// recurrence against PyTorch's FFT convolution.
#[test]
fn lmu_memory_matches_the_reference_fft() {
    let dev = device();
    for name in [
        "lmuformer-small",
        "lmuformer-small-d2",
        "spiking-lmuformer-small",
        "spiking-lmuformer-small-d2",
    ] {
        let md = spikescan::models::ModelDir::open(fixture(name)).unwrap();
        let io = io(name);
        let key = "block.0.attn.lmu";
        let u = io.f32_any(&format!("memory.{key}.u")).unwrap();
        let want = io.f32_any(&format!("memory.{key}.m")).unwrap();
        let (n, b) = (io.shape(&format!("memory.{key}.u")).unwrap()[0], 2);
        let m = io.shape(&format!("memory.{key}.m")).unwrap()[2];
        let ck = &md.checkpoint;
        let mats = spikescan::ops::lmu::LmuMatrices::new(
            &dev,
            &ck.f32(&format!("{key}.A"), &[m, m]).unwrap(),
            &ck.f32(&format!("{key}.B"), &[m, 1]).unwrap(),
            &ck.f32(&format!("{key}.H"), &[m, n]).unwrap(),
            m,
        )
        .unwrap();
        let ut = dev.tensor_f32(&u, &[n, b]).unwrap();
        for chunk in [n, 32, 7] {
            let out = dev.alloc(&[n, b, m], DType::F32).unwrap();
            let mut rec = dev.recorder("test");
            memory_chunked_into(&mut rec, &mats, &ut, n, b, chunk, &out).unwrap();
            rec.submit().unwrap();
            let err = rel_l2(&dev.read_f32(&out).unwrap(), &want);
            eprintln!("{name}: memory (chunk {chunk}) vs PyTorch FFT: relative L2 {err:.3e}");
            assert!(err <= 1e-5, "{name}: chunk {chunk}: {err:.3e}");
        }
        let mut state = dev.tensor_f32(&vec![0.0; b * m], &[b, m]).unwrap();
        let mut got = Vec::new();
        for t in 0..n {
            let ut = dev.tensor_f32(&u[t * b..(t + 1) * b], &[b]).unwrap();
            let next = dev.alloc(&[b, m], DType::F32).unwrap();
            let mut rec = dev.recorder("test");
            memory_step_into(&mut rec, &mats, &ut, &state, &next).unwrap();
            rec.submit().unwrap();
            got.extend(dev.read_f32(&next).unwrap());
            state = next;
        }
        let err = rel_l2(&got, &want);
        eprintln!("{name}: memory (recurrence) vs PyTorch FFT: relative L2 {err:.3e}");
        assert!(err <= 1e-5, "{name}: recurrence {err:.3e}");
    }
}

/// Streams both clips of the fixture frame by frame; returns `[B, N, classes]`.
fn stream_clip(dev: &Device, m: &Lmuformer, x: &[f32], b: usize, n: usize) -> Vec<f32> {
    let c = m.config.in_channels;
    let k = m.config.num_classes;
    let mut s = m.stream(dev, b).unwrap();
    let mut frames = Vec::new();
    for t in 0..n {
        let frame: Vec<f32> = (0..b)
            .flat_map(|i| x[(i * n + t) * c..(i * n + t + 1) * c].to_vec())
            .collect();
        let out = s.push(&frame).unwrap();
        assert_eq!(out.is_some(), t >= LOOKAHEAD, "frame {t}");
        frames.extend(out);
    }
    frames.extend(s.finish().unwrap());
    assert_eq!(frames.len(), n);
    let mut v = vec![0.0; b * n * k];
    for (t, f) in frames.iter().enumerate() {
        for i in 0..b {
            v[(i * n + t) * k..(i * n + t + 1) * k].copy_from_slice(&f[i * k..(i + 1) * k]);
        }
    }
    v
}

/// Streaming reproduces the whole clip's per-frame (`all_seq`) prediction for every frame,
/// the last five included (through `finish`).
#[test]
fn streaming_matches_the_whole_clip_all_seq() {
    let dev = device();
    for (name, max_rel) in [("lmuformer-small", 1e-5), ("spiking-lmuformer-small", 1e-4)] {
        let m = load(&dev, name);
        let io = io(name);
        let shape = io.shape("input").unwrap().to_vec();
        let (b, n, k) = (shape[0], shape[1], m.config.num_classes);
        let x = io.f32_any("input").unwrap();
        let whole = m.run(&dev, &x, &shape, true).unwrap();
        let streamed = stream_clip(&dev, &m, &x, b, n);
        let err = rel_l2(&streamed, &whole);
        let (a, w) = (argmax_rows(&streamed, k), argmax_rows(&whole, k));
        let same = a.iter().zip(&w).filter(|(x, y)| x == y).count();
        eprintln!(
            "{name}: streamed vs whole-clip all_seq: relative L2 {err:.3e}, top-1 equal on {same}/{} frames",
            a.len()
        );
        assert!(err <= max_rel, "{name}: {err:.3e}");
        assert_eq!(same, a.len(), "{name}: per-frame top-1");
    }
}

/// A snapshot taken mid-clip and restored replays the rest identically.
#[test]
fn stream_snapshot_restore_replays_exactly() {
    let dev = device();
    let m = load(&dev, "spiking-lmuformer-small");
    let io = io("spiking-lmuformer-small");
    let c = m.config.in_channels;
    let x = io.f32_any("input").unwrap();
    let frame = |t: usize| x[t * c..(t + 1) * c].to_vec();
    let mut s = m.stream(&dev, 1).unwrap();
    for t in 0..40 {
        s.push(&frame(t)).unwrap();
    }
    let snap = s.snapshot().unwrap();
    let run = |s: &mut spikescan::models::LmuStream| -> Vec<f32> {
        let mut v = Vec::new();
        for t in 40..60 {
            v.extend(s.push(&frame(t)).unwrap().unwrap());
        }
        v.extend(s.finish().unwrap().concat());
        v
    };
    let first = run(&mut s);
    assert!(
        s.push(&frame(0)).is_err(),
        "a finished stream refuses frames"
    );
    s.restore(&snap).unwrap();
    assert_eq!(s.position(), (40, 40 - LOOKAHEAD));
    let second = run(&mut s);
    assert_eq!(first, second);
    // Wrong frame size: an error naming the expected shape.
    let mut s = m.stream(&dev, 1).unwrap();
    let err = s.push(&[0.0; 3]).unwrap_err().to_string();
    assert!(err.contains(&format!("[1, {c}]")), "{err}");
}

#[test]
fn bad_inputs_are_errors() {
    let dev = device();
    let m = load(&dev, "lmuformer-small");
    let c = m.config.in_channels;
    let err = m.run(&dev, &vec![0.0; 2 * 5 * (c + 1)], &[2, 5, c + 1], false);
    assert!(err.unwrap_err().to_string().contains("frames x mel"));
    assert!(m.run(&dev, &[0.0; 3], &[1, 1, c], false).is_err());
}

/// The fbank front end against torchaudio's Kaldi fbank on a synthetic WAV.
#[test]
fn fbank_matches_torchaudio_kaldi() {
    use spikescan::models::audio::{fbank, read_wav, wav_to_features};
    let wav = fixture("audio/chirp.wav");
    let want = Checkpoint::open(fixture("audio/chirp.fbank.safetensors")).unwrap();
    let (samples, rate) = read_wav(&wav).unwrap();
    assert_eq!(rate, 16000);
    let mean = samples.iter().map(|&v| v as f64).sum::<f64>() / samples.len() as f64;
    let centred: Vec<f32> = samples.iter().map(|&v| (v as f64 - mean) as f32).collect();
    let got = fbank(&centred, rate, 128);
    let raw = want.f32_any("fbank").unwrap();
    assert_eq!(got.len(), raw.len(), "frames x bins");
    let err = rel_l2(&got, &raw);
    let max = got
        .iter()
        .zip(&raw)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("fbank vs torchaudio: relative L2 {err:.3e}, max abs {max:.3e}");
    assert!(err <= 1e-4, "fbank relative L2 {err:.3e}");
    let x = wav_to_features(&wav, 128, 128).unwrap();
    let err = rel_l2(&x, &want.f32_any("input").unwrap());
    eprintln!("model input (padded, normalised) vs reference: relative L2 {err:.3e}");
    assert!(err <= 1e-4, "features relative L2 {err:.3e}");
}

#[test]
fn wav_with_the_wrong_sample_rate_is_an_error() {
    let dir = std::env::temp_dir().join(format!("spikescan-wav-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("8k.wav");
    let s: Vec<f32> = (0..8000).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
    std::fs::write(&path, spikescan::models::audio::wav_bytes(&s, 8000)).unwrap();
    let err = spikescan::models::audio::wav_to_features(&path, 128, 128)
        .unwrap_err()
        .to_string();
    assert!(err.contains("8000 Hz") && err.contains("16000"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// fft_H (complex64) loads with the checkpoint, is left unused, and reading it as a weight is
/// an error naming its dtype.
#[test]
fn complex_fft_h_is_loaded_and_ignored() {
    let dev = device();
    let md = spikescan::models::ModelDir::open(fixture("spiking-lmuformer-small")).unwrap();
    let key = "block.0.attn.lmu.fft_H";
    assert_eq!(md.checkpoint.dtype(key).as_deref(), Some("C64"));
    Model::from_dir(&dev, &md).unwrap();
    let unused = md.checkpoint.unused_keys();
    assert!(unused.iter().any(|k| k == key), "{unused:?}");
    let err = md.checkpoint.f32_any(key).unwrap_err().to_string();
    assert!(err.contains(key) && err.contains("C64"), "{err}");
}
