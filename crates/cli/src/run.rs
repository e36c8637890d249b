//! `spikescan run`: a model directory on an input file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use spikescan::loader::Checkpoint;
use spikescan::models::taps::Taps;
use spikescan::models::{vision, Model, ModelDir};
use spikescan::Device;

pub struct RunArgs {
    pub model: PathBuf,
    pub input: PathBuf,
    pub output: Option<PathBuf>,
    pub stats: bool,
    pub verbose: bool,
    pub top: usize,
}

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

/// Reads `input` from a safetensors file, or an image preprocessed for the model.
fn read_input(args: &RunArgs, model: &Model) -> anyhow::Result<(Vec<f32>, Vec<usize>)> {
    if is_image(&args.input) {
        let c = model.image_spec();
        let v = vision::load_image(&args.input, c.height, c.width, c.crop_pct)?;
        return Ok((v, vec![1, 3, c.height, c.width]));
    }
    if !args.input.exists() {
        bail!("input file {} does not exist", args.input.display());
    }
    let ck = Checkpoint::open(&args.input)?;
    let shape = ck.shape("input").map(|s| s.to_vec()).with_context(|| {
        format!(
            "{} has no tensor named 'input' (found: {}); give the images as f32 [B, C, H, W] under 'input', or a PNG/JPEG file",
            args.input.display(),
            ck.keys().collect::<Vec<_>>().join(", ")
        )
    })?;
    Ok((ck.f32_any("input")?, shape))
}

fn labels(dir: &Path) -> Option<Vec<String>> {
    std::fs::read_to_string(dir.join("labels.txt"))
        .ok()
        .map(|t| t.lines().map(str::to_string).collect())
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let dev = Device::new()?;
    let md = ModelDir::open(&args.model)?;
    let model = Model::from_dir(&dev, &md)?;
    if args.verbose {
        eprintln!("{}: {}", args.model.display(), model.architecture());
        eprintln!("adapter: {}", dev.describe());
        let unused = md.checkpoint.unused_keys();
        eprintln!(
            "checkpoint keys not used by the model ({}): {}",
            unused.len(),
            unused.join(", ")
        );
    }
    let (data, shape) = read_input(&args, &model)?;
    model.check_input(&shape)?;
    if data.len() != shape.iter().product::<usize>() {
        bail!(
            "{}: 'input' holds {} values, not {:?}",
            args.input.display(),
            data.len(),
            shape
        );
    }
    let x = dev.tensor_f32(&data, &shape)?;
    let mut taps = Taps::default();
    let mut rec = dev.recorder("run");
    let logits_t = model.forward(&mut rec, &x, args.stats.then_some(&mut taps))?;
    rec.submit()?;
    let logits = dev.read_f32(&logits_t)?;
    let (b, k) = (shape[0], model.image_spec().num_classes);
    if let Some(out) = &args.output {
        spikescan::loader::save_f32(out, &[("logits".into(), vec![b, k], logits.clone())])?;
        eprintln!("wrote logits [{b}, {k}] to {}", out.display());
    } else {
        let names = labels(&args.model);
        for (i, row) in logits.chunks(k).enumerate() {
            let mut order: Vec<usize> = (0..k).collect();
            order.sort_by(|&a, &c| row[c].total_cmp(&row[a]));
            println!("sample {i}:");
            for &j in order.iter().take(args.top.min(k)) {
                let name = names
                    .as_ref()
                    .and_then(|n| n.get(j))
                    .map(String::as_str)
                    .unwrap_or("");
                println!("  {j:>5} {:>10.4}  {name}", row[j]);
            }
        }
    }
    if args.stats {
        print_stats(&dev, &model, &taps, &shape)?;
    }
    if dev.options().profile {
        eprintln!("{}", spikescan::runtime::format_table(&dev.take_profile()));
    }
    Ok(())
}

fn print_stats(dev: &Device, model: &Model, taps: &Taps, shape: &[usize]) -> anyhow::Result<()> {
    let spikes = taps.read(dev)?;
    let (fed, first) = model.synaptic_costs(shape[2], shape[3]);
    let t = model.image_spec().t as f64;
    println!(
        "{:<30} {:>12} {:>16}",
        "LIF layer", "firing rate", "SOPs/sample (M)"
    );
    let mut sops = 0.0;
    for (name, s) in &spikes {
        let rate = s.iter().map(|&v| v as f64).sum::<f64>() / s.len().max(1) as f64;
        let macs = fed.iter().find(|(n, _)| n == name).map_or(0, |(_, m)| *m) as f64;
        let sop = rate * t * macs;
        sops += sop;
        println!("{name:<30} {rate:>12.4} {:>16.3}", sop / 1e6);
    }
    let first = first as f64;
    let energy_mj = (4.6 * first + 0.9 * sops) * 1e-9;
    println!(
        "first layer (dense): {:.3} M MACs x 4.6 pJ; spiking layers: {:.3} M SOPs x 0.9 pJ",
        first / 1e6,
        sops / 1e6
    );
    println!("energy estimate: {energy_mj:.4} mJ per sample");
    Ok(())
}
