//! Benchmarks for `spikescan bench`. Models run with random weights of the official shapes;
//! every record names the adapter, backend and driver. Speed is measured here, never
//! asserted by tests. On lavapipe (a CPU) the numbers say nothing about a GPU: record them as
//! CPU-emulated and never tune kernels on them.

use std::time::Instant;

pub mod kernels;
pub use kernels::{ceilings, kernels, layer_records, spec_peak, Ceilings, SpecPeak};

use serde_json::json;
use spikescan_models::lmuformer::{random_checkpoint, LmuformerConfig};
use spikescan_models::MambaState;
use spikescan_models::{
    preset, random_weights, Lmuformer, Mamba, MambaConfig, ModelDir, Sampling, WeightDtype,
};
use spikescan_runtime::{Device, Recorder, Tensor};

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

/// Runs `f` once with per-dispatch timing on and turns its dispatches into per-layer records
/// (see [`layer_records`]).
fn profiled(
    dev: &Device,
    model: &str,
    params: &str,
    ceil: Ceilings,
    f: impl FnOnce() -> Result<(), Error>,
) -> Result<Vec<Record>, Error> {
    Ok(layer_records(model, params, &profile_once(dev, f)?, ceil))
}

/// Runs `f` once with per-dispatch timing on; its dispatches' timings and op infos.
fn profile_once(
    dev: &Device,
    f: impl FnOnce() -> Result<(), Error>,
) -> Result<Vec<spikescan_runtime::OpTiming>, Error> {
    dev.take_profile();
    let was = dev.profiling();
    dev.set_profiling(true);
    let r = f();
    dev.set_profiling(was);
    r?;
    Ok(dev.take_profile())
}

