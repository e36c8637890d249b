//! Kernel microbenchmarks at named shapes, the device's measured ceilings, and per-layer
//! records from one profiled pass of a real model.

use std::collections::HashMap;

use spikescan_runtime::harness::Rng;
use spikescan_runtime::ops::{
    batch_norm::{random_params, BatchNorm},
    causal_conv1d::{causal_conv1d_into, ConvLayout},
    conv::{conv2d_into, spike_conv2d_into, Conv2d},
    elementwise::{unary_into, Unary},
    lif::{lif_bits_into, Lif},
    lmu::{memory_chunked_into, memory_step_into, test_matrices, LmuMatrices},
    matmul::{self, gemm_into, Gemm},
    rms_norm::rms_norm_into,
    sdsa::sdsa_into,
    selective_scan::{
        selective_scan_into, selective_scan_with, selective_state_update, DtProj, ScanData,
        ScanLayout, ScanVariant, ScanWeights,
    },
    spike_matmul::spike_linear_into,
    ssa::{ssa_into, Ssa},
};
use spikescan_runtime::{DType, Device, OpTiming, PackedSpikes, Recorder, Tensor};

use crate::{median, Error, Record};

/// This device's measured limits: a streaming elementwise kernel (bandwidth) and the largest
/// dense f32 GEMM (compute); and its spec-sheet peaks where known ([`spec_peak`] or the
/// bench's `--peak-*` flags; 0 where unknown), so that a slow GEMM cannot call itself 100%.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ceilings {
    pub bandwidth_gbs: f64,
    pub gemm_gflops: f64,
    pub spec_gbs: f64,
    pub spec_gflops: f64,
}

/// A GPU's spec-sheet peaks: FP32 FMA throughput (non-tensor-core) and memory bandwidth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpecPeak {
    pub fp32_tflops: f64,
    pub bandwidth_gbs: f64,
}

/// Vendors' published peaks (boost clock) of GPUs we expect to meet, matched by a substring of
/// the adapter name (the first match wins: the more specific names come first).
const SPEC_SHEET: &[(&str, f64, f64)] = &[
    ("H200", 67.0, 4800.0),
    ("H100 PCIe", 51.2, 2000.0),
    ("H100", 67.0, 3350.0),
    ("A100", 19.5, 2039.0),
    ("L40S", 91.6, 864.0),
    ("L4", 30.3, 300.0),
    ("T4", 8.1, 320.0),
    ("RTX 4090", 82.6, 1008.0),
    ("RTX 3090", 35.6, 936.0),
    ("MI300X", 81.7, 5300.0),
    ("RX 7900 XTX", 61.4, 960.0),
];

/// The spec-sheet peaks of the adapter named `adapter`, if it is in the table.
pub fn spec_peak(adapter: &str) -> Option<SpecPeak> {
    SPEC_SHEET
        .iter()
        .find(|(n, _, _)| adapter.contains(n))
        .map(|&(_, t, b)| SpecPeak {
            fp32_tflops: t,
            bandwidth_gbs: b,
        })
}

/// µs, GB/s, GFLOP/s (when `flops > 0`) and the fraction of the ceilings (when given): the
/// larger of GB/s ÷ bandwidth and GFLOP/s ÷ GEMM.
pub fn records(
    suite: &'static str,
    name: &str,
    params: &str,
    us: f64,
    bytes: f64,
    flops: f64,
    ceil: Option<Ceilings>,
) -> Vec<Record> {
    let gbs = bytes / (us * 1e3);
    let gfs = flops / (us * 1e3);
    let rec = |name: String, value: f64, unit: &'static str| Record {
        suite,
        name,
        params: params.to_string(),
        value,
        unit,
    };
    let mut out = vec![
        rec(name.to_string(), us, "µs"),
        rec(format!("{name} GB/s"), gbs, "GB/s"),
    ];
    if flops > 0.0 {
        out.push(rec(format!("{name} GFLOP/s"), gfs, "GFLOP/s"));
    }
    let frac = |gb: f64, gf: f64| {
        let f = |v: f64, peak: f64| if peak > 0.0 { v / peak } else { 0.0 };
        f(gbs, gb).max(f(gfs, gf))
    };
    if let Some(c) = ceil {
        if c.bandwidth_gbs > 0.0 {
            let v = frac(c.bandwidth_gbs, c.gemm_gflops);
            out.push(rec(format!("{name} of ceiling"), v, "fraction"));
        }
        if c.spec_gbs > 0.0 {
            let v = frac(c.spec_gbs, c.spec_gflops);
            out.push(rec(format!("{name} of spec peak"), v, "fraction"));
        }
    }
    out
}

