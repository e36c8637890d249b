//! The `spikescan` binary end to end: `info`, `ops`, and errors for a missing adapter.

mod common;
use common::spikescan;
use std::process::Command;

#[test]
fn info_prints_adapter_backend_driver_features_and_limits() {
    let (code, out, err) = spikescan(&["info", "--all"], &[]);
    assert_eq!(code, 0, "{err}");
    for field in [
        "adapter",
        "backend",
        "driver",
        "features",
        "max_storage_buffer_binding_size",
    ] {
        assert!(out.contains(field), "missing {field}:\n{out}");
    }
}

/// `spikescan info` says which presets fit the adapter's limits: all of them on lavapipe's,
/// not those whose largest weight exceeds a capped binding (the vocabulary matrices go to row
/// blocks instead); under Dawn's compatibility limits the kernels run 128-wide.
#[test]
fn info_says_which_presets_fit_the_limits() {
    let presets = |env: &[(&str, &str)]| -> serde_json::Value {
        let (code, out, err) = spikescan(&["--json", "info"], env);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(out.trim()).unwrap()
    };
    let v = presets(&[]);
    let all = v["presets"].as_array().unwrap();
    assert!(all.len() >= 15, "{v}");
    // Every preset fits lavapipe's limits but Falcon-Mamba 7B, whose f32 in_proj (16384 ×
    // 4096, 256 MiB) exceeds its 128 MiB binding.
    for p in all {
        let big = p["name"] == "falcon-mamba-7b";
        assert_eq!(p["fits"], !big, "{p}");
        if big {
            assert!(
                p["largest_weight"]
                    .as_str()
                    .unwrap()
                    .ends_with("in_proj.weight"),
                "{p}"
            );
        }
    }
    assert_eq!(v["kernel_workgroup_size"], 256);
    let v = presets(&[
        ("SPIKESCAN_MAX_BINDING", "8M"),
        ("SPIKESCAN_LIMITS", "compat"),
    ]);
    assert_eq!(v["kernel_workgroup_size"], 128);
    let get = |name: &str| {
        v["presets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {v}"))
            .clone()
    };
    // 5.1 MiB at most: fits; mamba-130m's in_proj is 9 MiB: does not; its 147 MiB embedding
    // would be row-blocked either way.
    assert_eq!(get("spikformer-8-384")["fits"], true);
    let m = get("mamba-130m");
    assert_eq!(m["fits"], false);
    assert!(
        m["largest_weight"]
            .as_str()
            .unwrap()
            .ends_with("in_proj.weight"),
        "{m}"
    );
    assert_eq!(m["row_blocked"][0], "backbone.embedding.weight");
    let (code, out, _) = spikescan(&["info"], &[("SPIKESCAN_MAX_BINDING", "8M")]);
    assert_eq!(code, 0);
    assert!(
        out.contains("spikformer-8-384")
            && out.contains("does NOT fit: backbone.layers.23.mixer.in_proj.weight"),
        "{out}"
    );
}

