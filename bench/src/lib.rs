//! Benchmarks for `spikescan bench`. Models run with random weights of the official shapes;
//! every record names the adapter, backend and driver. Speed is measured here, never
//! asserted by tests. On lavapipe (a CPU) the numbers say nothing about a GPU: record them as
//! CPU-emulated and never tune kernels on them.

use std::time::Instant;

use serde_json::json;
use spikescan_models::lmuformer::{random_checkpoint, LmuformerConfig};
use spikescan_models::{preset, random_weights, Lmuformer, Mamba, MambaConfig, ModelDir, Sampling};
use spikescan_runtime::Device;

/// One measurement.
#[derive(Clone, Debug)]
pub struct Record {
    pub suite: &'static str,
    pub name: String,
    pub params: String,
    pub value: f64,
    pub unit: &'static str,
}

impl Record {
    /// The JSON line, with the device.
    pub fn json(&self, dev: &Device) -> serde_json::Value {
        let a = dev.adapter();
        json!({
            "suite": self.suite, "name": self.name, "params": self.params, "value": self.value,
            "unit": self.unit, "adapter": a.name, "backend": a.backend, "driver": format!("{} {}", a.driver, a.driver_info),
        })
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

type Error = Box<dyn std::error::Error>;

/// Mamba prompt and decode throughput for a preset (`mamba-130m`, `mamba-1.4b`, …).
pub fn mamba(
    dev: &Device,
    name: &str,
    batch: usize,
    prompt_len: usize,
    decode_steps: usize,
    reps: usize,
) -> Result<Vec<Record>, Error> {
    let cfg_json = preset(name).ok_or_else(|| format!("unknown preset {name}"))?;
    let cfg = MambaConfig::from_json(&cfg_json, std::path::Path::new(name))?;
    let t0 = Instant::now();
    let weights = random_weights(&cfg.weight_shapes(false), 1);
    let md = ModelDir::in_memory(name, cfg_json, &weights)?;
    drop(weights);
    let m = Mamba::load(dev, &md)?;
    let load_s = t0.elapsed().as_secs_f64();
    let params = format!("B={batch} L={prompt_len}");
    let ids: Vec<u32> = (0..batch * prompt_len)
        .map(|i| (i * 7919 % 50000) as u32)
        .collect();
    let t = dev.tensor_u32(&ids, &[batch, prompt_len])?;
    // Cold: the first prefill compiles the pipelines.
    let t1 = Instant::now();
    let mut state = m.new_state(dev, batch)?;
    let mut rec = dev.recorder("bench prefill");
    m.prefill(&mut rec, &t, &mut state, false)?;
    rec.submit()?;
    dev.wait("bench")?;
    let cold_s = t1.elapsed().as_secs_f64();
    let mut prompt_times = Vec::new();
    for _ in 0..reps {
        let mut state = m.new_state(dev, batch)?;
        let t1 = Instant::now();
        let mut rec = dev.recorder("bench prefill");
        m.prefill(&mut rec, &t, &mut state, false)?;
        rec.submit()?;
        dev.wait("bench")?;
        prompt_times.push(t1.elapsed().as_secs_f64());
    }
    // Decode: one recording, one submit and one readback of the chosen ids per step.
    let mut rec = dev.recorder("bench prefill");
    let mut logits = m.prefill(&mut rec, &t, &mut state, false)?;
    let mut rng = 1u64;
    let mut step_times = Vec::new();
    for i in 0..decode_steps + 2 {
        let t1 = Instant::now();
        let next = m.pick(rec, &logits, &Sampling::default(), &mut rng)?;
        rec = dev.recorder("bench step");
        let ids = dev.tensor_u32(&next, &[batch])?;
        logits = m.step(&mut rec, &ids, &mut state)?;
        if i >= 2 {
            step_times.push(t1.elapsed().as_secs_f64());
        }
    }
    rec.submit()?;
    let prompt_tps = (batch * prompt_len) as f64 / median(prompt_times);
    let decode_tps = batch as f64 / median(step_times);
    Ok(vec![
        Record {
            suite: "model",
            name: format!("{name} load"),
            params: "random weights, f32".into(),
            value: load_s,
            unit: "s",
        },
        Record {
            suite: "model",
            name: format!("{name} cold prefill"),
            params: params.clone(),
            value: cold_s,
            unit: "s",
        },
        Record {
            suite: "model",
            name: format!("{name} prompt"),
            params: params.clone(),
            value: prompt_tps,
            unit: "tokens/s",
        },
        Record {
            suite: "model",
            name: format!("{name} decode"),
            params: format!("B={batch}"),
            value: decode_tps,
            unit: "tokens/s",
        },
    ])
}

/// LMUFormer (`lmuformer-gsc` or `spiking-lmuformer-gsc`): load, cold start (first clip,
/// pipelines compiled), whole-clip clips/s at each batch size, and the per-frame latency of a
/// streaming session (one stream; each frame one submit and one readback of its logits).
pub fn lmuformer(
    dev: &Device,
    name: &str,
    batches: &[usize],
    frames: usize,
    reps: usize,
) -> Result<Vec<Record>, Error> {
    let cfg_json = preset(name).ok_or_else(|| format!("unknown preset {name}"))?;
    let spiking = cfg_json["architecture"] == "spiking_lmuformer";
    let cfg = LmuformerConfig::from_json(&cfg_json, std::path::Path::new(name), spiking)?;
    let t0 = Instant::now();
    let md = ModelDir::in_memory(name, cfg_json, &random_checkpoint(&cfg, 1))?;
    let m = Lmuformer::load(dev, &md, spiking)?;
    let load_s = t0.elapsed().as_secs_f64();
    let (n, c) = (cfg.seq_len, cfg.in_channels);
    let clip = |b: usize| -> Vec<f32> {
        (0..b * n * c)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.3)
            .collect()
    };
    let run = |b: usize| -> Result<f64, Error> {
        let x = clip(b);
        let t1 = Instant::now();
        m.run(dev, &x, &[b, n, c], false)?;
        Ok(t1.elapsed().as_secs_f64())
    };
    let cold = run(1)?;
    let mut out = start_records(name, load_s, cold, format!("B=1 N={n}"));
    for &b in batches {
        let t = median((0..reps.max(1)).map(|_| run(b)).collect::<Result<_, _>>()?);
        out.push(Record {
            suite: "model",
            name: format!("{name} whole clip"),
            params: format!("B={b} N={n}"),
            value: b as f64 / t,
            unit: "clips/s",
        });
    }
    let x = clip(1);
    let mut s = m.stream(dev, 1)?;
    let mut lat = Vec::new();
    for t in 0..frames.max(LOOKAHEAD_FRAMES + 2) {
        let f = t % n;
        let t1 = Instant::now();
        s.push(&x[f * c..(f + 1) * c])?;
        if t > LOOKAHEAD_FRAMES {
            lat.push(t1.elapsed().as_secs_f64());
        }
    }
    out.push(Record {
        suite: "model",
        name: format!("{name} streaming frame"),
        params: "S=1 (submit + logits read back)".into(),
        value: median(lat) * 1e3,
        unit: "ms",
    });
    Ok(out)
}

/// An image classifier preset (`spikformer-8-384`, `meta-spikeformer-8-512`, …) at `t` time
/// steps: load, cold start (first batch, pipelines compiled) and images/s per batch size.
pub fn vision(
    dev: &Device,
    name: &str,
    t: usize,
    batches: &[usize],
    reps: usize,
) -> Result<Vec<Record>, Error> {
    use spikescan_models::{MetaSpikeformerConfig, Model, SpikformerConfig};
    let mut cfg = preset(name).ok_or_else(|| format!("unknown preset {name}"))?;
    cfg["T"] = json!(t);
    let path = std::path::Path::new(name);
    let shapes = match cfg["architecture"].as_str() {
        Some("spikformer") => SpikformerConfig::from_json(&cfg, path)?.weight_shapes(),
        Some("meta_spikeformer") => MetaSpikeformerConfig::from_json(&cfg, path)?.weight_shapes(),
        _ => return Err(format!("{name} is not an image classifier preset").into()),
    };
    let t0 = Instant::now();
    let md = ModelDir::in_memory(name, cfg, &random_weights(&shapes, 1))?;
    let m = Model::from_dir(dev, &md)?;
    let load_s = t0.elapsed().as_secs_f64();
    let spec = m.image_spec().ok_or("not an image model")?;
    let run = |b: usize| -> Result<f64, Error> {
        let shape = [b, spec.in_channels, spec.height, spec.width];
        let x: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let xt = dev.tensor_f32(&x, &shape)?;
        let t1 = Instant::now();
        let mut rec = dev.recorder("bench vision");
        let y = m.forward(&mut rec, &xt, None)?;
        rec.submit()?;
        dev.read_f32(&y)?;
        Ok(t1.elapsed().as_secs_f64())
    };
    let cold = run(1)?;
    let mut out = start_records(name, load_s, cold, format!("B=1 T={t} {}px", spec.height));
    for &b in batches {
        let secs = median((0..reps.max(1)).map(|_| run(b)).collect::<Result<_, _>>()?);
        out.push(Record {
            suite: "model",
            name: format!("{name} images/s"),
            params: format!("B={b} T={t} {}px", spec.height),
            value: b as f64 / secs,
            unit: "images/s",
        });
    }
    Ok(out)
}

/// The load time and the cold start (first run, pipelines compiled) of a model.
fn start_records(name: &str, load_s: f64, cold_s: f64, params: String) -> Vec<Record> {
    vec![
        Record {
            suite: "model",
            name: format!("{name} load"),
            params: "random weights, f32".into(),
            value: load_s,
            unit: "s",
        },
        Record {
            suite: "model",
            name: format!("{name} cold start"),
            params,
            value: cold_s,
            unit: "s",
        },
    ]
}

const LOOKAHEAD_FRAMES: usize = spikescan_models::lmuformer::LOOKAHEAD;

/// Prints records as a table.
pub fn table(dev: &Device, records: &[Record]) -> String {
    let mut s = format!("device: {}\n", dev.describe());
    s.push_str(&format!(
        "{:<40} {:<32} {:>14} {}\n",
        "benchmark", "params", "value", "unit"
    ));
    for r in records {
        s.push_str(&format!(
            "{:<40} {:<32} {:>14.3} {}\n",
            r.name, r.params, r.value, r.unit
        ));
    }
    s
}

/// Kernel microbenchmarks at named shapes, timed with GPU timestamps where the adapter has
/// them (wall clock after a wait otherwise), median of `reps` runs after a warm-up; the
/// bandwidth-bound kernels (LIF, RMSNorm, the decode update) rotate through enough input
/// copies to pass 128 MiB, so no timed run reads cached data (two copies with `quick`). The first two records are this device's measured ceilings:
/// a streaming elementwise kernel (bandwidth) and the largest dense GEMM (compute); every
/// other record reports its fraction of them.
pub fn kernels(quick: bool, reps: usize) -> Result<Vec<Record>, Error> {
    use spikescan_runtime::harness::Rng;
    use spikescan_runtime::ops::{
        batch_norm::{random_params, BatchNorm},
        causal_conv1d::{causal_conv1d_into, ConvLayout},
        conv::{conv2d_into, spike_conv2d_into, Conv2d},
        elementwise::{unary_into, Unary},
        lif::{lif_bits_into, Lif},
        lmu::{memory_chunked_into, memory_step_into, test_matrices, LmuMatrices},
        matmul::{gemm_into, Gemm},
        rms_norm::rms_norm_into,
        sdsa::sdsa_into,
        selective_scan::{
            selective_scan_into, selective_state_update, ScanData, ScanLayout, ScanWeights,
        },
        spike_matmul::spike_linear_into,
        ssa::{ssa_into, Ssa},
    };
    use spikescan_runtime::{DType, DeviceOptions, PackedSpikes, Recorder, Tensor};

    let dev = Device::with_options(DeviceOptions {
        profile: true,
        ..DeviceOptions::from_env()
    })?;
    let mut rng = Rng::new(42);
    let reps = reps.max(3);
    // Copies of a kernel's inputs to rotate through so that no timed run finds its data in
    // the cache: enough to pass 128 MiB (at most one per run); two with --quick.
    let copies = |bytes: usize| {
        if quick {
            2
        } else {
            ((128usize << 20) / bytes.max(1)).clamp(2, reps)
        }
    };
    // Runs `op` (which records one dispatch per call, alternating input copies) and returns
    // the median time in µs of the dispatches named `name`.
    let time = |name: &str,
                op: &mut dyn FnMut(&mut Recorder, usize) -> spikescan_runtime::Result<()>|
     -> Result<f64, Error> {
        let mut rec = dev.recorder("bench");
        op(&mut rec, 0)?; // warm-up (pipeline creation)
        rec.submit()?;
        dev.take_profile();
        let mut rec = dev.recorder("bench");
        for i in 0..reps {
            op(&mut rec, i + 1)?; // (the warm-up used copy 0)
        }
        rec.submit()?;
        let t: Vec<f64> = dev
            .take_profile()
            .into_iter()
            .filter(|t| t.info.name == name)
            .map(|t| t.micros)
            .collect();
        if t.is_empty() {
            return Err(format!("no timing for {name}").into());
        }
        Ok(median(t))
    };
    let f32s = |rng: &mut Rng, shape: &[usize]| -> spikescan_runtime::Result<Tensor> {
        let n: usize = shape.iter().product();
        dev.tensor_f32(&rng.vec(n, -1.0, 1.0), shape)
    };
    let mut out = Vec::new();
    let mut push =
        |name: &str, params: String, us: f64, bytes: f64, flops: f64, ceil: (f64, f64)| {
            let gbs = bytes / (us * 1e3);
            let gfs = flops / (us * 1e3);
            out.push(Record {
                suite: "kernel",
                name: name.to_string(),
                params: params.clone(),
                value: us,
                unit: "µs",
            });
            out.push(Record {
                suite: "kernel",
                name: format!("{name} GB/s"),
                params: params.clone(),
                value: gbs,
                unit: "GB/s",
            });
            if flops > 0.0 {
                out.push(Record {
                    suite: "kernel",
                    name: format!("{name} GFLOP/s"),
                    params: params.clone(),
                    value: gfs,
                    unit: "GFLOP/s",
                });
            }
            if ceil.0 > 0.0 {
                let frac = (gbs / ceil.0).max(if ceil.1 > 0.0 { gfs / ceil.1 } else { 0.0 });
                out.push(Record {
                    suite: "kernel",
                    name: format!("{name} of ceiling"),
                    params,
                    value: frac,
                    unit: "fraction",
                });
            }
        };

    // Ceilings.
    let n = if quick { 1 << 22 } else { 1 << 25 };
    let xs = [f32s(&mut rng, &[n])?, f32s(&mut rng, &[n])?];
    let ys = [dev.alloc(&[n], DType::F32)?, dev.alloc(&[n], DType::F32)?];
    let us = time("scale", &mut |rec, i| {
        unary_into(
            rec,
            Unary::Affine {
                alpha: 1.0,
                beta: 0.0,
            },
            &xs[i % 2],
            &ys[i % 2],
        )
    })?;
    let bw = 8.0 * n as f64 / (us * 1e3);
    push(
        "copy (scale) — bandwidth ceiling",
        format!("n={n}"),
        us,
        8.0 * n as f64,
        0.0,
        (0.0, 0.0),
    );
    let s = if quick { 512 } else { 4096 };
    let (a, b) = (f32s(&mut rng, &[s, s])?, f32s(&mut rng, &[s, s])?);
    let c = dev.alloc(&[s, s], DType::F32)?;
    let g = Gemm::linear(s, s, s);
    let us = time("matmul", &mut |rec, _| gemm_into(rec, &g, &a, &b, None, &c))?;
    let gf = g.flops() as f64 / (us * 1e3);
    push(
        "dense GEMM f32 — compute ceiling",
        format!("{s}^3"),
        us,
        12.0 * (s * s) as f64,
        g.flops() as f64,
        (0.0, 0.0),
    );
    let ceil = (bw, gf);
    if dev.caps().f16 {
        // The same GEMM with f16 weights (f32 activations and accumulation).
        let wh = dev.weight_f16(&rng.vec(s * s, -1.0, 1.0), &[s, s])?;
        let us = time("matmul", &mut |rec, _| {
            gemm_into(rec, &g, &a, &wh, None, &c)
        })?;
        push(
            "dense GEMM, f16 weights",
            format!("{s}^3"),
            us,
            10.0 * (s * s) as f64,
            g.flops() as f64,
            ceil,
        );
    }

    // LIF fused with BN: Spikformer-8-384 block activations (C=384, 14x14 tokens) and
    // Meta-SpikeFormer-8-512's stage 3 (C=512, 14x14), at T = 1 and 4.
    for (t, c_, nt) in [
        (1usize, 384usize, 196usize),
        (4, 384, 196),
        (1, 512, 196),
        (4, 512, 196),
    ] {
        let k = copies(4 * t * c_ * nt);
        let xs = (0..k)
            .map(|_| f32s(&mut rng, &[t, 1, c_, nt]))
            .collect::<spikescan_runtime::Result<Vec<_>>>()?;
        let bn = BatchNorm::new(&dev, &random_params(&mut rng, c_))?;
        let sp = (0..k)
            .map(|_| PackedSpikes::alloc(&dev, &[t, 1, c_, nt]))
            .collect::<spikescan_runtime::Result<Vec<_>>>()?;
        let us = time("lif_bits", &mut |rec, i| {
            lif_bits_into(rec, &xs[i % k], &Lif::STANDARD, Some(&bn), &sp[i % k])
        })?;
        push(
            "lif+bn → bits",
            format!("T={t} C={c_} N={nt}"),
            us,
            (4 * t * c_ * nt) as f64 + (t * c_ * nt) as f64 / 8.0,
            (4 * t * c_ * nt) as f64,
            ceil,
        );
    }
    let (t, c_, nt) = (4usize, 384usize, 196usize);

    // Spike GEMM: fc1 of Spikformer-8-384 (C → 4C) on packed spikes.
    let spikes: Vec<f32> = (0..t * c_ * nt)
        .map(|_| if rng.unit() < 0.2 { 1.0 } else { 0.0 })
        .collect();
    let ps = PackedSpikes::from_host(&dev, &spikes, &[t, c_, nt])?;
    let w = f32s(&mut rng, &[4 * c_, c_])?;
    let y = dev.alloc(&[t, 4 * c_, nt], DType::F32)?;
    let us = time("spike_linear", &mut |rec, _| {
        spike_linear_into(rec, &ps, &w, None, &y)
    })?;
    push(
        "spike GEMM (bits × f32)",
        format!("T={t} K={c_} N={nt} Cout={}", 4 * c_),
        us,
        (4 * c_ * c_ + 4 * t * 4 * c_ * nt) as f64,
        (2 * t * 4 * c_ * c_ * nt) as f64,
        ceil,
    );

    // SSA on packed spikes, 8 heads.
    let q = PackedSpikes::from_host(&dev, &spikes, &[t, 1, c_, nt])?;
    let o = PackedSpikes::alloc(&dev, &[t, 1, c_, nt])?;
    let us = time("ssa_attn", &mut |rec, _| {
        ssa_into(rec, &q, &q, &q, &Ssa::official(8), &o)
    })?;
    let d = c_ / 8;
    push(
        "SSA attention (q·kᵀv + LIF)",
        format!("T={t} C={c_} N={nt} heads=8"),
        us,
        (t * c_ * nt) as f64 / 2.0,
        (2 * t * 8 * d * d * nt) as f64,
        ceil,
    );

    // SDSA (Spike-driven Transformer V1) on the same spikes.
    let us = time("sdsa", &mut |rec, _| {
        sdsa_into(rec, &q, &q, &q, &Lif::ATTENTION, &o)
    })?;
    push(
        "SDSA (popcount k·v, LIF, q AND)",
        format!("T={t} C={c_} N={nt}"),
        us,
        (t * c_ * nt) as f64 / 2.0,
        (2 * t * c_ * nt) as f64,
        ceil,
    );

    // Convolutions: a dense 3x3 (Meta-SpikeFormer stage 2 width) and the same on packed spikes.
    let (cc, hw) = (if quick { 64 } else { 256 }, if quick { 28 } else { 56 });
    let cx = f32s(&mut rng, &[1, cc, hw, hw])?;
    let cwt = f32s(&mut rng, &[cc, cc, 3, 3])?;
    let cy = dev.alloc(&[1, cc, hw, hw], DType::F32)?;
    let conv = Conv2d::new(1, 1);
    let macs = (cc * cc * 9 * hw * hw) as f64;
    let us = time("conv2d", &mut |rec, _| {
        conv2d_into(rec, &cx, &cwt, None, &conv, &cy)
    })?;
    push(
        "conv2d 3x3 f32",
        format!("C={cc} H=W={hw}"),
        us,
        4.0 * (2 * cc * hw * hw + cc * cc * 9) as f64,
        2.0 * macs,
        ceil,
    );
    let cs: Vec<f32> = (0..cc * hw * hw)
        .map(|_| if rng.unit() < 0.2 { 1.0 } else { 0.0 })
        .collect();
    let cps = PackedSpikes::from_host(&dev, &cs, &[1, cc, hw * hw])?;
    let us = time("spike_conv2d", &mut |rec, _| {
        spike_conv2d_into(rec, &cps, [hw, hw], &cwt, None, &conv, &cy)
    })?;
    push(
        "spike conv2d 3x3 (bits × f32)",
        format!("C={cc} H=W={hw}"),
        us,
        (cc * hw * hw) as f64 / 8.0 + 4.0 * (cc * hw * hw + cc * cc * 9) as f64,
        2.0 * macs,
        ceil,
    );

    // Mamba: RMSNorm, causal conv1d, selective scan and the decode update at mamba-130m
    // (d_model 768, d_inner 1536) and mamba-1.4b (2048, 4096) shapes; the full run includes
    // the selective-scan target shape B=8 L=2048 D=1536 N=16.
    let ns = 16usize;
    let shapes: &[(usize, usize, usize, usize)] = if quick {
        &[(1, 128, 768, 1536)]
    } else {
        &[
            (1, 2048, 768, 1536),
            (8, 2048, 768, 1536),
            (1, 2048, 2048, 4096),
        ]
    };
    for &(bsz, l, dm, di) in shapes {
        let k = copies(4 * bsz * l * dm);
        let h = (0..k)
            .map(|_| f32s(&mut rng, &[bsz * l, dm]))
            .collect::<spikescan_runtime::Result<Vec<_>>>()?;
        let wn = f32s(&mut rng, &[dm])?;
        let hn = dev.alloc(&[bsz * l, dm], DType::F32)?;
        let us = time("rms_norm", &mut |rec, i| {
            rms_norm_into(rec, &h[i % k], &wn, 1e-5, &hn)
        })?;
        push(
            "RMSNorm",
            format!("rows={} d={dm}", bsz * l),
            us,
            (8 * bsz * l * dm) as f64,
            (4 * bsz * l * dm) as f64,
            ceil,
        );
        let xz = f32s(&mut rng, &[bsz, l, 2 * di])?;
        let (cw, cb) = (f32s(&mut rng, &[di, 4])?, f32s(&mut rng, &[di])?);
        let u = dev.alloc(&[bsz, l, di], DType::F32)?;
        let cs = dev.alloc(&[bsz, di, 3], DType::F32)?;
        let cl = ConvLayout {
            batch: bsz,
            len: l,
            d: di,
            k: 4,
            x_stride: 2 * di,
        };
        let us = time("causal_conv1d", &mut |rec, _| {
            causal_conv1d_into(rec, &cl, &xz, &cw, &cb, None, &u, &cs)
        })?;
        push(
            "causal conv1d + SiLU",
            format!("B={bsz} L={l} D={di}"),
            us,
            (8 * bsz * l * di) as f64,
            (8 * bsz * l * di) as f64,
            ceil,
        );
        let sl = ScanLayout::packed(bsz, l, di, ns);
        let sd = ScanData::random(&mut rng, &sl);
        let up = |v: &Vec<f32>, shape: &[usize]| dev.tensor_f32(v, shape);
        let (su, sdt, sbc, sz) = (
            up(&sd.u, &[bsz, l, di])?,
            up(&sd.dt, &[bsz, l, di])?,
            up(&sd.bc, &[bsz, l, 2 * ns])?,
            up(&sd.z, &[bsz, l, di])?,
        );
        let (sa, sb, sk) = (
            up(&sd.a, &[di, ns])?,
            up(&sd.dt_bias, &[di])?,
            up(&sd.d_skip, &[di])?,
        );
        let sy = dev.alloc(&[bsz, l, di], DType::F32)?;
        let sh = dev.alloc(&[bsz, di, ns], DType::F32)?;
        let sw = ScanWeights {
            a: &sa,
            dt_bias: &sb,
            d_skip: &sk,
        };
        let us = time("selective_scan", &mut |rec, _| {
            selective_scan_into(rec, &sl, &su, &sdt, &sbc, &sz, &sw, None, &sy, &sh)
        })?;
        // u, dt, z, y per channel and token; B, C per token.
        push(
            "selective scan",
            format!("B={bsz} L={l} D={di} N={ns}"),
            us,
            (4 * bsz * l * (4 * di + 2 * ns)) as f64,
            (7 * bsz * l * di * ns) as f64,
            ceil,
        );

        // Decode: the in-place state update for one token per sequence (batch 1 and 8).
        // (Once per d_inner: with the batch-1 prompt shape.)
        for b in if bsz == 1 {
            vec![1usize, 8]
        } else {
            Vec::new()
        } {
            let dl = ScanLayout::packed(b, 1, di, ns);
            let dd = ScanData::random(&mut rng, &dl);
            let (du, ddt, dbc, dz) = (
                up(&dd.u, &[b, di])?,
                up(&dd.dt, &[b, di])?,
                up(&dd.bc, &[b, 2 * ns])?,
                up(&dd.z, &[b, di])?,
            );
            let k = copies(4 * b * di * ns);
            let states = (0..k)
                .map(|_| up(&dd.h0, &[b, di, ns]))
                .collect::<spikescan_runtime::Result<Vec<_>>>()?;
            let dy = dev.alloc(&[b, di], DType::F32)?;
            let us = time("selective_state_update", &mut |rec, i| {
                selective_state_update(rec, &dl, &du, &ddt, &dbc, &dz, &sw, &states[i % k], &dy)
            })?;
            push(
                "decode state update",
                format!("B={b} D={di} N={ns}"),
                us,
                (4 * b * (2 * di * ns + 4 * di)) as f64,
                (7 * b * di * ns) as f64,
                ceil,
            );
        }
    }
    // LMU memory: the spiking LMUFormer's (M = 512, θ = 128) over a whole clip (Toeplitz,
    // N = 128, batch 8), a long sequence in chunks, and the streaming step (1 and 8 streams).
    let mm = if quick { 256 } else { 512 };
    let (la, lb, lh) = test_matrices(mm, 128.0, 128);
    let mats = LmuMatrices::new(&dev, &la, &lb, &lh, mm)?;
    for (ln, lbatch, chunk) in [
        (128usize, if quick { 1 } else { 8 }, 128usize),
        (if quick { 512 } else { 2048 }, 1, 32),
    ] {
        let lu = [
            f32s(&mut rng, &[ln, lbatch])?,
            f32s(&mut rng, &[ln, lbatch])?,
        ];
        let lm = dev.alloc(&[ln, lbatch, mm], DType::F32)?;
        let us = time("lmu_toeplitz", &mut |rec, i| {
            memory_chunked_into(rec, &mats, &lu[i % 2], ln, lbatch, chunk, &lm)
        })?;
        let c = chunk.min(ln);
        let name = if chunk >= ln {
            "LMU memory (Toeplitz)"
        } else {
            "LMU memory, chunk-local part"
        };
        push(
            name,
            format!("N={ln} B={lbatch} M={mm} chunk={c}"),
            us,
            4.0 * (ln * lbatch * mm + c * mm) as f64,
            (ln * lbatch * mm * (c + 1)) as f64,
            ceil,
        );
        if chunk < ln {
            for (kname, label) in [
                ("lmu_carry", "LMU memory, Ā^C carry"),
                ("lmu_free", "LMU memory, free response"),
            ] {
                let us = time(kname, &mut |rec, i| {
                    memory_chunked_into(rec, &mats, &lu[i % 2], ln, lbatch, chunk, &lm)
                })?;
                let chunks = ln.div_ceil(c);
                let (bytes, flops) = if kname == "lmu_carry" {
                    (
                        4.0 * (mm * mm + 2 * chunks * lbatch * mm) as f64,
                        2.0 * (chunks * lbatch * mm * mm) as f64,
                    )
                } else {
                    (
                        4.0 * (c * mm * mm + 2 * ln * lbatch * mm) as f64,
                        2.0 * ((ln - c) * lbatch * mm * mm) as f64,
                    )
                };
                push(
                    label,
                    format!("N={ln} B={lbatch} M={mm} chunk={c}"),
                    us,
                    bytes,
                    flops,
                    ceil,
                );
            }
        }
    }
    for s in [1usize, 8] {
        let su = f32s(&mut rng, &[s])?;
        let ms = [f32s(&mut rng, &[s, mm])?, dev.alloc(&[s, mm], DType::F32)?];
        let us = time("lmu_step", &mut |rec, i| {
            memory_step_into(rec, &mats, &su, &ms[i % 2], &ms[(i + 1) % 2])
        })?;
        push(
            "LMU memory step (streaming GEMV)",
            format!("S={s} M={mm}"),
            us,
            4.0 * (mm * mm + 2 * s * mm) as f64,
            2.0 * (s * mm * mm) as f64,
            ceil,
        );
    }
    Ok(out)
}
