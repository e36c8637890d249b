//! Long sessions: 100,000 decoded Mamba tokens and 100,000 streamed LMUFormer frames on one
//! device, with the device's buffers, pooled bytes, pipelines and uniform chunks sampled
//! along the way: after the warm-up they must stay exactly flat, and the process's resident
//! memory (which on lavapipe includes "GPU" memory) must not grow with the length.
//!
//! `SPIKESCAN_LONG_STEPS` shortens both runs (e.g. for a quick local check); the test
//! command runs the full 100,000.

mod common;

use common::{device, fixture};
use spikescan::models::{Model, Sampling};
use spikescan::Resources;

fn steps() -> usize {
    std::env::var("SPIKESCAN_LONG_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000)
}

/// Resident set size of this process, in KiB (Linux; 0 elsewhere).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct Samples {
    what: &'static str,
    rows: Vec<(usize, Resources, u64)>,
}

impl Samples {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            rows: Vec::new(),
        }
    }
    fn take(&mut self, step: usize, r: Resources) {
        let rss = rss_kib();
        eprintln!(
            "{} step {step:>6}: {} tensor buffers ({} KiB), {} pooled ({} KiB), {} pipelines, \
             {} free uniform chunks, RSS {} MiB",
            self.what,
            r.tensor_buffers,
            r.tensor_bytes >> 10,
            r.pooled_buffers,
            r.pooled_bytes >> 10,
            r.pipelines,
            r.free_uniform_chunks,
            rss >> 10
        );
        self.rows.push((step, r, rss));
    }
    /// From the second sample on (the first is taken after the warm-up), every count is the
    /// same, and RSS grows by less than `rss_slack_mib` from the second to the last.
    fn check_flat(&self, rss_slack_mib: u64) {
        assert!(self.rows.len() >= 3, "{}: too few samples", self.what);
        let (s0, r0, rss0) = self.rows[1];
        for &(s, r, _) in &self.rows[2..] {
            let mut a = r;
            let mut b = r0;
            // Open recordings at a sampling point depend on where the callback runs.
            a.open_recordings = 0;
            b.open_recordings = 0;
            assert_eq!(
                a, b,
                "{}: resources at step {s} differ from step {s0}",
                self.what
            );
        }
        let (s1, _, rss1) = *self.rows.last().unwrap();
        assert!(
            rss1 <= rss0 + (rss_slack_mib << 10),
            "{}: RSS grew from {} MiB at step {s0} to {} MiB at step {s1}",
            self.what,
            rss0 >> 10,
            rss1 >> 10
        );
    }
}

#[test]
fn decoding_100k_tokens_keeps_buffers_pipelines_and_memory_flat() {
    let n = steps();
    let dev = device();
    let Model::Mamba(m) = Model::load(&dev, fixture("mamba-hf-tied")).unwrap() else {
        panic!("not a Mamba model");
    };
    let every = (n / 10).max(1);
    let mut samples = Samples::new("mamba decode");
    samples.take(0, dev.resources());
    let started = std::time::Instant::now();
    let mut seen = 0usize;
    // Greedy: the GPU-paced path (ids stay on the GPU, two steps in flight).
    let sampling = Sampling::default();
    let out = m
        .generate(&dev, &[1, 2, 3, 4], n, &sampling, |_| {
            seen += 1;
            if seen.is_multiple_of(every) {
                samples.take(seen, dev.resources());
            }
        })
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "mamba decode: {n} tokens in {secs:.1} s ({:.0} tokens/s)",
        n as f64 / secs
    );
    assert_eq!((out.len(), seen), (4 + n, n), "prompt + every new token");
    assert!(out.iter().all(|&t| (t as usize) < m.config.vocab_size));
    samples.check_flat(64);
}

#[test]
fn streaming_100k_lmuformer_frames_keeps_buffers_pipelines_and_memory_flat() {
    let n = steps();
    let dev = device();
    let Model::Lmuformer(m) = Model::load(&dev, fixture("spiking-lmuformer-small")).unwrap() else {
        panic!("not an LMUFormer");
    };
    let c = m.config.in_channels;
    let every = (n / 10).max(1);
    let mut samples = Samples::new("lmuformer stream");
    samples.take(0, dev.resources());
    let mut session = m.stream(&dev, 1).unwrap();
    let started = std::time::Instant::now();
    let mut outputs = 0usize;
    let mut frame = vec![0f32; c];
    for t in 0..n {
        for (j, v) in frame.iter_mut().enumerate() {
            *v = (((t * 31 + j * 7) % 23) as f32 / 11.0 - 1.0) * 0.8;
        }
        if let Some(logits) = session.push(&frame).unwrap() {
            assert!(logits.iter().all(|v| v.is_finite()), "frame {t}");
            outputs += 1;
        }
        if (t + 1).is_multiple_of(every) {
            samples.take(t + 1, dev.resources());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "lmuformer stream: {n} frames in {secs:.1} s ({:.0} frames/s)",
        n as f64 / secs
    );
    assert_eq!(
        outputs,
        n - spikescan::models::lmuformer::LOOKAHEAD,
        "one prediction per frame after the lookahead"
    );
    samples.check_flat(64);
}