/// Runs `op` unprofiled as a warm-up (pipeline creation, the GPU's clock: at least 50 ms of
/// it), then `reps` times in one recording (copies 1, 2, …), and returns the median time in
/// µs of the dispatches named `name` (GPU timestamps where the adapter has them, wall clock
/// after a wait otherwise).
fn time_op(
    dev: &Device,
    reps: usize,
    name: &str,
    op: &mut dyn FnMut(&mut Recorder, usize) -> spikescan_runtime::Result<()>,
) -> Result<f64, Error> {
    let was = dev.profiling();
    let result = (|| -> Result<f64, Error> {
        // Warm-up, unprofiled: a GPU left idle while the host made the inputs runs its first
        // milliseconds of work at a fraction of its clock (an H200 idles at 345 MHz of
        // 1,980): rounds of the op, each twice as many as the last (from reps, at most
        // 4,096), until 50 ms have passed (one round where a round is slower).
        dev.set_profiling(false);
        let t0 = std::time::Instant::now();
        let mut n = reps;
        for _ in 0..16 {
            let mut rec = dev.recorder("bench warm-up");
            for i in 0..n {
                op(&mut rec, i)?;
            }
            rec.submit()?;
            dev.wait("bench warm-up")?;
            if t0.elapsed() >= std::time::Duration::from_millis(50) {
                break;
            }
            n = (2 * n).min(4096);
        }
        dev.set_profiling(true);
        dev.take_profile();
        let mut rec = dev.recorder("bench");
        for i in 0..reps {
            op(&mut rec, i + 1)?;
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
    })();
    dev.set_profiling(was);
    result
}

/// A prompt scan's random inputs and outputs on the device (packed layout `l`).
struct ScanInputs {
    l: ScanLayout,
    u: Tensor,
    dt: Tensor,
    bc: Tensor,
    z: Tensor,
    packed: Tensor,
    y: Tensor,
    h: Tensor,
}

impl ScanInputs {
    fn new(dev: &Device, rng: &mut Rng, l: ScanLayout) -> spikescan_runtime::Result<Self> {
        let sd = ScanData::random(rng, &l);
        let (b, len, d, n) = (l.batch, l.len, l.d, l.n);
        Ok(Self {
            u: dev.tensor_f32(&sd.u, &[b, len, d])?,
            dt: dev.tensor_f32(&sd.dt, &[b, len, d])?,
            bc: dev.tensor_f32(&sd.bc, &[b, len, 2 * n])?,
            z: dev.tensor_f32(&sd.z, &[b, len, d])?,
            packed: dev.tensor_f32(&sd.packed_weights()?, &[d, n + 2])?,
            y: dev.alloc(&[b, len, d], DType::F32)?,
            h: dev.alloc(&[b, d, n], DType::F32)?,
            l,
        })
    }

    /// The scan with `variant` (None: the one `selective_scan_into` picks).
    fn run(
        &self,
        rec: &mut Recorder,
        variant: Option<ScanVariant>,
    ) -> spikescan_runtime::Result<()> {
        let w = ScanWeights {
            packed: &self.packed,
        };
        let (l, y, h) = (&self.l, &self.y, &self.h);
        match variant {
            None => {
                selective_scan_into(rec, l, &self.u, &self.dt, &self.bc, &self.z, &w, None, y, h)
            }
            Some(v) => selective_scan_with(
                rec, v, l, &self.u, &self.dt, &self.bc, &self.z, &w, None, y, h,
            ),
        }
    }

    /// (bytes, FLOPs): u, dt, z, y per channel and token; B, C per token.
    fn cost(&self) -> (f64, f64) {
        let (b, len, d, n) = (self.l.batch, self.l.len, self.l.d, self.l.n);
        (
            (4 * b * len * (4 * d + 2 * n)) as f64,
            (7 * b * len * d * n) as f64,
        )
    }
}

fn f32s(dev: &Device, rng: &mut Rng, shape: &[usize]) -> spikescan_runtime::Result<Tensor> {
    let n: usize = shape.iter().product();
    dev.tensor_f32(&rng.vec(n, -1.0, 1.0), shape)
}

/// The ceilings: a copy (`y = 1·x + 0`) over 2^25 floats (2^22 with `quick`) and the f32 GEMM
/// at 4096³ (512³ with `quick`), with their records.
pub fn ceilings(
    dev: &Device,
    quick: bool,
    reps: usize,
    spec: Option<SpecPeak>,
) -> Result<(Ceilings, Vec<Record>), Error> {
    let mut rng = Rng::new(7);
    let spec = spec.or_else(|| spec_peak(&dev.adapter().name));
    let sheet = Ceilings {
        spec_gbs: spec.map_or(0.0, |s| s.bandwidth_gbs),
        spec_gflops: spec.map_or(0.0, |s| s.fp32_tflops * 1e3),
        ..Ceilings::default()
    };
    let reps = reps.max(3);
    let n = if quick { 1 << 22 } else { 1 << 25 };
    let xs = [f32s(dev, &mut rng, &[n])?, f32s(dev, &mut rng, &[n])?];
    let ys = [dev.alloc(&[n], DType::F32)?, dev.alloc(&[n], DType::F32)?];
    let us = time_op(dev, reps, "scale", &mut |rec, i| {
        let copy = Unary::Affine {
            alpha: 1.0,
            beta: 0.0,
        };
        unary_into(rec, copy, &xs[i % 2], &ys[i % 2])
    })?;
    let mut out = records(
        "kernel",
        "copy (scale) — bandwidth ceiling",
        &format!("n={n}"),
        us,
        8.0 * n as f64,
        0.0,
        Some(sheet),
    );
    let bw = 8.0 * n as f64 / (us * 1e3);
    let s = if quick { 512 } else { 4096 };
    let (a, b) = (f32s(dev, &mut rng, &[s, s])?, f32s(dev, &mut rng, &[s, s])?);
    let c = dev.alloc(&[s, s], DType::F32)?;
    let g = Gemm::linear(s, s, s);
    let us = time_op(dev, reps, "matmul", &mut |rec, _| {
        gemm_into(rec, &g, &a, &b, None, &c)
    })?;
    out.extend(records(
        "kernel",
        "dense GEMM f32 — compute ceiling",
        &format!("{s}^3"),
        us,
        12.0 * (s * s) as f64,
        g.flops() as f64,
        Some(sheet),
    ));
    let ceil = Ceilings {
        bandwidth_gbs: bw,
        gemm_gflops: g.flops() as f64 / (us * 1e3),
        ..sheet
    };
    if dev.caps().f16 {
        // The same GEMM with f16 weights (f32 activations and accumulation).
        let wh = dev.weight_f16(&rng.vec(s * s, -1.0, 1.0), &[s, s])?;
        let us = time_op(dev, reps, "matmul", &mut |rec, _| {
            gemm_into(rec, &g, &a, &wh, None, &c)
        })?;
        out.extend(records(
            "kernel",
            "dense GEMM, f16 weights",
            &format!("{s}^3"),
            us,
            10.0 * (s * s) as f64,
            g.flops() as f64,
            Some(ceil),
        ));
    }
    Ok((ceil, out))
}

/// Per-layer records from the dispatches of one profiled pass (`timings`): one group per
/// distinct (op, shape) in order of first appearance, its median time over the dispatches of
/// that shape (a model's blocks repeat each shape), GB/s, GFLOP/s and fraction of `ceil`.
pub fn layer_records(
    model: &str,
    params: &str,
    timings: &[OpTiming],
    ceil: Ceilings,
) -> Vec<Record> {
    let mut order: Vec<(&str, &str)> = Vec::new();
    let mut groups: HashMap<(&str, &str), Vec<&OpTiming>> = HashMap::new();
    for t in timings {
        let key = (t.info.name, t.info.shape.as_str());
        groups.entry(key).or_insert_with(|| {
            order.push(key);
            Vec::new()
        });
        groups.get_mut(&key).expect("just inserted").push(t);
    }
    let mut out = Vec::new();
    for key in order {
        let g = &groups[&key];
        let us = median(g.iter().map(|t| t.micros).collect());
        out.extend(records(
            "layer",
            &format!("{model} · {}", key.0),
            &format!("{params} {} (x{})", key.1, g.len()),
            us,
            g[0].info.bytes as f64,
            g[0].info.flops as f64,
            Some(ceil),
        ));
    }
    let total: f64 = timings.iter().map(|t| t.micros).sum();
    out.push(Record {
        suite: "layer",
        name: format!("{model} · all dispatches"),
        params: format!("{params} ({} dispatches)", timings.len()),
        value: total,
        unit: "µs",
    });
    out
}

/// Kernel microbenchmarks at named shapes from the real models, median of `reps` runs after a
/// warm-up; the bandwidth-bound kernels (LIF, RMSNorm, the decode update) rotate through
/// enough input copies to pass 128 MiB, so no timed run reads cached data (two copies with
/// `quick`). The first records are this device's measured ceilings; every other record
/// reports its fraction of them. `filter` keeps the kernels whose name or shape contains it
/// (case-insensitive; the ceilings always run).
pub fn kernels(
    dev: &Device,
    quick: bool,
    reps: usize,
    filter: Option<&str>,
    spec: Option<SpecPeak>,
) -> Result<(Ceilings, Vec<Record>), Error> {
    let mut rng = Rng::new(42);
    let reps = reps.max(3);
    let (ceil, mut out) = ceilings(dev, quick, reps, spec)?;
    let filter = filter.map(str::to_lowercase);
    let want = |name: &str, params: &str| {
        filter
            .as_deref()
            .is_none_or(|f| name.to_lowercase().contains(f) || params.to_lowercase().contains(f))
    };
    // Copies of a kernel's inputs to rotate through so that no timed run finds its data in
    // the cache: enough to pass 128 MiB (at most one per run); two with --quick.
    let copies = |bytes: usize| {
        if quick {
            2
        } else {
            ((128usize << 20) / bytes.max(1)).clamp(2, reps)
        }
    };
    // A shape whose largest tensor exceeds this device's storage-binding limit (lavapipe's
    // 128 MiB, for the widest Mamba shapes) is recorded as skipped instead of failing the run.
    let limit = dev.limits().max_storage_buffer_binding_size;
    let mut skipped = Vec::new();
    let mut fits = |name: &str, params: &str, bytes: usize| {
        let ok = bytes as u64 <= limit;
        if !ok {
            skipped.push(Record {
                suite: "kernel",
                name: name.to_string(),
                params: format!(
                    "{params} (a {} MiB tensor: over the binding limit)",
                    bytes >> 20
                ),
                value: 0.0,
                unit: "skipped",
            });
        }
        ok
    };
    let time =
        |name: &str, op: &mut dyn FnMut(&mut Recorder, usize) -> spikescan_runtime::Result<()>| {
            time_op(dev, reps, name, op)
        };
    let f32s = |rng: &mut Rng, shape: &[usize]| f32s(dev, rng, shape);
    let mut push = |name: &str, params: String, us: f64, bytes: f64, flops: f64| {
        out.extend(records(
            "kernel",
            name,
            &params,
            us,
            bytes,
            flops,
            Some(ceil),
        ));
    };

    // The ceiling GEMM's operand layouts: both k-contiguous (the ceiling: a Linear layer's
    // x and w, k-major tiles stored as scalars), w as [K, N] (row-major B tiles, stored as
    // vec4s) and both row-major, at the ceiling's shape: which tile path a GPU prefers. Then
    // the wide tiles (128 x 128, 8 x 8 micro-tiles: matmul::plan_wide) in the Linear layout
    // and with w as [K, N], f32 and f16 weights: whether they should become the plan's.
    let s = if quick { 512 } else { 4096 };
    let lin = Gemm::linear(s, s, s);
    let w_kn = Gemm {
        w_strides: [0, 1, s],
        ..lin
    };
    let wg = dev.wg() as usize;
    for (label, g, wide, f16) in [
        ("w [K, N] (row-major B tiles)", w_kn, false, false),
        (
            "x [K, M] and w [K, N] (row-major tiles)",
            Gemm {
                x_strides: [0, 1, s],
                ..w_kn
            },
            false,
            false,
        ),
        ("wide tiles", lin, true, false),
        ("wide tiles, w [K, N]", w_kn, true, false),
        ("wide tiles, f16 weights", lin, true, true),
    ] {
        if (wide && matmul::wide_cols(wg) == 64) || (f16 && !dev.caps().f16) {
            continue;
        }
        let name = format!("dense GEMM f32, {label}");
        let pl = if wide {
            matmul::plan_wide(&g, wg, None, None)
        } else {
            matmul::plan(&g, wg)
        };
        let params = format!("{s}^3 {}", pl.describe());
        if !want(&name, &params) {
            continue;
        }
        let a = f32s(&mut rng, &[s, s])?;
        let b = if f16 {
            dev.weight_f16(&rng.vec(s * s, -1.0, 1.0), &[s, s])?
        } else {
            f32s(&mut rng, &[s, s])?
        };
        let c = dev.alloc(&[s, s], DType::F32)?;
        let us = time("matmul", &mut |rec, _| {
            matmul::gemm_planned(rec, &g, pl, &a, &b, None, &c)
        })?;
        let bytes = if f16 { 10.0 } else { 12.0 } * (s * s) as f64;
        push(&name, params, us, bytes, g.flops() as f64);
    }

    // LIF fused with BN: Spikformer-8-384 block activations (C=384, 14x14 tokens) and
    // Meta-SpikeFormer-8-512's stage 3 (C=512, 14x14), at T = 1 and 4.
    for (t, c_, nt) in [
        (1usize, 384usize, 196usize),
        (4, 384, 196),
        (1, 512, 196),
        (4, 512, 196),
    ] {
        if !want("lif+bn → bits", &format!("T={t} C={c_} N={nt}")) {
            continue;
        }
        let k = copies(4 * t * c_ * nt);
        let xs = (0..k)
            .map(|_| f32s(&mut rng, &[t, 1, c_, nt]))
            .collect::<spikescan_runtime::Result<Vec<_>>>()?;
        let bn = BatchNorm::new(dev, &random_params(&mut rng, c_))?;
        let sp = (0..k)
            .map(|_| PackedSpikes::alloc(dev, &[t, 1, c_, nt]))
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
        );
    }
    // Spike GEMM (fc1, C → 4C), SSA (Spikformer, 8 heads) and SDSA on packed spikes at the
    // 14x14-token stage of Spikformer-8-384 (C=384) and Meta-SpikeFormer-8-512 (C=512), T=1, 4.
    let nt = 196usize;
    let spike_shapes: &[(usize, usize)] = if quick {
        &[(4, 384)]
    } else {
        &[(1, 384), (4, 384), (1, 512), (4, 512)]
    };
    for &(t, c_) in spike_shapes {
        let spikes: Vec<f32> = (0..t * c_ * nt)
            .map(|_| if rng.unit() < 0.2 { 1.0 } else { 0.0 })
            .collect();
        let params = format!("T={t} K={c_} N={nt} Cout={}", 4 * c_);
        if want("spike GEMM", &params) {
            let ps = PackedSpikes::from_host(dev, &spikes, &[t, c_, nt])?;
            let w = f32s(&mut rng, &[4 * c_, c_])?;
            let y = dev.alloc(&[t, 4 * c_, nt], DType::F32)?;
            let us = time("spike_linear", &mut |rec, _| {
                spike_linear_into(rec, &ps, &w, None, &y)
            })?;
            push(
                "spike GEMM (bits × f32)",
                params,
                us,
                (4 * c_ * c_ + 4 * t * 4 * c_ * nt) as f64,
                (2 * t * 4 * c_ * c_ * nt) as f64,
            );
        }
        let q = PackedSpikes::from_host(dev, &spikes, &[t, 1, c_, nt])?;
        let o = PackedSpikes::alloc(dev, &[t, 1, c_, nt])?;
        let params = format!("T={t} C={c_} N={nt} heads=8");
        if want("SSA attention", &params) {
            let us = time("ssa_attn", &mut |rec, _| {
                ssa_into(rec, &q, &q, &q, &Ssa::official(8), &o)
            })?;
            let d = c_ / 8;
            push(
                "SSA attention (q·kᵀv + LIF)",
                params,
                us,
                (t * c_ * nt) as f64 / 2.0,
                (2 * t * 8 * d * d * nt) as f64,
            );
        }
        // SDSA (Spike-driven Transformer V1) on the same spikes.
        let params = format!("T={t} C={c_} N={nt}");
        if want("SDSA", &params) {
            let us = time("sdsa", &mut |rec, _| {
                sdsa_into(rec, &q, &q, &q, &Lif::ATTENTION, &o)
            })?;
            push(
                "SDSA (popcount k·v, LIF, q AND)",
                params,
                us,
                (t * c_ * nt) as f64 / 2.0,
                (2 * t * c_ * nt) as f64,
            );
        }
    }

    // Convolutions: dense 3x3 and the same on packed spikes, at Meta-SpikeFormer-8-512's
    // stage 1 (C=128, 56x56) and stage 2 (C=256, 28x28) (C=64, 28x28 with --quick).
    let conv_shapes: &[(usize, usize)] = if quick {
        &[(64, 28)]
    } else {
        &[(128, 56), (256, 28)]
    };
    for &(cc, hw) in conv_shapes {
        let params = format!("C={cc} H=W={hw}");
        let cwt = f32s(&mut rng, &[cc, cc, 3, 3])?;
        let cy = dev.alloc(&[1, cc, hw, hw], DType::F32)?;
        let conv = Conv2d::new(1, 1);
        let macs = (cc * cc * 9 * hw * hw) as f64;
        if want("conv2d 3x3 f32", &params) {
            let cx = f32s(&mut rng, &[1, cc, hw, hw])?;
            let us = time("conv2d", &mut |rec, _| {
                conv2d_into(rec, &cx, &cwt, None, &conv, &cy)
            })?;
            push(
                "conv2d 3x3 f32",
                params.clone(),
                us,
                4.0 * (2 * cc * hw * hw + cc * cc * 9) as f64,
                2.0 * macs,
            );
        }
        if want("spike conv2d 3x3", &params) {
            let cs: Vec<f32> = (0..cc * hw * hw)
                .map(|_| if rng.unit() < 0.2 { 1.0 } else { 0.0 })
                .collect();
            let cps = PackedSpikes::from_host(dev, &cs, &[1, cc, hw * hw])?;
            let us = time("spike_conv2d", &mut |rec, _| {
                spike_conv2d_into(rec, &cps, [hw, hw], &cwt, None, &conv, &cy)
            })?;
            push(
                "spike conv2d 3x3 (bits × f32)",
                params,
                us,
                (cc * hw * hw) as f64 / 8.0 + 4.0 * (cc * hw * hw + cc * cc * 9) as f64,
                2.0 * macs,
            );
        }
    }

    // Mamba: RMSNorm, causal conv1d and the selective scan at mamba-130m (d_model 768,
    // d_inner 1536) and mamba-1.4b (2048, 4096) shapes for L = 1, 128 and 2048 and batch 1
    // and 8 (the scan target is B=8 L=2048 D=1536 N=16); at L = 1 also the decode step's
    // in-place state update. --quick: mamba-130m, L = 1 and 128.
    let ns = 16usize;
    let mut shapes = Vec::new();
    for (dm, di) in if quick {
        vec![(768usize, 1536usize)]
    } else {
        vec![(768, 1536), (2048, 4096)]
    } {
        for l in if quick {
            vec![1usize, 128]
        } else {
            vec![1, 128, 2048]
        } {
            for bsz in [1usize, 8] {
                shapes.push((bsz, l, dm, di));
            }
        }
    }
    for (bsz, l, dm, di) in shapes {
        let params = format!("rows={} d={dm}", bsz * l);
        if want("RMSNorm", &params) && fits("RMSNorm", &params, 4 * bsz * l * dm) {
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
                params,
                us,
                (8 * bsz * l * dm) as f64,
                (4 * bsz * l * dm) as f64,
            );
        }
        let params = format!("B={bsz} L={l} D={di}");
        if want("causal conv1d", &params) && fits("causal conv1d + SiLU", &params, 8 * bsz * l * di)
        {
            let k = copies(8 * bsz * l * di);
            let xz = (0..k)
                .map(|_| f32s(&mut rng, &[bsz, l, 2 * di]))
                .collect::<spikescan_runtime::Result<Vec<_>>>()?;
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
            let us = time("causal_conv1d", &mut |rec, i| {
                causal_conv1d_into(rec, &cl, &xz[i % k], &cw, &cb, None, &u, &cs)
            })?;
            push(
                "causal conv1d + SiLU",
                params,
                us,
                (8 * bsz * l * di) as f64,
                (8 * bsz * l * di) as f64,
            );
        }
        let up = |v: &Vec<f32>, shape: &[usize]| dev.tensor_f32(v, shape);
        let params = format!("B={bsz} L={l} D={di} N={ns}");
        if want("selective scan", &params) && fits("selective scan", &params, 4 * bsz * l * di) {
            let si = ScanInputs::new(dev, &mut rng, ScanLayout::packed(bsz, l, di, ns))?;
            let us = time("selective_scan", &mut |rec, _| si.run(rec, None))?;
            let (bytes, flops) = si.cost();
            push("selective scan", params, us, bytes, flops);
        }
        // Decode: the in-place state update for one token per sequence, dt_proj fused in
        // (rank R = d_model / 16 as the official configs).
        let r = dm.div_ceil(16);
        let params = format!("B={bsz} D={di} N={ns} R={r}");
        if l == 1 && want("decode state update", &params) {
            let b = bsz;
            let dl = ScanLayout {
                bc_stride: r + 2 * ns,
                b_offset: r,
                c_offset: r + ns,
                ..ScanLayout::packed(b, 1, di, ns)
            };
            let dd = ScanData::random(&mut rng, &dl);
            let (du, dbc, dz) = (
                up(&dd.u, &[b, di])?,
                f32s(&mut rng, &[b, r + 2 * ns])?,
                up(&dd.z, &[b, di])?,
            );
            let wdt = f32s(&mut rng, &[di, r])?;
            let scw = up(&dd.packed_weights()?, &[di, ns + 2])?;
            let sw = ScanWeights { packed: &scw };
            let dtp = DtProj {
                weight: &wdt,
                rank: r,
                offset: 0,
            };
            let k = copies(4 * b * di * ns);
            let states = (0..k)
                .map(|_| up(&dd.h0, &[b, di, ns]))
                .collect::<spikescan_runtime::Result<Vec<_>>>()?;
            let dy = dev.alloc(&[b, di], DType::F32)?;
            let us = time("selective_state_update", &mut |rec, i| {
                selective_state_update(rec, &dl, &du, &dtp, &dbc, &dz, &sw, &states[i % k], &dy)
            })?;
            push(
                "decode state update",
                params,
                us,
                (4 * (b * (2 * di * ns + 3 * di + r + 2 * ns) + di * r)) as f64,
                (b * di * (7 * ns + 2 * r)) as f64,
            );
        }
    }
    // The N <= 16 prompt scan's variants (ops::selective_scan::ScanVariant), to pick one per
    // GPU: the default kernel at B = 1, 2, 4 and 8 (how time grows with the workgroup
    // count) and each other variant at B = 1 and 8, L = 2048, D = 1536 and 4096 (--quick:
    // L = 128, D = 1536). Each shape's inputs are built once for all its variants.
    let (scan_len, scan_dims): (usize, &[usize]) = if quick {
        (128, &[1536])
    } else {
        (2048, &[1536, 4096])
    };
    let default_scan = (
        "selective scan, chunk 16",
        ScanVariant::Register { chunk: 16 },
    );
    let scan_variants = [
        (
            "selective scan, chunk 32",
            ScanVariant::Register { chunk: 32 },
        ),
        ("selective scan, wide kernel", ScanVariant::Wide),
        (
            "selective scan, channel per thread",
            ScanVariant::Channel { chunk: 16 },
        ),
        (
            "selective scan, channel per thread, chunk 32",
            ScanVariant::Channel { chunk: 32 },
        ),
    ];
    for &di in scan_dims {
        for bsz in [1usize, 2, 4, 8] {
            let params = format!("B={bsz} L={scan_len} D={di} N={ns}");
            let run: Vec<(&str, ScanVariant)> = std::iter::once(default_scan)
                .filter(|_| di == 1536)
                .chain(scan_variants.into_iter().filter(|_| bsz == 1 || bsz == 8))
                .filter(|(name, _)| want(name, &params))
                .collect();
            if run.is_empty() || !fits(run[0].0, &params, 4 * bsz * scan_len * di) {
                continue;
            }
            let si = ScanInputs::new(dev, &mut rng, ScanLayout::packed(bsz, scan_len, di, ns))?;
            let (bytes, flops) = si.cost();
            for (name, variant) in run {
                let us = time("selective_scan", &mut |rec, _| si.run(rec, Some(variant)))?;
                push(name, params.clone(), us, bytes, flops);
            }
        }
    }
    // Decode projections: the skinny GEMM (1 to 32 activation rows, each weight read once
    // for all of them) at mamba-130m's in_proj (3072 x 768), out_proj (768 x 1536) and LM
    // head (50280 x 768) for 1, 8 and 32 rows, f32 and (where the adapter has shader-f16)
    // f16 weights. Bytes: the weights once plus the activations in and out.
    // --quick: in_proj at 1 and 8 rows.
    let projections: &[(&str, usize, usize)] = if quick {
        &[("in_proj", 3072, 768)]
    } else {
        &[
            ("in_proj", 3072, 768),
            ("out_proj", 768, 1536),
            ("LM head", 50280, 768),
        ]
    };
    let row_counts: &[usize] = if quick { &[1, 8] } else { &[1, 8, 32] };
    for &(what, n, kd) in projections {
        for &m in row_counts {
            for f16 in [false, true] {
                if f16 && !dev.caps().f16 {
                    continue;
                }
                let name = if f16 {
                    "decode projection, f16 weights"
                } else {
                    "decode projection f32"
                };
                let params = format!("{what} M={m} N={n} K={kd}");
                let wbytes = if f16 { 2 } else { 4 } * n * kd;
                if !want(name, &params) || !fits(name, &params, wbytes) {
                    continue;
                }
                let k = copies(wbytes);
                let ws = (0..k)
                    .map(|_| {
                        let v = rng.vec(n * kd, -1.0, 1.0);
                        if f16 {
                            dev.weight_f16(&v, &[n, kd])
                        } else {
                            dev.tensor_f32(&v, &[n, kd])
                        }
                    })
                    .collect::<spikescan_runtime::Result<Vec<_>>>()?;
                let x = f32s(&mut rng, &[m, kd])?;
                let y = dev.alloc(&[m, n], DType::F32)?;
                let g = Gemm::linear(m, n, kd);
                let us = time("skinny", &mut |rec, i| {
                    gemm_into(rec, &g, &x, &ws[i % k], None, &y)
                })?;
                push(
                    name,
                    params,
                    us,
                    (wbytes + 4 * m * (kd + n)) as f64,
                    g.flops() as f64,
                );
            }
        }
    }
    // LMU memory: the spiking LMUFormer's (M = 512, θ = 128) over a whole clip (Toeplitz,
    // N = 128, batch 8), a long sequence in chunks, and the streaming step (1 and 8 streams).
    let mm = if quick { 256 } else { 512 };
    let (la, lb, lh) = test_matrices(mm, 128.0, 128);
    let mats = LmuMatrices::new(dev, &la, &lb, &lh, mm)?;
    for (ln, lbatch, chunk) in [
        (128usize, if quick { 1 } else { 8 }, 128usize),
        (if quick { 512 } else { 2048 }, 1, 32),
    ] {
        let lu = [
            f32s(&mut rng, &[ln, lbatch])?,
            f32s(&mut rng, &[ln, lbatch])?,
        ];
        if !want("LMU memory", &format!("N={ln} B={lbatch} M={mm}")) {
            continue;
        }
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
                );
            }
        }
    }
    for s in [1usize, 8] {
        if !want("LMU memory step", &format!("S={s} M={mm}")) {
            continue;
        }
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
        );
    }
    out.extend(skipped);
    Ok((ceil, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_sheet_matches_the_most_specific_name() {
        let p = |n: &str| spec_peak(n).map(|s| (s.fp32_tflops, s.bandwidth_gbs));
        assert_eq!(p("NVIDIA H200"), Some((67.0, 4800.0)));
        assert_eq!(p("NVIDIA H100 PCIe"), Some((51.2, 2000.0)));
        assert_eq!(p("NVIDIA H100 80GB HBM3"), Some((67.0, 3350.0)));
        assert_eq!(p("llvmpipe (LLVM 15.0.6, 256 bits)"), None);
    }

    #[test]
    fn records_report_the_spec_fraction_beside_the_measured_one() {
        let c = Ceilings {
            bandwidth_gbs: 100.0,
            gemm_gflops: 1000.0,
            spec_gbs: 200.0,
            spec_gflops: 4000.0,
        };
        // 1 ms for 1 GFLOP and 10 MB: 1000 GFLOP/s, 10 GB/s.
        let r = records("kernel", "k", "p", 1000.0, 1e7, 1e9, Some(c));
        let get = |s: &str| {
            r.iter()
                .find(|r| r.name == format!("k {s}"))
                .map(|r| r.value)
        };
        assert_eq!(get("of ceiling"), Some(1.0));
        assert_eq!(get("of spec peak"), Some(0.25));
        let sheet_only = Ceilings {
            spec_gbs: 200.0,
            ..Ceilings::default()
        };
        let r = records("kernel", "k", "p", 1000.0, 1e7, 0.0, Some(sheet_only));
        assert!(r.iter().all(|r| !r.name.ends_with("of ceiling")));
        assert!(r
            .iter()
            .any(|r| r.name == "k of spec peak" && r.value == 0.05));
    }
}
