//! The op harness (after llama.cpp's test-backend-ops): every kernel is a set of small cases —
//! a readable parameter string, random inputs, a plain-Rust f64 reference and an error bound.
//! Outputs are poisoned before the run (an unwritten element fails), a guard region after
//! each output catches out-of-bounds writes, and NaN/Inf are reported on their own.
//!
//! Tests run every case on two devices: `native` (f16 and subgroup kernels where the adapter
//! has them) and `plain` (`force_f32` + `no_subgroups`), so the plain twins are tested on a
//! capable GPU too. `spikescan ops` runs the same cases and prints a support matrix.

use std::sync::OnceLock;

use crate::device::{Device, DeviceOptions};
use crate::error::Result;
use crate::spikes::{pack_host, words_for, PackedSpikes};
use crate::tensor::{DType, Tensor};

/// Bit pattern written over every output before a run: a quiet NaN with a payload no kernel
/// produces.
pub const POISON: u32 = 0x7FC0_DEAD;
/// Bytes of poisoned guard region after every output.
pub const GUARD_BYTES: u64 = 256;

/// A small deterministic generator (splitmix64), so a failing case can be replayed by seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit() as f32
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// What a comparison found.
#[derive(Clone, Debug, Default)]
pub struct Check {
    /// Elements compared.
    pub n: usize,
    /// Normalised mean squared error: sum (gpu - ref)^2 / sum ref^2.
    pub nmse: f64,
    /// Largest absolute difference.
    pub max_abs: f64,
    /// Elements that are NaN or Inf where the reference is finite.
    pub nonfinite: usize,
    /// Elements still holding the poison pattern.
    pub unwritten: usize,
    /// Words of the guard region that were overwritten.
    pub guard_hits: usize,
    /// Integer outputs that differ.
    pub mismatches: usize,
    /// Set when the expected output is degenerate (a spike map that never or always fires):
    /// such a case would prove nothing, so it fails.
    pub degenerate: bool,
}

impl Check {
    /// This check with one more mismatch where an op took `got` dispatches instead of the
    /// `want` its path should (a fused path that fell apart still computes the right values).
    pub fn with_dispatches(self, got: usize, want: usize) -> Self {
        Self {
            mismatches: self.mismatches + usize::from(got != want),
            ..self
        }
    }

    /// Ok when every check passes and the error is within `bound`.
    pub fn verdict(&self, bound: f64) -> std::result::Result<(), String> {
        let mut why = Vec::new();
        if self.unwritten > 0 {
            why.push(format!("{} elements never written", self.unwritten));
        }
        if self.guard_hits > 0 {
            why.push(format!(
                "{} guard words overwritten (out-of-bounds write)",
                self.guard_hits
            ));
        }
        if self.nonfinite > 0 {
            why.push(format!(
                "{} NaN/Inf where the reference is finite",
                self.nonfinite
            ));
        }
        if self.degenerate {
            why.push("the expected spikes never or always fire: the case tests nothing".into());
        }
        if self.mismatches > 0 {
            why.push(format!("{} integer mismatches", self.mismatches));
        }
        if self.nmse.is_nan() || self.nmse > bound {
            why.push(format!("nmse {:.3e} over the bound {bound:.0e}", self.nmse));
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join(", "))
        }
    }
    /// Combines the checks of several outputs of one case.
    pub fn merge(mut self, o: Check) -> Check {
        self.n += o.n;
        self.nmse = self.nmse.max(o.nmse);
        self.max_abs = self.max_abs.max(o.max_abs);
        self.nonfinite += o.nonfinite;
        self.unwritten += o.unwritten;
        self.guard_hits += o.guard_hits;
        self.mismatches += o.mismatches;
        self.degenerate |= o.degenerate;
        self
    }
}

/// A poisoned output tensor with a guard region after its data.
pub fn output(dev: &Device, shape: &[usize], dtype: DType) -> Result<Tensor> {
    let bytes = (crate::tensor::numel(shape) * dtype.size()) as u64;
    let cap = (bytes.div_ceil(4) * 4) + GUARD_BYTES;
    let t = dev.alloc_with_capacity(shape, dtype, cap)?;
    let words = (t.capacity() / 4) as usize;
    dev.write(&t, bytemuck::cast_slice(&vec![POISON; words]))?;
    Ok(t)
}

fn read_all_words(dev: &Device, t: &Tensor) -> Result<Vec<u32>> {
    Ok(bytemuck::pod_collect_to_vec(
        &dev.read_buffer(t.buffer(), t.capacity())?,
    ))
}

fn guard_hits(words: &[u32], data_words: usize) -> usize {
    words[data_words..].iter().filter(|&&w| w != POISON).count()
}

