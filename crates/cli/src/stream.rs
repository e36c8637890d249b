//! `spikescan stream`: an LMUFormer fed one frame at a time, printing the running top-1.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use spikescan::models::lmuformer::LOOKAHEAD;
use spikescan::models::Model;
use spikescan::Device;

pub struct StreamArgs {
    pub model: PathBuf,
    pub input: PathBuf,
    pub quiet: bool,
}

pub fn stream(args: StreamArgs) -> anyhow::Result<()> {
    let dev = Device::new()?;
    let pb = crate::ui::spinner(format!("loading {}", args.model.display()));
    let md = crate::ui::open_model(&args.model)?;
    let model = Model::from_dir(&dev, &md)?;
    crate::ui::done(pb);
    crate::ui::check_weights(&md)?;
    let args = StreamArgs {
        model: md.path.clone(),
        ..args
    };
    let Model::Lmuformer(m) = &model else {
        bail!(
            "{} is a {} model; `spikescan stream` runs LMUFormer models",
            args.model.display(),
            model.architecture()
        );
    };
    let (x, shape) = crate::run::read_features(&args.input, m)?;
    m.check_input(&shape)?;
    crate::ui::check_input(&x, &format!("{}: 'input'", args.input.display()))?;
    if shape[0] != 1 {
        bail!(
            "{}: stream one clip at a time ('input' is [1, frames, mel], got {shape:?})",
            args.input.display()
        );
    }
    let (n, c, k) = (shape[1], shape[2], m.config.num_classes);
    let names = crate::run::labels(&args.model);
    let label = |j: usize| {
        names
            .as_ref()
            .and_then(|v| v.get(j))
            .cloned()
            .unwrap_or_else(|| format!("class {j}"))
    };
    let top1 = |row: &[f32]| {
        (0..k)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap_or(0)
    };
    let mut session = m.stream(&dev, 1)?;
    let json = crate::ui::json();
    let quiet = args.quiet || json;
    if !quiet {
        println!(
            "streaming {n} frames ({} ms each); predictions lag {LOOKAHEAD} frames (the embedding's look-ahead)",
            10
        );
    }
    let mut frame = 0;
    let mut last = Vec::new();
    let mut latencies = Vec::new();
    let show = |row: &[f32], frame: usize| {
        let j = top1(row);
        if json {
            crate::ui::emit(
                serde_json::json!({"frame": frame, "top1": j, "label": label(j), "logit": row[j]}),
            );
        } else if !quiet {
            println!(
                "frame {frame:>4}  top-1 {j:>3}  {:<16} logit {:.3}",
                label(j),
                row[j]
            );
        }
    };
    for t in 0..n {
        let t0 = Instant::now();
        let out = session.push(&x[t * c..(t + 1) * c])?;
        latencies.push(t0.elapsed().as_secs_f64() * 1e3);
        if let Some(row) = out {
            show(&row, frame);
            frame += 1;
            last = row;
        }
    }
    for row in session.finish()? {
        show(&row, frame);
        frame += 1;
        last = row;
    }
    if last.is_empty() {
        bail!("the clip produced no frames");
    }
    let j = top1(&last);
    latencies.sort_by(f64::total_cmp);
    if json {
        crate::ui::emit(serde_json::json!({
            "final": j, "label": label(j), "frames": frame,
            "median_frame_latency_ms": latencies[latencies.len() / 2],
            "device": dev.describe(),
        }));
        return Ok(());
    }
    println!(
        "final: {} (class {j}) after {frame} frames; per-frame latency median {:.2} ms on {}",
        label(j),
        latencies[latencies.len() / 2],
        dev.describe()
    );
    Ok(())
}
