//! Benchmarks for `spikescan bench`. Models run with random weights of the official shapes;
//! every record names the adapter, backend and driver. Speed is measured here, never
//! asserted by tests. On lavapipe (a CPU) the numbers say nothing about a GPU: record them as
//! CPU-emulated and never tune kernels on them.

use std::time::Instant;

use serde_json::json;
use spikescan_models::{preset, random_weights, Mamba, MambaConfig, ModelDir, Sampling};
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

/// Prints records as a table.
pub fn table(dev: &Device, records: &[Record]) -> String {
    let mut s = format!("device: {}\n", dev.describe());
    s.push_str(&format!(
        "{:<34} {:<26} {:>14} {}\n",
        "benchmark", "params", "value", "unit"
    ));
    for r in records {
        s.push_str(&format!(
            "{:<34} {:<26} {:>14.3} {}\n",
            r.name, r.params, r.value, r.unit
        ));
    }
    s
}