/// Compares an f32 output (made by [`output`]) with its f64 reference.
pub fn check_f32(dev: &Device, t: &Tensor, reference: &[f64]) -> Result<Check> {
    assert_eq!(t.numel(), reference.len(), "reference length");
    let words = read_all_words(dev, t)?;
    let mut c = Check {
        n: reference.len(),
        guard_hits: guard_hits(&words, reference.len()),
        ..Check::default()
    };
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&w, &r) in words.iter().zip(reference) {
        if w == POISON {
            c.unwritten += 1;
            continue;
        }
        let g = f32::from_bits(w) as f64;
        if !g.is_finite() {
            if r.is_finite() || (r.is_nan() != g.is_nan()) || (r.is_infinite() && r != g) {
                c.nonfinite += 1;
            }
            continue;
        }
        if !r.is_finite() {
            c.nonfinite += 1;
            continue;
        }
        let d = g - r;
        num += d * d;
        den += r * r;
        c.max_abs = c.max_abs.max(d.abs());
    }
    c.nmse = if den > 0.0 { num / den } else { num };
    Ok(c)
}

/// Compares a u32 output (made by [`output`]) with its expected values.
pub fn check_u32(dev: &Device, t: &Tensor, expected: &[u32]) -> Result<Check> {
    assert_eq!(t.numel(), expected.len(), "expected length");
    let words = read_all_words(dev, t)?;
    let mut c = Check {
        n: expected.len(),
        guard_hits: guard_hits(&words, expected.len()),
        ..Check::default()
    };
    for (&w, &e) in words.iter().zip(expected) {
        if w == POISON && e != POISON {
            c.unwritten += 1;
        } else if w != e {
            c.mismatches += 1;
        }
    }
    Ok(c)
}

/// Which optional feature a case's kernel uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    None,
    F16,
    Subgroups,
}

impl Feature {
    pub fn name(self) -> &'static str {
        match self {
            Feature::None => "plain",
            Feature::F16 => "f16",
            Feature::Subgroups => "subgroups",
        }
    }
    /// Whether `dev` runs the variant this feature selects.
    pub fn active_on(self, dev: &Device) -> bool {
        match self {
            Feature::None => true,
            Feature::F16 => dev.caps().f16,
            Feature::Subgroups => dev.caps().subgroups,
        }
    }
}

type RunFn = Box<dyn Fn(&Device, &mut Rng) -> Result<Check> + Send + Sync>;

/// One op test case.
pub struct Case {
    /// Op name, as in profiles (`matmul`, `conv2d`, …).
    pub op: &'static str,
    /// Readable parameters: `m=7,n=33,k=65,bias`.
    pub params: String,
    /// Input/output dtype column of the support matrix.
    pub dtype: &'static str,
    /// The optional feature the native variant uses (the plain device runs the twin).
    pub feature: Feature,
    /// Largest allowed normalised MSE.
    pub bound: f64,
    pub run: RunFn,
}

impl Case {
    pub fn new(
        op: &'static str,
        params: String,
        bound: f64,
        run: impl Fn(&Device, &mut Rng) -> Result<Check> + Send + Sync + 'static,
    ) -> Self {
        Self {
            op,
            params,
            dtype: "f32",
            feature: Feature::None,
            bound,
            run: Box::new(run),
        }
    }
    pub fn dtype(mut self, d: &'static str) -> Self {
        self.dtype = d;
        self
    }
    pub fn feature(mut self, f: Feature) -> Self {
        self.feature = f;
        self
    }
}

/// The outcome of one case on one device.
pub struct Outcome {
    pub op: &'static str,
    pub params: String,
    pub dtype: &'static str,
    pub variant: &'static str,
    pub device: String,
    pub result: std::result::Result<Check, String>,
}

/// Runs `cases` on `dev`; the seed is derived from each case's name so runs are replayable.
pub fn run_cases(dev: &Device, device_label: &str, cases: &[Case], seed: u64) -> Vec<Outcome> {
    cases
        .iter()
        .map(|c| {
            let mut h = seed;
            for b in c.op.bytes().chain(c.params.bytes()) {
                h = h.wrapping_mul(0x100_0000_01B3).wrapping_add(b as u64);
            }
            let mut rng = Rng::new(h);
            let variant = if c.feature.active_on(dev) {
                c.feature.name()
            } else {
                "plain"
            };
            let result = match (c.run)(dev, &mut rng) {
                Ok(check) => check.verdict(c.bound).map(|_| check),
                Err(e) => Err(format!("error: {e}")),
            };
            Outcome {
                op: c.op,
                params: c.params.clone(),
                dtype: c.dtype,
                variant,
                device: device_label.to_string(),
                result,
            }
        })
        .collect()
}

