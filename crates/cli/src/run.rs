//! `spikescan run`: a model directory on an input file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use spikescan::models::input::{missing, open_input};
use spikescan::models::taps::Taps;
use spikescan::models::Model;
use spikescan::Device;

pub struct RunArgs {
    pub model: PathBuf,
    pub input: PathBuf,
    pub output: Option<PathBuf>,
    pub stats: bool,
    pub verbose: bool,
    pub top: usize,
    pub all_seq: bool,
}

/// Images: a safetensors `input` or a PNG/JPEG preprocessed for the model.
fn read_images(args: &RunArgs, model: &Model) -> anyhow::Result<(Vec<f32>, Vec<usize>)> {
    Ok(spikescan::models::input::read_images(&args.input, model)?)
}

/// Features for an LMUFormer: a 16 kHz WAV (fbank, `[1, seq_len, mel]`) or a safetensors
/// `input` `[B, frames, mel]`.
pub fn read_features(
    path: &Path,
    m: &spikescan::models::Lmuformer,
) -> anyhow::Result<(Vec<f32>, Vec<usize>)> {
    Ok(spikescan::models::input::read_features(path, m)?)
}

/// Prints the top classes of each row of `logits` (`k` wide).
fn print_top(logits: &[f32], k: usize, top: usize, names: Option<&[String]>, what: &str) {
    for (i, row) in logits.chunks(k).enumerate() {
        let order = spikescan::models::top_classes(row, top);
        let name = |j: usize| {
            names
                .and_then(|n| n.get(j))
                .map(String::as_str)
                .unwrap_or("")
        };
        if crate::ui::json() {
            let best: Vec<_> = order
                .iter()
                .map(|&j| serde_json::json!({"class": j, "label": name(j), "logit": row[j]}))
                .collect();
            crate::ui::emit(serde_json::json!({ what: i, "top": best }));
            continue;
        }
        println!("{what} {i}:");
        for &j in &order {
            println!("  {j:>5} {:>10.4}  {}", row[j], name(j));
        }
    }
}

/// LMUFormer: features → logits `[B, classes]` (or `[B, frames, classes]` with --all-seq).
fn run_sequence_model(
    args: &RunArgs,
    dev: &Device,
    model: &Model,
    m: &spikescan::models::Lmuformer,
) -> anyhow::Result<()> {
    let (data, shape) = read_features(&args.input, m)?;
    check_len(args, model, &data, &shape)?;
    crate::ui::check_input(&data, &format!("{}: 'input'", args.input.display()))?;
    let (b, n, k) = (shape[0], shape[1], m.config.num_classes);
    let x = dev.tensor_f32(&data, &shape)?;
    let mut taps = Taps::default();
    let mut rec = dev.recorder("run");
    let out = m.forward(&mut rec, &x, false, args.stats.then_some(&mut taps))?;
    rec.submit()?;
    let logits = dev.read_f32(&out)?;
    if let Some(path) = &args.output {
        let tensor = if args.all_seq {
            (
                "logits".to_string(),
                vec![b, n, k],
                m.run(dev, &data, &shape, true)?,
            )
        } else {
            ("logits".to_string(), vec![b, k], logits.clone())
        };
        spikescan::loader::save_f32(path, std::slice::from_ref(&tensor))?;
        crate::ui::note(format!("wrote logits {:?} to {}", tensor.1, path.display()));
    } else {
        let names = labels(&args.model);
        print_top(&logits, k, args.top, names.as_deref(), "clip");
    }
    if args.stats {
        print_stats(dev, model, &taps, &shape, n)?;
    }
    Ok(())
}

/// The input's shape suits the model and its data fills it.
fn check_len(args: &RunArgs, model: &Model, data: &[f32], shape: &[usize]) -> anyhow::Result<()> {
    model.check_input(shape)?;
    if data.len() != shape.iter().product::<usize>() {
        bail!(
            "{}: 'input' holds {} values, not {:?}",
            args.input.display(),
            data.len(),
            shape
        );
    }
    Ok(())
}