#[test]
fn ops_prints_a_support_matrix_and_passes() {
    let (code, out, err) = spikescan(&["ops", "--filter", "rms_norm"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("subgroups") && out.contains("rms_norm") && out.contains("ok"),
        "{out}"
    );
}

#[test]
fn an_adapter_that_does_not_exist_is_a_clear_error() {
    let (code, _, err) = spikescan(&["info"], &[("SPIKESCAN_ADAPTER", "no-such-gpu-42")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no-such-gpu-42") && err.contains("no GPU adapter"),
        "{err}"
    );
}

#[test]
fn no_adapter_on_a_backend_says_how_to_get_one() {
    // No DX12 or Metal on Linux: the adapter list is empty.
    let backend = if cfg!(target_os = "linux") {
        "dx12"
    } else {
        "gl"
    };
    let (code, _, err) = spikescan(&["info"], &[("SPIKESCAN_BACKEND", backend)]);
    if cfg!(target_os = "linux") {
        assert_eq!(code, 2);
        assert!(
            err.contains("no GPU adapter") && err.contains("mesa-vulkan-drivers"),
            "{err}"
        );
    }
    let (code, _, err) = spikescan(&["info"], &[("SPIKESCAN_BACKEND", "cuda")]);
    assert_eq!(code, 2);
    assert!(err.contains("cuda"), "{err}");
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("spikescan-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `spikescan run` on a fixture's model with its own io.safetensors as input.
fn run_fixture(
    dir: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> (i32, String, String) {
    let io = dir.join("io.safetensors");
    let mut args = vec![
        "run",
        "--model",
        dir.to_str().unwrap(),
        "--input",
        io.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    spikescan(&args, &[])
}

#[test]
fn run_writes_the_reference_logits_and_prints_stats() {
    let dir = fixture("spikformer-imagenet-exact");
    let out = tmp("run").join("y.safetensors");
    let io = dir.join("io.safetensors");
    let (code, stdout, err) = run_fixture(&dir, &out, &["--stats"]);
    assert_eq!(code, 0, "{err}");
    let got = spikescan::loader::Checkpoint::open(&out).unwrap();
    let want = spikescan::loader::Checkpoint::open(&io).unwrap();
    assert_eq!(got.shape("logits"), want.shape("logits"));
    assert_eq!(
        got.f32_any("logits").unwrap(),
        want.f32_any("logits").unwrap()
    );
    assert!(
        stdout.contains("block.1.mlp.fc2_lif") && stdout.contains("firing rate"),
        "{stdout}"
    );
    assert!(
        stdout.contains("energy estimate") && stdout.contains("mJ"),
        "{stdout}"
    );
}

/// Every exact vision fixture made by the official code, through the CLI as a user runs it:
/// the official logits to rounding (they are exact) and the same top-1.
#[test]
fn run_reproduces_the_official_logits_of_every_exact_vision_fixture() {
    for name in [
        "spikformer-cifar-exact",
        "spikformer-cifar-exact-t4",
        "meta-spikeformer-exact-t1",
        "meta-spikeformer-exact-t4-kd",
        "meta-spikeformer-wide-exact-t1-kd",
        "meta-spikeformer-wide-exact-t4",
        "meta-spikeformer-03cc73e-exact-t4-kd",
    ] {
        let dir = fixture(name);
        let out = tmp(&format!("official-{name}")).join("y.safetensors");
        let io = dir.join("io.safetensors");
        let (code, _, err) = run_fixture(&dir, &out, &[]);
        assert_eq!(code, 0, "{name}: {err}");
        let got = spikescan::loader::Checkpoint::open(&out).unwrap();
        let want = spikescan::loader::Checkpoint::open(&io).unwrap();
        let (g, w) = (
            got.f32_any("logits").unwrap(),
            want.f32_any("logits").unwrap(),
        );
        assert_eq!(got.shape("logits"), want.shape("logits"), "{name}");
        let num: f64 = g
            .iter()
            .zip(&w)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum();
        let den: f64 = w.iter().map(|b| (*b as f64).powi(2)).sum();
        let rel = (num / den).sqrt();
        eprintln!("{name}: spikescan run vs the official logits: relative L2 {rel:.3e}");
        assert!(rel <= 1e-6, "{name}: relative L2 {rel:.3e}");
        let k = want.shape("logits").unwrap()[1];
        let top = |v: &[f32]| -> Vec<usize> {
            v.chunks(k)
                .map(|r| (0..k).fold(0, |b, i| if r[i] > r[b] { i } else { b }))
                .collect()
        };
        assert_eq!(top(&g), top(&w), "{name}: top-1");
    }
}

#[test]
fn run_takes_a_png_and_prints_the_top_classes_with_labels() {
    let model = tmp("png-model");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("spikformer-cifar-exact").join(f), model.join(f)).unwrap();
    }
    let names: Vec<String> = (0..10).map(|i| format!("class-{i}")).collect();
    std::fs::write(model.join("labels.txt"), names.join("\n")).unwrap();
    let png = model.join("img.png");
    image::RgbImage::from_fn(48, 40, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 6) as u8, 128])
    })
    .save(&png)
    .unwrap();
    let (code, out, err) = spikescan(
        &[
            "run",
            "--model",
            model.to_str().unwrap(),
            "--input",
            png.to_str().unwrap(),
            "--top",
            "3",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("class-").count(), 3, "{out}");
}

#[test]
fn run_errors_name_the_file_and_what_is_wrong() {
    let model = fixture("spikformer-cifar-exact");
    let m = model.to_str().unwrap();
    let d = tmp("errors");
    let run = |args: &[&str]| {
        let (code, _, err) = spikescan(args, &[]);
        assert_eq!(code, 2, "{err}");
        err
    };
    let e = run(&["run", "--model", "/no/such/dir", "--input", "x.safetensors"]);
    assert!(
        e.contains("/no/such/dir") && e.contains("does not exist"),
        "{e}"
    );
    let e = run(&["run", "--model", m, "--input", "/no/such/input.safetensors"]);
    assert!(e.contains("/no/such/input.safetensors"), "{e}");
    // A safetensors file without 'input'.
    let e = run(&[
        "run",
        "--model",
        m,
        "--input",
        model.join("model.safetensors").to_str().unwrap(),
    ]);
    assert!(e.contains("no tensor named 'input'"), "{e}");
    // An image that does not decode.
    let bad = d.join("bad.jpg");
    std::fs::write(&bad, b"\xff\xd8 not really a jpeg").unwrap();
    let e = run(&["run", "--model", m, "--input", bad.to_str().unwrap()]);
    assert!(e.contains("bad.jpg") && e.contains("cannot decode"), "{e}");
    // An input of the wrong shape.
    let x = d.join("x.safetensors");
    spikescan::loader::save_f32(&x, &[("input".into(), vec![1, 1, 32, 32], vec![0.0; 1024])])
        .unwrap();
    let e = run(&["run", "--model", m, "--input", x.to_str().unwrap()]);
    assert!(e.contains("[B, 3, H, W]"), "{e}");
    // A model directory whose config has no architecture.
    let nd = d.join("noarch");
    std::fs::create_dir_all(&nd).unwrap();
    std::fs::write(nd.join("config.json"), "{}").unwrap();
    std::fs::copy(
        model.join("model.safetensors"),
        nd.join("model.safetensors"),
    )
    .unwrap();
    let e = run(&[
        "run",
        "--model",
        nd.to_str().unwrap(),
        "--input",
        x.to_str().unwrap(),
    ]);
    assert!(e.contains("architecture"), "{e}");
    // Nothing half-written on failure.
    let out = d.join("never.safetensors");
    run(&[
        "run",
        "--model",
        m,
        "--input",
        x.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(!out.exists());
}

#[test]
fn run_gives_mamba_logits_and_generate_streams_the_greedy_continuation() {
    let dir = fixture("mamba-ssm-untied");
    let io = dir.join("io.safetensors");
    let out = tmp("mamba").join("logits.safetensors");
    let (code, _, err) = run_fixture(&dir, &out, &[]);
    assert_eq!(code, 0, "{err}");
    let got = spikescan::loader::Checkpoint::open(&out).unwrap();
    let want = spikescan::loader::Checkpoint::open(&io).unwrap();
    assert_eq!(got.shape("logits"), want.shape("logits"));
    let (g, w) = (
        got.f32_any("logits").unwrap(),
        want.f32_any("logits").unwrap(),
    );
    let num: f64 = g
        .iter()
        .zip(&w)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    let den: f64 = w.iter().map(|b| (*b as f64).powi(2)).sum();
    assert!((num / den).sqrt() < 1e-3);

    let greedy = want.ints("greedy").unwrap();
    let prompt: Vec<String> = greedy[..12].iter().map(|t| t.to_string()).collect();
    let toks = tmp("mamba").join("tokens.safetensors");
    let (code, stdout, err) = spikescan(
        &[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--prompt-ids",
            &prompt.join(","),
            "--max-new-tokens",
            "8",
            "--output",
            toks.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let streamed: Vec<i64> = stdout
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(streamed, greedy[12..].to_vec());
    assert_eq!(
        spikescan::loader::Checkpoint::open(&toks)
            .unwrap()
            .ints("tokens")
            .unwrap(),
        greedy
    );
}

#[test]
fn generate_with_a_tokenizer_prints_text() {
    let dir = fixture("mamba-hf-tied");
    let (code, stdout, err) = spikescan(
        &[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--prompt",
            "Hello",
            "--max-new-tokens",
            "5",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.starts_with("Hello") && stdout.trim_end().len() > 5,
        "{stdout}"
    );
}

#[test]
fn generate_errors_name_what_is_wrong() {
    let untied = fixture("mamba-ssm-untied");
    let m = untied.to_str().unwrap();
    let gen = |args: &[&str]| {
        let (code, _, err) = spikescan(args, &[]);
        assert_eq!(code, 2, "{err}");
        err
    };
    let e = gen(&["generate", "--model", m, "--prompt-ids", "1,2,999"]);
    assert!(
        e.contains("token id 999") && e.contains("out of range"),
        "{e}"
    );
    let e = gen(&["generate", "--model", m, "--prompt", "hi"]);
    assert!(
        e.contains("tokenizer.json") && e.contains("--prompt-ids"),
        "{e}"
    );
    let e = gen(&["generate", "--model", m]);
    assert!(e.contains("--prompt"), "{e}");
    let e = gen(&["generate", "--model", m, "--prompt-ids", "1,x"]);
    assert!(e.contains("'x'"), "{e}");
    let spik = fixture("spikformer-cifar-exact");
    let e = gen(&[
        "generate",
        "--model",
        spik.to_str().unwrap(),
        "--prompt-ids",
        "1",
    ]);
    assert!(e.contains("not a language model"), "{e}");
}

#[test]
fn info_describes_a_model_directory() {
    let dir = fixture("spikformer-cifar-exact");
    let (code, out, err) = spikescan(&["info", "--model", dir.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    for field in [
        "architecture spikformer",
        "parameters",
        "dtypes",
        "gpu weights",
        "unused keys",
        "norm1",
        "fits         yes",
        "binding limit",
    ] {
        assert!(out.contains(field), "missing {field}:\n{out}");
    }
    let (code, _, err) = spikescan(&["info", "--model", "/no/such/model"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("/no/such/model"), "{err}");
}

#[test]
fn lmuformer_runs_on_a_wav_and_streams_it() {
    let wav = fixture("audio/chirp.wav");
    let (model, wav) = (
        fixture("lmuformer-small"),
        wav.to_str().unwrap().to_string(),
    );
    let m = model.to_str().unwrap();
    let out = tmp("lmu").join("all-seq.safetensors");
    let (code, _, err) = spikescan(
        &[
            "run",
            "--model",
            m,
            "--input",
            &wav,
            "--all-seq",
            "--output",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let ck = spikescan::loader::Checkpoint::open(&out).unwrap();
    assert_eq!(ck.shape("logits").unwrap(), &[1, 128, 10]);
    // The clip's mean prediction is the running mean's last frame.
    let (code, stdout, err) = spikescan(&["run", "--model", m, "--input", &wav, "--top", "1"], &[]);
    assert_eq!(code, 0, "{err}");
    let all = ck.f32_any("logits").unwrap();
    let last = &all[127 * 10..];
    let best = (0..10)
        .max_by(|&a, &b| last[a].total_cmp(&last[b]))
        .unwrap();
    assert!(stdout.contains(&format!("  {best:>5} ")), "{stdout}");

    let (code, stdout, err) = spikescan(&["stream", "--model", m, "--input", &wav], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("frame ")).count(),
        128
    );
    let final_line = stdout.lines().last().unwrap();
    assert!(
        final_line.contains(&format!("(class {best})")) && final_line.contains("after 128 frames"),
        "{final_line}"
    );
    std::fs::remove_file(out).ok();
}

#[test]
fn lmuformer_input_errors_name_the_problem() {
    let m = fixture("lmuformer-small");
    let m = m.to_str().unwrap();
    let wav8k = tmp("lmu-errors").join("8k.wav");
    let s: Vec<f32> = (0..8000).map(|i| (i as f32 * 0.01).sin() * 0.3).collect();
    std::fs::write(&wav8k, spikescan::models::audio::wav_bytes(&s, 8000)).unwrap();
    let (code, _, err) = spikescan(
        &["run", "--model", m, "--input", wav8k.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("8k.wav") && err.contains("8000 Hz") && err.contains("16000"),
        "{err}"
    );
    let (code, _, err) = spikescan(&["stream", "--model", m, "--input", "/no/such.wav"], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/no/such.wav") && err.contains("does not exist"),
        "{err}"
    );
    let spk = fixture("spikformer-cifar-exact");
    let (code, _, err) = spikescan(
        &[
            "stream",
            "--model",
            spk.to_str().unwrap(),
            "--input",
            wav8k.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("runs LMUFormer models"), "{err}");
    std::fs::remove_file(wav8k).ok();
}

#[test]
fn json_and_quiet_serve_scripts() {
    let m = fixture("lmuformer-small");
    let wav = fixture("audio/chirp.wav");
    let (m, wav) = (m.to_str().unwrap(), wav.to_str().unwrap());
    let (code, out, err) = spikescan(&["--json", "stream", "--model", m, "--input", wav], &[]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 129, "128 frames and the final line");
    assert_eq!(lines[128]["frames"], 128);
    let (code, out, err) = spikescan(&["--json", "info"], &[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["max_storage_buffer_binding_size"].as_u64().unwrap() > 0);
    let o = tmp("quiet").join("logits.safetensors");
    let (code, out, err) = spikescan(
        &[
            "run",
            "--quiet",
            "--model",
            m,
            "--input",
            wav,
            "--output",
            o.to_str().unwrap(),
        ],
        &[("XDG_RUNTIME_DIR", "/tmp")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty() && !err.contains("wrote"), "{out}\n{err}");
    assert!(o.exists());
}

/// `spikescan bench` end to end (what it records, not how fast: speed is never asserted):
/// the measured ceilings, a filtered kernel, a model with its per-layer table, every record
/// naming the device; then `tools/compare.py --regress` on two runs flags a slowdown.
#[test]
fn bench_writes_device_tagged_records_and_compare_flags_regressions() {
    let dir = tmp("bench");
    let out = dir.join("run.jsonl");
    let (code, stdout, err) = spikescan(
        &[
            "bench",
            "--kernels",
            "--quick",
            "--filter",
            "decode state update",
            "--lmuformer",
            "lmuformer-gsc",
            "--clip-batch",
            "1",
            "--frames",
            "7",
            "--reps",
            "1",
            "--layers",
            "--out",
            out.to_str().unwrap(),
        ],
        &[("XDG_RUNTIME_DIR", "/tmp")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains("of ceil") && stdout.contains("device: "),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let recs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for r in &recs {
        for k in ["adapter", "backend", "driver", "name", "params", "unit"] {
            assert!(r[k].as_str().is_some_and(|s| !s.is_empty()), "{k} in {r}");
        }
        let v = r["value"].as_f64().unwrap();
        assert!(v.is_finite() && v >= 0.0, "{r}");
    }
    let find = |name: &str, params: &str| {
        recs.iter()
            .find(|r| r["name"] == name && r["params"].as_str().unwrap().contains(params))
            .unwrap_or_else(|| panic!("no record {name} [{params}]"))
    };
    assert!(
        find("copy (scale) — bandwidth ceiling", "n=")["value"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(
        find("dense GEMM f32 — compute ceiling", "512^3")["value"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // The filter keeps the decode update (both batch sizes) and nothing else of the kernels.
    find("decode state update of ceiling", "B=1 D=1536");
    find("decode state update", "B=8 D=1536");
    assert!(!recs.iter().any(|r| r["name"] == "selective scan"));
    // The model, and its per-layer table (suite "layer"): the LMU memory and the head.
    assert!(
        find("lmuformer-gsc whole clip", "B=1")["value"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    find("lmuformer-gsc · lmu_toeplitz of ceiling", "B=1 N=128");
    let layers: Vec<_> = recs.iter().filter(|r| r["suite"] == "layer").collect();
    assert!(layers.len() > 20, "{} layer records", layers.len());
    let total = find("lmuformer-gsc · all dispatches", "dispatches")["value"]
        .as_f64()
        .unwrap();
    assert!(total > 0.0);

    // compare.py --regress: the same run against itself is clean; a copy with one kernel
    // 1.5x slower is flagged (exit status 1).
    let compare = |old: &std::path::Path, new: &std::path::Path| {
        let o = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tools/compare.py"
            ))
            .args([old, new])
            .arg("--regress")
            .output()
            .expect("python3 runs");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (status, report) = compare(&out, &out);
    assert_eq!(status, Some(0), "{report}");
    let slower: Vec<String> = recs
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if r["name"] == "decode state update" && r["params"] == "B=8 D=1536 N=16 R=48" {
                r["value"] = (r["value"].as_f64().unwrap() * 1.5).into();
            }
            r.to_string()
        })
        .collect();
    let out2 = dir.join("slower.jsonl");
    std::fs::write(&out2, slower.join("\n")).unwrap();
    let (status, report) = compare(&out, &out2);
    assert_eq!(status, Some(1), "{report}");
    assert!(
        report.contains("1 of ") && report.contains("decode state update [B=8 D=1536 N=16 R=48]"),
        "{report}"
    );
}

/// NaN/Inf in the weights or in an input tensor: a warning naming the tensor (the run goes
/// on), or with --strict an error before any compute. An output path that cannot be written
/// is an error before the model is even loaded.
#[test]
fn nonfinite_weights_and_inputs_are_reported_and_bad_output_paths_refused_first() {
    let src = fixture("spikformer-cifar-exact");
    let d = tmp("nonfinite");
    // The fixture's model with one NaN and one Inf in a weight.
    let model = d.join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::copy(src.join("config.json"), model.join("config.json")).unwrap();
    let ck = spikescan::loader::Checkpoint::open(src.join("model.safetensors")).unwrap();
    let keys: Vec<String> = ck.keys().map(str::to_string).collect();
    let poisoned = keys
        .iter()
        .find(|k| k.ends_with("head.weight"))
        .expect("a head weight")
        .clone();
    // (Integer tensors such as num_batches_tracked are not read by the model: left out.)
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = keys
        .iter()
        .filter(|k| !k.ends_with("num_batches_tracked"))
        .map(|k| {
            let mut v = ck.f32_any(k).unwrap();
            if *k == poisoned {
                v[0] = f32::NAN;
                v[1] = f32::INFINITY;
            }
            (k.clone(), ck.shape(k).unwrap().to_vec(), v)
        })
        .collect();
    spikescan::loader::save_f32(model.join("model.safetensors"), &tensors).unwrap();
    let m = model.to_str().unwrap();
    let io = src.join("io.safetensors");
    let input = io.to_str().unwrap();
    let out = d.join("y.safetensors");
    let o = out.to_str().unwrap();

    let (code, _, err) = spikescan(&["run", "--model", m, "--input", input, "--output", o], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning") && err.contains(&poisoned) && err.contains("2 of"),
        "{err}"
    );
    assert!(out.exists());
    std::fs::remove_file(&out).unwrap();
    let (code, _, err) = spikescan(
        &[
            "--strict", "run", "--model", m, "--input", input, "--output", o,
        ],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&poisoned) && err.contains("--strict"), "{err}");
    assert!(!out.exists(), "nothing written under --strict");

    // A NaN in the input tensor, on the clean model.
    let x = d.join("x.safetensors");
    let inp = spikescan::loader::Checkpoint::open(&io).unwrap();
    let mut v = inp.f32_any("input").unwrap();
    v[3] = f32::NAN;
    spikescan::loader::save_f32(
        &x,
        &[("input".into(), inp.shape("input").unwrap().to_vec(), v)],
    )
    .unwrap();
    let clean = src.to_str().unwrap();
    let xs = x.to_str().unwrap();
    let (code, _, err) = spikescan(&["run", "--model", clean, "--input", xs], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("x.safetensors: 'input'") && err.contains("1 of"),
        "{err}"
    );
    let (code, _, err) = spikescan(&["--strict", "run", "--model", clean, "--input", xs], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("'input'") && err.contains("NaN"), "{err}");
    // A clean run has no warning.
    let (code, _, err) = spikescan(&["run", "--model", clean, "--input", input], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");

    // Output paths that cannot be written: refused before the model is loaded (the model
    // path here does not even exist, and the error is about the output).
    for (bad, why) in [
        ("/no/such/dir/y.safetensors", "does not exist"),
        (d.to_str().unwrap(), "is a directory"),
    ] {
        let (code, _, err) = spikescan(
            &[
                "run",
                "--model",
                "/no/such/model",
                "--input",
                input,
                "--output",
                bad,
            ],
            &[],
        );
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("cannot write") && err.contains(why) && !err.contains("/no/such/model"),
            "{err}"
        );
        let (code, _, err) = spikescan(
            &[
                "generate",
                "--model",
                "/no/such/model",
                "--prompt-ids",
                "1",
                "--output",
                bad,
            ],
            &[],
        );
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("cannot write") && err.contains(why), "{err}");
    }
}