/// The test devices: `native` (every feature the adapter has), `plain` (the twins) and
/// `wg128` (native's features, the 128-invocation variants).
/// Tests FAIL when there is no adapter: they never skip.
pub fn test_devices() -> &'static [(&'static str, Device)] {
    static DEVICES: OnceLock<Vec<(&'static str, Device)>> = OnceLock::new();
    DEVICES.get_or_init(|| {
        let native = Device::with_options(DeviceOptions::from_env()).unwrap_or_else(|e| {
            panic!(
                "GPU tests need a Vulkan/Metal/DX12 adapter and found none ({e}). \
                 Without a GPU, install Mesa's lavapipe: apt-get install mesa-vulkan-drivers"
            )
        });
        // llvmpipe's LP_NATIVE_VECTOR_WIDTH=128 gives 4-lane subgroups instead of 8: a run
        // meant for them fails rather than silently testing the usual size again.
        if std::env::var("LP_NATIVE_VECTOR_WIDTH").ok().as_deref() == Some("128")
            && native.describe().contains("llvmpipe")
        {
            let got = native.subgroup_sizes();
            assert!(
                got == (4, 4),
                "LP_NATIVE_VECTOR_WIDTH=128, but {} has subgroup sizes {got:?}",
                native.describe()
            );
        }
        let plain = Device::with_options(DeviceOptions {
            force_f32: true,
            no_subgroups: true,
            ..DeviceOptions::from_env()
        })
        .expect("second device on the same adapter");
        // Every kernel's 128-invocation variant (devices that allow fewer than 256), with the
        // adapter's features.
        let wg128 = Device::with_options(DeviceOptions {
            max_invocations: Some(128),
            ..DeviceOptions::from_env()
        })
        .expect("third device on the same adapter");
        assert_eq!(
            wg128.wg(),
            128,
            "a 128-invocation device runs WG128 kernels"
        );
        vec![("native", native), ("plain", plain), ("wg128", wg128)]
    })
}

/// Runs the cases on both test devices, prints one line per run, and panics naming every
/// failure. Also fails when a case list is empty (a sweep that tests nothing).
pub fn assert_cases(cases: Vec<Case>) {
    assert!(!cases.is_empty(), "no cases");
    let mut failures = Vec::new();
    for (label, dev) in test_devices() {
        for o in run_cases(dev, label, &cases, 0x5EED) {
            match &o.result {
                Ok(c) => eprintln!(
                    "ok   {:<14} {:<6} {:<9} {:<7} {:<48} nmse={:.2e} max_abs={:.2e}",
                    o.op, o.dtype, o.variant, o.device, o.params, c.nmse, c.max_abs
                ),
                Err(e) => {
                    eprintln!(
                        "FAIL {} {} {} {} {}: {e}",
                        o.op, o.dtype, o.variant, o.device, o.params
                    );
                    failures.push(format!(
                        "{} [{} {} {}] {}: {e}",
                        o.op, o.dtype, o.variant, o.device, o.params
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Marks `c` degenerate when a 0/1 map with at least 64 entries is all zeros or all ones.
pub fn require_firing(mut c: Check, spikes: &[f32]) -> Check {
    let ones = spikes.iter().filter(|&&s| s != 0.0).count();
    if spikes.len() >= 64 && (ones == 0 || ones == spikes.len()) {
        c.degenerate = true;
    }
    c
}

/// A poisoned packed-spike output of logical `shape`: its raw words (to check) and the view.
pub fn packed_output(dev: &Device, shape: &[usize]) -> Result<(Tensor, PackedSpikes)> {
    let n = *shape.last().unwrap_or(&1);
    let rows: usize = shape[..shape.len().saturating_sub(1)].iter().product();
    let words = output(dev, &[rows, words_for(n)], DType::U32)?;
    let view = PackedSpikes::from_words(words.clone(), shape)?;
    Ok((words, view))
}

/// Compares packed output words with the expected 0/1 map (rows of `n`); a map that never or
/// always fires fails as degenerate.
pub fn check_spikes(dev: &Device, words: &Tensor, want: &[f32], n: usize) -> Result<Check> {
    Ok(require_firing(
        check_u32(dev, words, &pack_host(want, n))?,
        want,
    ))
}

/// Random 0/1 spikes at `rate`, on the host and uploaded packed.
pub fn random_spikes(
    dev: &Device,
    rng: &mut Rng,
    shape: &[usize],
    rate: f64,
) -> Result<(Vec<f32>, PackedSpikes)> {
    let host: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| if rng.unit() < rate { 1.0 } else { 0.0 })
        .collect();
    let packed = PackedSpikes::from_host(dev, &host, shape)?;
    Ok((host, packed))
}

/// f64 copy of host data, for references.
pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}