/// Mamba prompt and decode throughput for a preset (`mamba-130m`, `mamba-1.4b`, …) at each
/// batch size; with `layers`, one profiled prefill and one profiled decode step (the L = 1
/// shapes) at the first batch size become per-layer records.
#[allow(clippy::too_many_arguments)]
pub fn mamba(
    dev: &Device,
    name: &str,
    batches: &[usize],
    prompt_len: usize,
    decode_steps: usize,
    reps: usize,
    layers: Option<Ceilings>,
    weights: WeightDtype,
) -> Result<Vec<Record>, Error> {
    let cfg_json = preset(name).ok_or_else(|| format!("unknown preset {name}"))?;
    let cfg = MambaConfig::from_json(&cfg_json, std::path::Path::new(name))?;
    let t0 = Instant::now();
    let dtype = weights;
    let weights = random_weights(&cfg.weight_shapes(false), 1);
    let md = ModelDir::in_memory(name, cfg_json, &weights)?.with_weights(dtype);
    drop(weights);
    let (name, wlabel) = &weight_label(dev, &md, name)?;
    // Every weight is read once per decode step (the tied head reads the whole embedding; an
    // untied embedding only its B rows, which this counts as the whole matrix: a bound); in_proj,
    // x_proj and out_proj are the matrices kept in f16 with f16 weights.
    let half = md.matrix_dtype(dev)? == spikescan_runtime::DType::F16;
    let weight_bytes: u64 = cfg
        .weight_shapes(false)
        .iter()
        .map(|(k, s)| {
            let proj = ["in_proj", "x_proj", "out_proj"]
                .iter()
                .any(|p| k.ends_with(&format!("{p}.weight")));
            s.iter().product::<usize>() as u64 * if half && proj { 2 } else { 4 }
        })
        .sum();
    let m = Mamba::load(dev, &md)?;
    drop(md);
    let load_s = t0.elapsed().as_secs_f64();
    let ids = |batch: usize| -> spikescan_runtime::Result<spikescan_runtime::Tensor> {
        let v: Vec<u32> = (0..batch * prompt_len)
            .map(|i| (i * 7919 % 50000) as u32)
            .collect();
        dev.tensor_u32(&v, &[batch, prompt_len])
    };
    // Records a prefill from fresh states (not submitted): the states, logits and recording.
    let prefill = |batch: usize| -> Result<(MambaState, Tensor, Recorder<'_>), Error> {
        let t = ids(batch)?;
        let mut state = m.new_state(dev, batch)?;
        let mut rec = dev.recorder("bench prefill");
        let logits = m.prefill(&mut rec, &t, &mut state, false)?;
        Ok((state, logits, rec))
    };
    let mut out = Vec::new();
    for (bi, &batch) in batches.iter().enumerate() {
        let params = format!("B={batch} L={prompt_len}");
        let run_prefill = || -> Result<f64, Error> {
            let t1 = Instant::now();
            let (_, _, rec) = prefill(batch)?;
            rec.submit()?;
            dev.wait("bench")?;
            Ok(t1.elapsed().as_secs_f64())
        };
        // Cold: the first prefill compiles the pipelines.
        let cold_s = run_prefill()?;
        if bi == 0 {
            out.extend(start_records(
                name,
                wlabel,
                load_s,
                "cold prefill",
                cold_s,
                params.clone(),
            ));
        }
        let prompt_s = median(
            (0..reps.max(1))
                .map(|_| run_prefill())
                .collect::<Result<_, _>>()?,
        );
        // Decode, recorded per step (the old loop, for comparison): one recording (a bind
        // group per dispatch), one submit and one blocking readback of the ids per step.
        let (mut state, mut logits, mut rec) = prefill(batch)?;
        let mut rng = 1u64;
        let mut step_times = Vec::new();
        let mut record_us = Vec::new();
        let mut recorded_dispatches = 0;
        for i in 0..decode_steps + 2 {
            let t1 = Instant::now();
            let next = m.pick(rec, &logits, &Sampling::default(), &mut rng)?;
            let t2 = Instant::now();
            rec = dev.recorder("bench step");
            let ids = dev.tensor_u32(&next, &[batch])?;
            logits = m.step(&mut rec, &ids, &mut state)?;
            if i >= 2 {
                step_times.push(t1.elapsed().as_secs_f64());
                record_us.push(t2.elapsed().as_secs_f64() * 1e6);
            }
            // The step, plus the pick's top-k in the same recording.
            recorded_dispatches = rec.dispatch_count() + 1;
        }
        rec.submit()?;
        // Decode as `generate` runs it: the captured graphs replayed, the ids kept on the GPU,
        // two steps in flight, each id read from an asynchronous copy.
        let (mut state, _, rec) = prefill(batch)?;
        rec.submit()?;
        let dec = m.decoder(dev, &mut state)?;
        let ones: Vec<u8> = (0..batch).flat_map(|_| 1u32.to_le_bytes()).collect();
        dev.write(&dec.ids, &ones)?;
        let mut ring = spikescan_runtime::ReadbackRing::new(dev, 4 * batch as u64, 3)?;
        let mut host_us = Vec::new();
        let mut submit_us = Vec::new();
        let mut graph_times = Vec::new();
        let mut last = Instant::now();
        let steps = decode_steps + 2;
        let (mut submitted, mut taken, mut stalls) = (0, 0, 0);
        while taken < steps {
            while submitted < steps && ring.in_flight() < 2 {
                let c = dev.replay(&[&dec.step, &dec.argmax], Some((&dec.ids, &mut ring)))?;
                host_us.push(c.host_micros);
                submit_us.push(c.submit_micros);
                submitted += 1;
            }
            // A wait with nothing else queued leaves the GPU idle until the next submit.
            if ring.in_flight() < 2 && submitted < steps {
                stalls += 1;
            }
            ring.take_oldest(dev)?;
            taken += 1;
            if taken > 2 {
                graph_times.push(last.elapsed().as_secs_f64());
            }
            last = Instant::now();
        }
        let host_us: Vec<f64> = host_us.into_iter().skip(2).collect();
        let submit_us: Vec<f64> = submit_us.into_iter().skip(2).collect();
        out.push(Record {
            suite: "model",
            name: format!("{name} prompt"),
            params: params.clone(),
            value: (batch * prompt_len) as f64 / prompt_s,
            unit: "tokens/s",
        });
        let step = |what: &str, value: f64, unit: &'static str| Record {
            suite: "model",
            name: format!("{name} {what}"),
            params: format!("B={batch}"),
            value,
            unit,
        };
        out.push(step(
            "decode",
            batch as f64 / median(graph_times),
            "tokens/s",
        ));
        out.push(step(
            "decode dispatches/step",
            dec.dispatches_per_step() as f64,
            "count",
        ));
        out.push(step(
            "decode submits/step",
            submitted as f64 / steps as f64,
            "count",
        ));
        out.push(step(
            "decode readbacks/step that idle the GPU",
            stalls as f64 / steps as f64,
            "count",
        ));
        let encode_us: Vec<f64> = host_us.iter().zip(&submit_us).map(|(h, s)| h - s).collect();
        out.push(step(
            "decode host µs/step encoding",
            median(encode_us),
            "µs",
        ));
        out.push(step(
            "decode host µs/step in queue.submit",
            median(submit_us),
            "µs",
        ));
        out.push(step(
            "decode (recorded per step)",
            batch as f64 / median(step_times),
            "tokens/s",
        ));
        out.push(step(
            "decode (recorded per step) dispatches/step",
            recorded_dispatches as f64,
            "count",
        ));
        out.push(step(
            "decode (recorded per step) blocking readbacks/step",
            1.0,
            "count",
        ));
        out.push(step(
            "decode (recorded per step) host µs/step",
            median(record_us),
            "µs",
        ));
        // Bytes the step's dispatches move, each op counted at its own minimum (inputs read
        // once, outputs written once), against the step's minimum: every weight once, the
        // state read and written once, the ids in and the logits out. What is over 1 is the
        // traffic of intermediate activations between ops (and weights read twice).
        let moved = {
            let (mut st, _, rec) = prefill(batch)?;
            rec.submit()?;
            dev.wait("bench")?;
            let ops = profile_once(dev, || {
                let mut rec = dev.recorder("bench bytes");
                let ids = dev.tensor_u32(&vec![1u32; batch], &[batch])?;
                m.step(&mut rec, &ids, &mut st)?;
                rec.submit()?;
                dev.wait("bench")?;
                Ok(())
            })?;
            ops.iter().map(|t| t.info.bytes).sum::<u64>()
        };
        let state_bytes =
            (cfg.n_layer * batch * cfg.d_inner * (cfg.d_conv - 1 + cfg.d_state) * 4) as u64;
        let minimum = weight_bytes + 2 * state_bytes + (batch * 4 * (1 + cfg.vocab_padded)) as u64;
        out.push(step("decode bytes moved/step", moved as f64 / 1e6, "MB"));
        out.push(step(
            "decode bytes moved ÷ minimum",
            moved as f64 / minimum as f64,
            "× minimum",
        ));
        if let (Some(ceil), 0) = (layers, bi) {
            let mut st = None;
            out.extend(profiled(
                dev,
                name,
                &format!("prefill {params}"),
                ceil,
                || {
                    let (s, _, rec) = prefill(batch)?;
                    rec.submit()?;
                    dev.wait("bench")?;
                    st = Some(s);
                    Ok(())
                },
            )?);
            let mut state = st.expect("prefilled");
            out.extend(profiled(
                dev,
                name,
                &format!("decode step B={batch}"),
                ceil,
                || {
                    let mut rec = dev.recorder("bench step");
                    let ids = dev.tensor_u32(&vec![1u32; batch], &[batch])?;
                    m.step(&mut rec, &ids, &mut state)?;
                    rec.submit()?;
                    dev.wait("bench")?;
                    Ok(())
                },
            )?);
        }
    }
    Ok(out)
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
    layers: Option<Ceilings>,
    weights: WeightDtype,
) -> Result<Vec<Record>, Error> {
    let cfg_json = preset(name).ok_or_else(|| format!("unknown preset {name}"))?;
    let spiking = cfg_json["architecture"] == "spiking_lmuformer";
    let cfg = LmuformerConfig::from_json(&cfg_json, std::path::Path::new(name), spiking)?;
    let t0 = Instant::now();
    let md =
        ModelDir::in_memory(name, cfg_json, &random_checkpoint(&cfg, 1))?.with_weights(weights);
    let (name, wlabel) = &weight_label(dev, &md, name)?;
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
    let mut out = start_records(
        name,
        wlabel,
        load_s,
        "cold start",
        cold,
        format!("B=1 N={n}"),
    );
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
    if let Some(ceil) = layers {
        out.extend(profiled(dev, name, &format!("B=1 N={n}"), ceil, || {
            run(1).map(|_| ())
        })?);
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
    layers: Option<Ceilings>,
    weights: WeightDtype,
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
    let md = ModelDir::in_memory(name, cfg, &random_weights(&shapes, 1))?.with_weights(weights);
    let (name, wlabel) = &weight_label(dev, &md, name)?;
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
    // The cold run, profiled: its ops' FLOPs (GEMMs and convolutions at 2 per MAC, spike
    // products at 2 per synapse whatever the rate, as PyTorch's dense kernels would count).
    let mut cold = 0.0;
    let prof = profile_once(dev, || {
        cold = run(1)?;
        Ok(())
    })?;
    let mut out = start_records(
        name,
        wlabel,
        load_s,
        "cold start",
        cold,
        format!("B=1 T={t} {}px", spec.height),
    );
    out.push(Record {
        suite: "model",
        name: format!("{name} GFLOP per image"),
        params: format!("T={t} {}px", spec.height),
        value: prof.iter().map(|p| p.info.flops as f64).sum::<f64>() / 1e9,
        unit: "GFLOP",
    });
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
    if let Some(ceil) = layers {
        let params = format!("B=1 T={t} {}px", spec.height);
        out.extend(profiled(dev, name, &params, ceil, || run(1).map(|_| ()))?);
    }
    Ok(out)
}

/// A benchmarked model's name in its records (`<preset> f16w` with f16 matrices, so runs of
/// both dtypes compare) and its load record's parameters.
fn weight_label(dev: &Device, md: &ModelDir, name: &str) -> Result<(String, String), Error> {
    Ok(match md.matrix_dtype(dev)? {
        spikescan_runtime::DType::F16 => (
            format!("{name} f16w"),
            "random weights, f16 matrices".into(),
        ),
        _ => (name.to_string(), "random weights, f32".into()),
    })
}

/// The load time and the cold start (first run, pipelines compiled) of a model.
fn start_records(
    name: &str,
    weights: &str,
    load_s: f64,
    cold_label: &str,
    cold_s: f64,
    params: String,
) -> Vec<Record> {
    vec![
        Record {
            suite: "model",
            name: format!("{name} load"),
            params: weights.into(),
            value: load_s,
            unit: "s",
        },
        Record {
            suite: "model",
            name: format!("{name} {cold_label}"),
            params,
            value: cold_s,
            unit: "s",
        },
    ]
}

const LOOKAHEAD_FRAMES: usize = spikescan_models::lmuformer::LOOKAHEAD;

/// The records as a table: a kernel's or layer's µs, GB/s, GFLOP/s and fraction of the
/// ceilings on one row.
pub fn table(dev: &Device, records: &[Record]) -> String {
    let mut s = format!("device: {}\n", dev.describe());
    s.push_str(&format!(
        "{:<44} {:<44} {:>12} {:<9} {:>8} {:>8} {:>7} {:>7}\n",
        "benchmark", "params", "value", "unit", "GB/s", "GFLOP/s", "of ceil", "of spec"
    ));
    let mut i = 0;
    while i < records.len() {
        let r = &records[i];
        let mut extra = [None; 4];
        let mut j = i + 1;
        if r.unit == "µs" {
            while let Some(n) = records.get(j).filter(|n| n.params == r.params) {
                let k = match n.name.strip_prefix(r.name.as_str()) {
                    Some(" GB/s") => 0,
                    Some(" GFLOP/s") => 1,
                    Some(" of ceiling") => 2,
                    Some(" of spec peak") => 3,
                    _ => break,
                };
                extra[k] = Some(n.value);
                j += 1;
            }
        }
        let cell =
            |v: Option<f64>, digits: usize| v.map_or(String::new(), |v| format!("{v:.digits$}"));
        s.push_str(&format!(
            "{:<44} {:<44} {:>12.3} {:<9} {:>8} {:>8} {:>7} {:>7}\n",
            r.name,
            r.params,
            r.value,
            r.unit,
            cell(extra[0], 3),
            cell(extra[1], 2),
            cell(extra[2], 2),
            cell(extra[3], 3)
        ));
        i = j;
    }
    s
}
