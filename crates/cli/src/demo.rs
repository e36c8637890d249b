//! `spikescan demo`: every bundled model in `models/` on its bundled examples and held-out
//! set, a streamed LMUFormer clip and a streamed Mamba generation, then a speed summary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use spikescan::models::eval::{accuracy, token_loss, Heldout};
use spikescan::models::{vision, Model, Sampling};
use spikescan::Device;

/// The model card's reported result: the `**a/b` (accuracy) or `**x nats` (loss) it states.
pub fn card_result(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("README.md")).ok()?;
    let start = text.find("**")? + 2;
    let end = start + text[start..].find("**")?;
    Some(text[start..end].to_string())
}

fn examples(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("examples"))
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

pub fn demo(models: &Path) -> anyhow::Result<()> {
    let dev = Device::new()?;
    println!("spikescan demo on {}", dev.describe());
    if dev.adapter().device_type.contains("Cpu") {
        println!("(a CPU-emulated Vulkan device: correct results, not GPU speed)");
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(models)
        .with_context(|| format!("{} (the bundled models directory)", models.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").exists())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        anyhow::bail!("no model directories in {}", models.display());
    }
    let mut speed = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let pb = crate::ui::spinner(format!("loading {name}"));
        let md = crate::ui::open_model(dir.as_ref())?;
        let model = Model::from_dir(&dev, &md)?;
        crate::ui::done(pb);
        crate::ui::check_weights(&md)?;
        println!("\n== {name} ({}) ==", model.architecture());
        let labels = crate::run::labels(dir);
        let label = |j: usize| {
            labels
                .as_ref()
                .and_then(|l| l.get(j).cloned())
                .unwrap_or_else(|| j.to_string())
        };
        match &model {
            Model::Mamba(m) => {
                let set = Heldout::open(dir)?;
                let t0 = Instant::now();
                let loss = token_loss(&dev, m, &set, 16)?;
                let tokens = set.input.len();
                println!(
                    "held-out loss: {loss:.4} nats/token over {tokens} tokens (model card: {})",
                    card_result(dir).unwrap_or_else(|| "none".into())
                );
                speed.push(format!(
                    "{name} {:.0} prompt tokens/s",
                    tokens as f64 / t0.elapsed().as_secs_f64()
                ));
                let tok = spikescan::models::text::load_tokenizer(&dir.join("tokenizer.json"))?;
                let prompt_text = "The with statement";
                let prompt = tok
                    .encode(prompt_text, false)
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .get_ids()
                    .to_vec();
                print!("generate (greedy, streamed): {prompt_text}");
                let _ = std::io::stdout().flush();
                let mut generated = Vec::new();
                let mut printed = String::new();
                let t0 = Instant::now();
                m.generate(&dev, &prompt, 40, &Sampling::default(), |t| {
                    generated.push(t);
                    if let Ok(text) = tok.decode(&generated, false) {
                        if text.len() > printed.len() && text.starts_with(printed.as_str()) {
                            print!("{}", &text[printed.len()..].replace('\n', " "));
                            printed = text;
                            let _ = std::io::stdout().flush();
                        }
                    }
                })?;
                println!();
                speed.push(format!(
                    "{name} {:.1} decode tokens/s",
                    40.0 / t0.elapsed().as_secs_f64()
                ));
            }
            _ => {
                for ex in examples(dir) {
                    let spec = model.image_spec().context("examples are images")?;
                    let x = vision::load_image(&ex, spec.height, spec.width, spec.crop_pct)?;
                    let preds = spikescan::models::eval::predict(
                        &dev,
                        &model,
                        &x,
                        &[1, 3, spec.height, spec.width],
                        1,
                    )?;
                    println!(
                        "  {:<24} → {}",
                        ex.file_name().unwrap_or_default().to_string_lossy(),
                        label(preds[0])
                    );
                }
                let set = Heldout::open(dir)?;
                let t0 = Instant::now();
                let (correct, total) = accuracy(&dev, &model, &set, 120)?;
                let secs = t0.elapsed().as_secs_f64();
                println!(
                    "held-out accuracy: {correct}/{total} = {:.2}% (model card: {})",
                    100.0 * correct as f64 / total as f64,
                    card_result(dir).unwrap_or_else(|| "none".into())
                );
                let unit = if model.image_spec().is_some() {
                    "images/s"
                } else {
                    "clips/s"
                };
                speed.push(format!("{name} {:.0} {unit}", total as f64 / secs));
                if let Model::Lmuformer(m) = &model {
                    // One held-out clip, streamed frame by frame.
                    let (n, c) = (set.shape[1], set.shape[2]);
                    let mut s = m.stream(&dev, 1)?;
                    let mut tops = Vec::new();
                    let top = |row: &[f32]| {
                        (0..row.len())
                            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                            .unwrap_or(0)
                    };
                    for t in 0..n {
                        if let Some(row) = s.push(&set.input[t * c..(t + 1) * c])? {
                            tops.push(label(top(&row)));
                        }
                    }
                    for row in s.finish()? {
                        tops.push(label(top(&row)));
                    }
                    println!(
                        "streamed clip 0 (label {}), running top-1 per frame: {}",
                        set.labels[0],
                        tops.join(" ")
                    );
                }
            }
        }
    }
    println!("\nspeed: {} ({})", speed.join(" · "), dev.adapter().name);
    Ok(())
}
