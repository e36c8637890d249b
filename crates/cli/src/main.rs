//! The `spikescan` command-line tool.

mod demo;
mod generate;
mod run;
mod stream;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spikescan::runtime::harness::{run_cases, Feature};
use spikescan::{Device, DeviceOptions};

const EXIT_CODES: &str =
    "Exit codes: 0 success; 1 a check failed (`ops`: a kernel disagrees with its \
reference); 2 an error (bad arguments, a missing or malformed model, input or checkpoint, no GPU \
adapter, a GPU error) — the message on stderr names the file, key or argument at fault.";

#[derive(Parser)]
#[command(
    name = "spikescan",
    version,
    about = "Spiking transformers and state-space models on any GPU",
    after_help = EXIT_CODES
)]
struct Cli {
    /// No notes or progress on stderr (errors still print).
    #[arg(long, global = true)]
    quiet: bool,
    /// Machine-readable stdout: one JSON object per line.
    #[arg(long, global = true)]
    json: bool,
    /// NaN or Inf in the weights or an input tensor is an error (default: a warning that
    /// names the tensor).
    #[arg(long, global = true)]
    strict: bool,
    /// How models keep their matrix weights (GEMM and convolution operands) on the GPU: auto
    /// (f16 for an f16 or bf16 checkpoint where the adapter has shader-f16, else f32, whose
    /// outputs match PyTorch's), f32, or f16 (products accumulate in f32 either way).
    #[arg(long, global = true, default_value = "auto")]
    dtype: spikescan::models::WeightDtype,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Run the kernel microbenchmarks.
    #[arg(long)]
    kernels: bool,
    /// Smaller kernel shapes (for a CPU-emulated device).
    #[arg(long)]
    quick: bool,
    /// This GPU's spec-sheet FP32 peak in TFLOP/s (with --peak-gbs): every record's fraction
    /// of it is reported beside the fraction of the measured ceilings (default: the bench's
    /// table of known GPUs, by adapter name).
    #[arg(long, requires = "peak_gbs")]
    peak_tflops: Option<f64>,
    /// This GPU's spec-sheet memory bandwidth in GB/s (with --peak-tflops).
    #[arg(long, requires = "peak_tflops")]
    peak_gbs: Option<f64>,
    /// Only the kernels whose name or shape contains this (case-insensitive); the ceilings
    /// always run.
    #[arg(long)]
    filter: Option<String>,
    /// Per-layer records for every model benchmarked: one profiled pass (each distinct op
    /// and shape of the real model, its time, GB/s, GFLOP/s and fraction of the measured
    /// ceilings; the ceilings are measured first unless --kernels runs).
    #[arg(long)]
    layers: bool,
    /// Mamba presets to measure (mamba-130m when nothing else is asked for).
    #[arg(long)]
    mamba: Vec<String>,
    /// Mamba batch sizes.
    #[arg(long, default_values_t = [1usize])]
    batch: Vec<usize>,
    #[arg(long, default_value_t = 128)]
    prompt_len: usize,
    #[arg(long, default_value_t = 16)]
    decode_steps: usize,
    /// LMUFormer presets (lmuformer-gsc, spiking-lmuformer-gsc).
    #[arg(long)]
    lmuformer: Vec<String>,
    /// LMUFormer whole-clip batch sizes.
    #[arg(long, default_values_t = [1usize, 32])]
    clip_batch: Vec<usize>,
    /// Frames to stream for the per-frame latency.
    #[arg(long, default_value_t = 64)]
    frames: usize,
    /// Image classifier presets (spikformer-8-384, meta-spikeformer-8-512, ...).
    #[arg(long)]
    vision: Vec<String>,
    /// Time steps for --vision (repeat for several).
    #[arg(long, default_values_t = [4usize])]
    t: Vec<usize>,
    /// Image batch sizes for --vision.
    #[arg(long, default_values_t = [1usize])]
    image_batch: Vec<usize>,
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Also write the records as JSON lines to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run every bundled model (models/): predictions on its examples, accuracy (or loss) on
    /// its held-out set next to its model card's, a streamed LMUFormer clip and a streamed
    /// Mamba generation, then a one-line speed summary.
    ///
    /// Example: `spikescan demo`, `spikescan demo --models path/to/models`
    Demo {
        /// Directory of model directories.
        #[arg(long, default_value = "models")]
        models: PathBuf,
    },
    /// Print the adapter, backend, driver, enabled features and limits.
    ///
    /// Example: `spikescan info`, `spikescan info --all`, `SPIKESCAN_ADAPTER=1 spikescan info`
    Info {
        /// List every adapter wgpu can see, with the index SPIKESCAN_ADAPTER accepts.
        #[arg(long)]
        all: bool,
        /// Describe a model directory instead: architecture, parameters, dtypes, the keys
        /// the model does not use, and the GPU memory its weights take.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Run a model directory on an input: a safetensors file with tensor `input` (f32
    /// [B, C, H, W], already normalised) or a PNG/JPEG image (resized, center-cropped and
    /// normalised as the official evaluation); for an LMUFormer, `input` [B, frames, mel] or
    /// a 16 kHz WAV (Kaldi fbank, 128 frames); for Mamba, token ids `input_ids` [B, L]. Writes `logits` to --output, or prints the
    /// top classes (with names from labels.txt in the model directory).
    ///
    /// Examples: `spikescan run --model models/spikformer --input cat.png`,
    /// `spikescan run --model DIR --input x.safetensors --output y.safetensors --stats`
    Run {
        /// Model directory (model.safetensors or a sharded index, + config.json or a preset
        /// name as directory name), or a Hub id `owner/name[@revision]`.
        #[arg(long)]
        model: PathBuf,
        /// Input file (.safetensors, .png, .jpg, .wav).
        #[arg(long)]
        input: PathBuf,
        /// Where to write the logits (safetensors, tensor `logits`).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Print each LIF layer's firing rate, synaptic operations and the energy estimate.
        #[arg(long)]
        stats: bool,
        /// Print the configuration and checkpoint keys the model does not use.
        #[arg(long)]
        verbose: bool,
        /// How many classes to print without --output.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// LMUFormer: write the running prediction of every frame, logits [B, frames,
        /// classes] (the official test_mode 'all_seq').
        #[arg(long)]
        all_seq: bool,
    },
    /// Stream a clip through an LMUFormer frame by frame (10 ms each), printing the running
    /// top-1 as each frame's prediction becomes available (5 frames behind the input: the
    /// look-ahead of the embedding's k=3 convolutions), then the final class and the
    /// per-frame latency.
    ///
    /// Example: `spikescan stream --model models/lmuformer-digits --input clip.wav`
    Stream {
        /// LMUFormer model directory, or a Hub id `owner/name[@revision]`.
        #[arg(long)]
        model: PathBuf,
        /// A 16 kHz mono WAV, or a safetensors file with `input` [1, frames, mel].
        #[arg(long)]
        input: PathBuf,
        /// Print only the final line.
        #[arg(long)]
        quiet: bool,
    },
    /// Generate text with a Mamba model, streamed as it is produced: the prompt runs through
    /// the parallel scan, then one token per step from the GPU-resident state. Temperature 0
    /// (the default) is greedy.
    ///
    /// Examples: `spikescan generate --model DIR --prompt "The module" --max-new-tokens 40`,
    /// `spikescan generate --model DIR --prompt-ids 1,2,3 --temperature 0.8 --top-p 0.9 --seed 1`
    Generate {
        /// Model directory (mamba_ssm or Hugging Face format), with tokenizer.json for --prompt,
        /// or a Hub id `owner/name[@revision]` (fetched into the Hub cache; HF_ENDPOINT,
        /// HF_TOKEN, HF_HOME / HF_HUB_CACHE and HF_HUB_OFFLINE=1 are honoured).
        #[arg(long)]
        model: PathBuf,
        /// Prompt text (needs tokenizer.json in the model directory).
        #[arg(long)]
        prompt: Option<String>,
        /// Prompt as comma-separated token ids.
        #[arg(long)]
        prompt_ids: Option<String>,
        #[arg(long, default_value_t = 32)]
        max_new_tokens: usize,
        /// 0 is greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Candidates kept when sampling (0: 256).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Write the tokens (prompt included) as i64 [1, N] tensor `tokens`.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Measure kernels (--kernels: µs, GB/s, GFLOP/s and the fraction of this device's
    /// measured bandwidth and GEMM ceilings, at shapes from the real models) and model
    /// throughput with random weights of official shapes: Mamba prompt and decode tokens/s
    /// (--mamba), LMUFormer clips/s and streaming latency (--lmuformer), image classifiers'
    /// images/s (--vision). Cold start (pipeline creation) is reported separately; --layers
    /// adds each model's per-layer kernel table from one profiled pass. Prints a table (or,
    /// with --json, one JSON record per line on stdout); --out also writes the records to a
    /// file. Every record names the adapter, backend and driver.
    ///
    /// Examples: `spikescan bench --kernels --quick`,
    /// `spikescan bench --kernels --filter "selective scan"`,
    /// `spikescan bench --mamba mamba-130m --batch 1 --batch 8 --layers --out out.jsonl`,
    /// `spikescan bench --vision spikformer-8-384 --t 1 --t 4 --image-batch 1 --image-batch 32`
    Bench(BenchArgs),
    /// Run every kernel against its CPU reference on small shapes and print the op × dtype ×
    /// feature support matrix of this adapter (the plain twins run on a second device
    /// opened with f16 and subgroups off).
    ///
    /// Example: `spikescan ops`, `spikescan ops --filter matmul`
    Ops {
        /// Only ops whose name contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Print every case, not only the matrix.
        #[arg(long)]
        verbose: bool,
    },
}

fn model_info(dir: &std::path::Path) -> anyhow::Result<()> {
    let md = spikescan::models::ModelDir::open(dir)?;
    let arch = md.architecture()?.to_string();
    let ck = &md.checkpoint;
    let mut dtypes: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for k in ck.keys() {
        *dtypes.entry(ck.dtype(k).unwrap_or_default()).or_default() += 1;
    }
    let dev = Device::new()?;
    let before = std::time::Instant::now();
    let model = spikescan::models::Model::from_dir(&dev, &md)?;
    ui::check_weights(&md)?;
    let unused = md.checkpoint.unused_keys();
    let used_params: usize = ck
        .keys()
        .filter(|k| !unused.iter().any(|u| u == k))
        .map(|k| ck.shape(k).map_or(0, |s| s.iter().product::<usize>()))
        .sum();
    let _ = &model;
    // It loaded, so every weight fits this adapter's limits (vocabulary matrices over one
    // binding are split into row blocks); activations over one binding run in micro-batches.
    let largest = ck
        .keys()
        .filter(|k| !unused.iter().any(|u| u == k))
        .map(|k| ck.shape(k).map_or(0, |s| s.iter().product::<usize>()) as u64 * 4)
        .max()
        .unwrap_or(0);
    let binding = dev.limits().max_storage_buffer_binding_size;
    if ui::json() {
        ui::emit(serde_json::json!({
            "model": dir.display().to_string(), "architecture": arch,
            "parameters": ck.parameter_count(), "parameters_used": used_params,
            "dtypes": dtypes, "gpu_weight_bytes": used_params * 4,
            "load_seconds": before.elapsed().as_secs_f64(), "unused_keys": unused,
            "fits_adapter": true, "largest_weight_bytes": largest, "binding_limit_bytes": binding,
        }));
        return Ok(());
    }
    println!("model        {}", dir.display());
    println!("architecture {arch}");
    println!(
        "parameters   {} in the checkpoint, {} used by the model",
        ck.parameter_count(),
        used_params
    );
    let d: Vec<String> = dtypes.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    println!("dtypes       {}", d.join(", "));
    println!(
        "gpu weights  ~{:.1} MiB (f32 on the GPU; activations come on top)",
        used_params as f64 * 4.0 / 1048576.0
    );
    println!(
        "load time    {:.2} s on {}",
        before.elapsed().as_secs_f64(),
        dev.describe()
    );
    println!(
        "fits         yes, within this adapter's limits: largest weight {:.1} MiB, binding \
         limit {:.0} MiB{}; batches and prompts over one binding run in micro-batches",
        largest as f64 / 1048576.0,
        binding as f64 / 1048576.0,
        if largest > binding {
            " (split into row blocks)"
        } else {
            ""
        }
    );
    println!(
        "unused keys  {}{}",
        unused.len(),
        if unused.is_empty() {
            String::new()
        } else {
            format!(": {}", unused.join(", "))
        }
    );
    Ok(())
}

fn info(all: bool) -> anyhow::Result<()> {
    let opts = DeviceOptions::from_env();
    if all {
        for a in spikescan::list_adapters(opts.backend.as_deref())? {
            println!(
                "{}: {} [{}] {} — {} {}",
                a.index, a.name, a.backend, a.device_type, a.driver, a.driver_info
            );
        }
        println!();
    }
    let dev = Device::with_options(opts)?;
    let a = dev.adapter();
    if ui::json() {
        let l = dev.limits();
        let c = dev.caps();
        let features: Vec<String> = dev
            .adapter_features()
            .iter_names()
            .map(|(n, _)| n.to_string())
            .collect();
        ui::emit(serde_json::json!({
            "adapter": a.name, "index": a.index, "type": a.device_type, "backend": a.backend,
            "driver": format!("{} {}", a.driver, a.driver_info),
            "f16": c.f16, "subgroups": c.subgroups, "timestamps": c.timestamps,
            "features": features,
            "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
            "max_buffer_size": l.max_buffer_size,
            "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
            "kernel_workgroup_size": dev.wg(),
            "presets": preset_fits(&dev).iter().map(|p| serde_json::json!({
                "name": p.name, "architecture": p.architecture, "parameters": p.parameters,
                "weight_bytes": p.weight_bytes, "largest_weight": p.largest_key,
                "largest_weight_bytes": p.largest_bytes, "row_blocked": p.row_blocked,
                "fits": p.fits,
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    println!("adapter   {} (index {})", a.name, a.index);
    println!("type      {}", a.device_type);
    println!("backend   {}", a.backend);
    println!("driver    {} {}", a.driver, a.driver_info);
    let c = dev.caps();
    println!(
        "kernels   f16 weights: {}, subgroup reductions: {}, timestamp profiling: {}",
        yes(c.f16),
        yes(c.subgroups),
        yes(c.timestamps)
    );
    let mut names: Vec<String> = dev
        .adapter_features()
        .iter_names()
        .map(|(n, _)| n.to_string())
        .collect();
    names.sort();
    println!("features  {}", names.join(" "));
    let l = dev.limits();
    println!(
        "limits    max_storage_buffer_binding_size {} MiB",
        l.max_storage_buffer_binding_size >> 20
    );
    println!("          max_buffer_size {} MiB", l.max_buffer_size >> 20);
    println!(
        "          max_compute_workgroup_storage_size {} KiB",
        l.max_compute_workgroup_storage_size >> 10
    );
    println!(
        "          max_compute_invocations_per_workgroup {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "          max_compute_workgroups_per_dimension {}",
        l.max_compute_workgroups_per_dimension
    );
    println!(
        "          min_uniform_buffer_offset_alignment {}",
        l.min_uniform_buffer_offset_alignment
    );
    println!(
        "          kernels run {}-invocation workgroups{}",
        dev.wg(),
        if dev.wg() < 256 {
            " (the WG128 variants)"
        } else {
            ""
        }
    );
    println!(
        "presets   which official models fit these limits (weights in f32; batches, prompts \
         and logits over one binding run in micro-batches and chunks):"
    );
    for p in preset_fits(&dev) {
        let blocks = if p.row_blocked.is_empty() {
            String::new()
        } else {
            format!(", {} in row blocks", p.row_blocked.join(" and "))
        };
        let verdict = if p.fits {
            "fits".to_string()
        } else {
            format!(
                "does NOT fit: {} is {:.1} MiB, over the {:.0} MiB binding",
                p.largest_key,
                p.largest_bytes as f64 / 1048576.0,
                dev.max_binding_bytes() as f64 / 1048576.0
            )
        };
        println!(
            "          {:<26} {:>7.1} M params, {:>7.1} MiB, largest weight {:>6.1} MiB{blocks}: {verdict}",
            p.name,
            p.parameters as f64 / 1e6,
            p.weight_bytes as f64 / 1048576.0,
            p.largest_bytes as f64 / 1048576.0,
        );
    }
    Ok(())
}

fn preset_fits(dev: &Device) -> Vec<spikescan::models::PresetFit> {
    spikescan::models::preset_fits(dev.max_binding_bytes())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn ops(filter: Option<String>, verbose: bool) -> anyhow::Result<bool> {
    let opts = DeviceOptions::from_env();
    let native = Device::with_options(opts.clone())?;
    let plain = Device::with_options(DeviceOptions {
        force_f32: true,
        no_subgroups: true,
        ..opts
    })?;
    println!("{}", native.describe());
    let cases: Vec<_> = spikescan::ops::all_cases()
        .into_iter()
        .filter(|c| filter.as_deref().is_none_or(|f| c.op.contains(f)))
        .collect();
    // (op, dtype) -> per column (plain, f16, subgroups): (cases, failures, worst nmse)
    type Cell = (usize, usize, f64);
    type Row<'a> = ((&'a str, &'a str), [Option<Cell>; 3]);
    let mut rows: Vec<Row> = Vec::new();
    let mut all_ok = true;
    for (label, dev) in [("native", &native), ("plain", &plain)] {
        for (case, o) in cases.iter().zip(run_cases(dev, label, &cases, 0x5EED)) {
            // Column 0 is the plain kernel: plain-only kernels run once on the native device;
            // kernels with a feature variant run their twin on the plain device.
            let col = match (label, case.feature) {
                ("native", Feature::None) => 0,
                ("native", f) if f.active_on(dev) => {
                    if f == Feature::F16 {
                        1
                    } else {
                        2
                    }
                }
                ("plain", f) if f != Feature::None => 0,
                _ => continue,
            };
            let key = (case.op, case.dtype);
            let idx = match rows.iter().position(|r| r.0 == key) {
                Some(i) => i,
                None => {
                    rows.push((key, [None, None, None]));
                    rows.len() - 1
                }
            };
            let cell = rows[idx].1[col].get_or_insert((0, 0, 0.0));
            cell.0 += 1;
            match &o.result {
                Ok(c) => cell.2 = cell.2.max(c.nmse),
                Err(e) => {
                    cell.1 += 1;
                    all_ok = false;
                    eprintln!(
                        "FAIL {} {} [{}] {}: {e}",
                        o.op, o.params, o.variant, o.device
                    );
                }
            }
            if verbose {
                let r = match &o.result {
                    Ok(c) => format!("ok nmse={:.2e}", c.nmse),
                    Err(e) => format!("FAIL {e}"),
                };
                println!(
                    "  {:<14} {:<8} {:<9} {:<50} {r}",
                    o.op, o.device, o.variant, o.params
                );
            }
        }
    }
    println!(
        "{:<16} {:<9} {:<22} {:<22} {:<22}",
        "op", "dtype", "plain", "f16", "subgroups"
    );
    for ((op, dtype), cells) in &rows {
        let fmt = |c: &Option<Cell>| match c {
            None => "n/a".to_string(),
            Some((n, 0, e)) => format!("ok {n:>2} (nmse {e:.0e})"),
            Some((n, f, _)) => format!("FAIL {f}/{n}"),
        };
        println!(
            "{:<16} {:<9} {:<22} {:<22} {:<22}",
            op,
            dtype,
            fmt(&cells[0]),
            fmt(&cells[1]),
            fmt(&cells[2])
        );
    }
    // What each variant needs from a device, and whether this one has it.
    println!(
        "{:<34} {:<24} needs (storage buffers, workgroup storage, invocations, features)",
        "variant", "entry point"
    );
    for &shader in spikescan::runtime::Shader::ALL {
        if filter
            .as_deref()
            .is_some_and(|f| !shader.file().contains(f))
        {
            continue;
        }
        for &defines in shader.variants() {
            let variant = format!("{}[{}]", shader.file(), defines.join(","));
            for n in shader.needs(defines).map_err(anyhow::Error::msg)? {
                let over = n.exceeds(native.limits());
                let verdict = if over.is_empty() {
                    "fits".to_string()
                } else {
                    all_ok = false;
                    format!("FAIL over this device's limits: {}", over.join(", "))
                };
                println!(
                    "{variant:<34} {:<24} {:<44} {verdict}",
                    n.entry,
                    n.summary()
                );
            }
        }
    }
    println!(
        "pipelines compiled: {} native, {} plain",
        native.pipeline_count(),
        plain.pipeline_count()
    );
    Ok(all_ok)
}

fn bench(a: BenchArgs) -> anyhow::Result<()> {
    ui::check_output(a.out.as_deref())?;
    let dev = Device::new()?;
    let mut records = Vec::new();
    let mamba = if a.mamba.is_empty() && !a.kernels && a.lmuformer.is_empty() && a.vision.is_empty()
    {
        vec!["mamba-130m".to_string()]
    } else {
        a.mamba.clone()
    };
    let err = |what: &str| {
        let what = what.to_string();
        move |e: Box<dyn std::error::Error>| anyhow::anyhow!("{what}: {e}")
    };
    let steps =
        a.kernels as u64 + (mamba.len() + a.lmuformer.len() + a.vision.len() * a.t.len()) as u64;
    let pb = ui::bar(steps, "");
    let spec = a
        .peak_tflops
        .zip(a.peak_gbs)
        .map(|(t, b)| spikescan_bench::SpecPeak {
            fp32_tflops: t,
            bandwidth_gbs: b,
        });
    let mut ceil = None;
    if a.kernels {
        pb.set_message("kernels");
        let (c, r) = spikescan_bench::kernels(&dev, a.quick, a.reps, a.filter.as_deref(), spec)
            .map_err(err("kernels"))?;
        records.extend(r);
        ceil = Some(c);
        pb.inc(1);
    } else if a.layers {
        pb.set_message("ceilings");
        let (c, r) =
            spikescan_bench::ceilings(&dev, a.quick, a.reps, spec).map_err(err("ceilings"))?;
        records.extend(r);
        ceil = Some(c);
    }
    let layers = if a.layers { ceil } else { None };
    for p in &mamba {
        pb.set_message(p.clone());
        records.extend(
            spikescan_bench::mamba(
                &dev,
                p,
                &a.batch,
                a.prompt_len,
                a.decode_steps,
                a.reps.max(1),
                layers,
                ui::weights(),
            )
            .map_err(err(p))?,
        );
        pb.inc(1);
    }
    for p in &a.lmuformer {
        pb.set_message(p.clone());
        records.extend(
            spikescan_bench::lmuformer(
                &dev,
                p,
                &a.clip_batch,
                a.frames,
                a.reps,
                layers,
                ui::weights(),
            )
            .map_err(err(p))?,
        );
        pb.inc(1);
    }
    for p in &a.vision {
        for &t in &a.t {
            pb.set_message(format!("{p} (T={t})"));
            records.extend(
                spikescan_bench::vision(&dev, p, t, &a.image_batch, a.reps, layers, ui::weights())
                    .map_err(err(p))?,
            );
            pb.inc(1);
        }
    }
    ui::done(pb);
    if ui::json() {
        for r in &records {
            ui::emit(r.json(&dev));
        }
    } else {
        print!("{}", spikescan_bench::table(&dev, &records));
    }
    if let Some(path) = a.out {
        let lines: Vec<String> = records.iter().map(|r| r.json(&dev).to_string()).collect();
        std::fs::write(&path, lines.join("\n") + "\n")?;
        ui::note(format!("wrote {}", path.display()));
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ui::set(cli.quiet, cli.json);
    ui::set_strict(cli.strict);
    ui::set_weights(cli.dtype);
    let result = match cli.command {
        Command::Info {
            all,
            model: Some(dir),
        } => {
            let _ = all;
            model_info(&dir).map(|_| true)
        }
        Command::Info { all, model: None } => info(all).map(|_| true),
        Command::Ops { filter, verbose } => ops(filter, verbose),
        Command::Bench(args) => bench(args).map(|_| true),
        Command::Demo { models } => demo::demo(&models).map(|_| true),
        Command::Generate {
            model,
            prompt,
            prompt_ids,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            output,
        } => {
            let sampling = spikescan::models::Sampling {
                temperature,
                top_k,
                top_p,
                seed,
            };
            generate::generate(generate::GenerateArgs {
                model,
                prompt,
                prompt_ids,
                max_new_tokens,
                sampling,
                output,
            })
            .map(|_| true)
        }
        Command::Run {
            model,
            input,
            output,
            stats,
            verbose,
            top,
            all_seq,
        } => run::run(run::RunArgs {
            model,
            input,
            output,
            stats,
            verbose,
            top,
            all_seq,
        })
        .map(|_| true),
        Command::Stream {
            model,
            input,
            quiet,
        } => stream::stream(stream::StreamArgs {
            model,
            input,
            quiet,
        })
        .map(|_| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("spikescan: some kernels disagree with their references (see FAIL lines)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("spikescan: {e:#}");
            ExitCode::from(2)
        }
    }
}