pub fn labels(dir: &Path) -> Option<Vec<String>> {
    spikescan::models::labels(dir)
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    crate::ui::check_output(args.output.as_deref())?;
    let dev = Device::new()?;
    let pb = crate::ui::spinner(format!("loading {}", args.model.display()));
    let md = crate::ui::open_model(&args.model)?;
    let model = Model::from_dir(&dev, &md)?;
    crate::ui::done(pb);
    crate::ui::check_weights(&md)?;
    // A Hub id resolves to its snapshot directory, where labels.txt is.
    let args = RunArgs {
        model: md.path.clone(),
        ..args
    };
    if args.verbose {
        eprintln!(
            "{}: {} on {}",
            args.model.display(),
            model.architecture(),
            dev.describe()
        );
        let unused = md.checkpoint.unused_keys();
        eprintln!(
            "checkpoint keys not used by the model ({}): {}",
            unused.len(),
            unused.join(", ")
        );
    }
    if let Model::Mamba(m) = &model {
        return run_language_model(&args, &dev, m);
    }
    if let Model::Lmuformer(m) = &model {
        return run_sequence_model(&args, &dev, &model, m);
    }
    if args.all_seq {
        bail!("--all-seq applies to LMUFormer models only");
    }
    let spec = model.image_spec().context("not an image model")?;
    let (data, shape) = read_images(&args, &model)?;
    check_len(&args, &model, &data, &shape)?;
    crate::ui::check_input(&data, &format!("{}: 'input'", args.input.display()))?;
    let x = dev.tensor_f32(&data, &shape)?;
    let mut taps = Taps::default();
    let mut rec = dev.recorder("run");
    let logits_t = model.forward(&mut rec, &x, args.stats.then_some(&mut taps))?;
    rec.submit()?;
    let logits = dev.read_f32(&logits_t)?;
    let (b, k) = (shape[0], spec.num_classes);
    if let Some(out) = &args.output {
        spikescan::loader::save_f32(out, &[("logits".into(), vec![b, k], logits.clone())])?;
        crate::ui::note(format!("wrote logits [{b}, {k}] to {}", out.display()));
    } else {
        let names = labels(&args.model);
        print_top(&logits, k, args.top, names.as_deref(), "sample");
    }
    if args.stats {
        print_stats(&dev, &model, &taps, &shape, spec.t)?;
    }
    if dev.profiling() {
        eprintln!("{}", spikescan::runtime::format_table(&dev.take_profile()));
    }
    Ok(())
}

/// Token ids `input_ids` (i64 or i32, `[B, L]`) → `logits` `[B, L, vocab]`.
fn run_language_model(
    args: &RunArgs,
    dev: &Device,
    m: &spikescan::models::Mamba,
) -> anyhow::Result<()> {
    let ck = open_input(&args.input)?;
    let shape = ck.shape("input_ids").map(|s| s.to_vec()).ok_or_else(|| {
        missing(
            &args.input,
            &ck,
            "input_ids",
            "give token ids as i64 or i32 [B, L] under 'input_ids'",
        )
    })?;
    if shape.len() != 2 || shape[0] == 0 || shape[1] == 0 {
        bail!(
            "{}: 'input_ids' must be [B, L], got {shape:?}",
            args.input.display()
        );
    }
    let ids = ck.ints("input_ids")?;
    if let Some(bad) = ids.iter().find(|&&t| t < 0 || t > u32::MAX as i64) {
        bail!("{}: token id {bad} is out of range", args.input.display());
    }
    let ids: Vec<u32> = ids.into_iter().map(|t| t as u32).collect();
    let logits = m.logits(dev, &ids, shape[0])?;
    let v = m.config.vocab_padded;
    match &args.output {
        Some(out) => {
            spikescan::loader::save_f32(
                out,
                &[("logits".into(), vec![shape[0], shape[1], v], logits)],
            )?;
            crate::ui::note(format!(
                "wrote logits [{}, {}, {v}] to {}",
                shape[0],
                shape[1],
                out.display()
            ));
        }
        None => {
            for (b, row) in logits.chunks(shape[1] * v).enumerate() {
                let last = &row[(shape[1] - 1) * v..];
                let best = (0..m.config.vocab_size)
                    .max_by(|&a, &c| last[a].total_cmp(&last[c]))
                    .unwrap_or(0);
                if crate::ui::json() {
                    crate::ui::emit(
                        serde_json::json!({"sequence": b, "next_token": best, "logit": last[best]}),
                    );
                } else {
                    println!("sequence {b}: next token {best} (logit {:.4})", last[best]);
                }
            }
        }
    }
    Ok(())
}

fn print_stats(
    dev: &Device,
    model: &Model,
    taps: &Taps,
    shape: &[usize],
    t: usize,
) -> anyhow::Result<()> {
    // Image models: costs per time step (t of them); LMUFormer: per frame (t = frames).
    let st = spikescan::models::stats::stats(dev, model, taps, shape, t)?;
    let json = crate::ui::json();
    if !json {
        println!(
            "{:<30} {:>12} {:>16}",
            "LIF layer", "firing rate", "SOPs/sample (M)"
        );
    }
    for l in &st.layers {
        if json {
            crate::ui::emit(
                serde_json::json!({"layer": l.layer, "firing_rate": l.firing_rate, "sops": l.sops}),
            );
        } else {
            println!(
                "{:<30} {:>12.4} {:>16.3}",
                l.layer,
                l.firing_rate,
                l.sops / 1e6
            );
        }
    }
    if json {
        crate::ui::emit(serde_json::json!({
            "first_layer_macs": st.first_layer_macs, "sops": st.sops, "energy_mj": st.energy_mj
        }));
        return Ok(());
    }
    println!(
        "first layer (dense): {:.3} M MACs x 4.6 pJ; spiking layers: {:.3} M SOPs x 0.9 pJ",
        st.first_layer_macs / 1e6,
        st.sops / 1e6
    );
    println!("energy estimate: {:.4} mJ per sample", st.energy_mj);
    Ok(())
}
