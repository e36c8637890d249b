//! Per-op timings and the profile table.

use std::collections::BTreeMap;

/// What a dispatch does, for profiles and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct OpInfo {
    /// Op name in the field's words (`matmul`, `rms_norm`, …).
    pub name: &'static str,
    /// Readable parameters: shapes and variant.
    pub shape: String,
    /// Bytes the op must move at least (inputs read + outputs written).
    pub bytes: u64,
    /// Floating-point operations (a multiply-add counts 2).
    pub flops: u64,
}

/// One timed dispatch.
#[derive(Clone, Debug)]
pub struct OpTiming {
    pub info: OpInfo,
    /// GPU time (timestamp queries) or wall-clock time after a full wait.
    pub micros: f64,
    /// True when the time came from timestamp queries.
    pub gpu_timestamps: bool,
}

impl OpTiming {
    pub fn gbps(&self) -> f64 {
        self.info.bytes as f64 / (self.micros.max(1e-9) * 1e3)
    }
    pub fn gflops(&self) -> f64 {
        self.info.flops as f64 / (self.micros.max(1e-9) * 1e3)
    }
}

/// A per-op table followed by per-name totals.
pub fn format_table(timings: &[OpTiming]) -> String {
    let mut s = String::new();
    let src = if timings.iter().all(|t| t.gpu_timestamps) {
        "GPU timestamps"
    } else {
        "wall clock"
    };
    s.push_str(&format!(
        "{:<4} {:<18} {:<44} {:>10} {:>9} {:>10}   ({src})\n",
        "#", "op", "shape", "µs", "GB/s", "GFLOP/s"
    ));
    for (i, t) in timings.iter().enumerate() {
        s.push_str(&format!(
            "{:<4} {:<18} {:<44} {:>10.1} {:>9.2} {:>10.2}\n",
            i,
            t.info.name,
            truncate(&t.info.shape, 44),
            t.micros,
            t.gbps(),
            t.gflops()
        ));
    }
    let mut by_name: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
    for t in timings {
        let e = by_name.entry(t.info.name).or_default();
        e.0 += 1;
        e.1 += t.micros;
    }
    let total: f64 = timings.iter().map(|t| t.micros).sum();
    s.push_str(&format!("{:-<100}\n", ""));
    for (name, (n, us)) in by_name {
        s.push_str(&format!(
            "{:<18} {:>5} calls {:>12.1} µs {:>6.1}%\n",
            name,
            n,
            us,
            100.0 * us / total.max(1e-9)
        ));
    }
    s.push_str(&format!("total {total:.1} µs\n"));
    s
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}
