//! Many threads on one device: N threads × M forward passes of different models (the bundled
//! spiking vision models, both LMUFormers and the Mamba language model, with generation),
//! every result bit-identical to a single-threaded run.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::device;
use spikescan::models::eval::Heldout;
use spikescan::models::{Model, ModelDir, Sampling};
use spikescan::Device;

const MODELS: &[&str] = &[
    "spikformer-digits",
    "meta-spikeformer-digits",
    "lmuformer-digits",
    "spiking-lmuformer-digits",
    "mamba-pydoc",
];
const THREADS: usize = 4;
/// Forward passes per thread.
const PASSES: usize = 10;

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(name)
}

/// One unit of work: (model index, input index).
type Job = (usize, usize);

struct Loaded {
    model: Model,
    set: Heldout,
}

/// Runs job `(m, i)`: a classifier's logits for held-out input `i` (batch 2), or Mamba's
/// prompt logits for window `i` and a greedy continuation of it.
fn run(dev: &Device, models: &[Loaded], (m, i): Job) -> Vec<u32> {
    let Loaded { model, set } = &models[m];
    match model {
        Model::Mamba(lm) => {
            let l = set.shape[1];
            let ids: Vec<u32> = set.input[i * l..i * l + 24]
                .iter()
                .map(|&x| x as u32)
                .collect();
            let logits = lm.logits(dev, &ids, 1).unwrap();
            let gen = lm
                .generate(dev, &ids[..8], 6, &Sampling::default(), |_| {})
                .unwrap();
            let mut out: Vec<u32> = logits.iter().map(|v| v.to_bits()).collect();
            out.extend(gen);
            out
        }
        _ => {
            let per: usize = set.shape[1..].iter().product();
            let i = i % (set.len() - 1);
            let mut shape = set.shape.clone();
            shape[0] = 2;
            let x = dev
                .tensor_f32(&set.input[i * per..(i + 2) * per], &shape)
                .unwrap();
            let mut rec = dev.recorder("thread test");
            let y = model.forward(&mut rec, &x, None).unwrap();
            rec.submit().unwrap();
            dev.read_f32(&y)
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        }
    }
}

#[test]
fn threads_sharing_one_device_get_the_single_threaded_results() {
    let dev = device();
    let models: Arc<Vec<Loaded>> = Arc::new(
        MODELS
            .iter()
            .map(|name| Loaded {
                model: Model::from_dir(&dev, &ModelDir::open(dir(name)).unwrap()).unwrap(),
                set: Heldout::open(&dir(name)).unwrap(),
            })
            .collect(),
    );
    // Every thread runs every model, in its own order, on its own inputs.
    let jobs: Vec<Vec<Job>> = (0..THREADS)
        .map(|t| {
            (0..PASSES)
                .map(|k| ((t + 3 * k) % MODELS.len(), (t * PASSES + k) % 7))
                .collect()
        })
        .collect();
    let single: Vec<Vec<Vec<u32>>> = jobs
        .iter()
        .map(|js| js.iter().map(|&j| run(&dev, &models, j)).collect())
        .collect();
    let warm = dev.resources();
    let started = std::time::Instant::now();
    let handles: Vec<_> = jobs
        .iter()
        .cloned()
        .map(|js| {
            let (dev, models) = (dev.clone(), models.clone());
            std::thread::spawn(move || {
                js.iter()
                    .map(|&j| run(&dev, &models, j))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let threaded: Vec<Vec<Vec<u32>>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    eprintln!(
        "{THREADS} threads x {PASSES} passes over {} models: {:.1} s",
        MODELS.len(),
        started.elapsed().as_secs_f64()
    );
    for (t, (got, want)) in threaded.iter().zip(&single).enumerate() {
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            let (m, i) = jobs[t][k];
            assert!(
                g == w,
                "thread {t}, pass {k}: {} on input {i} differs from the single-threaded run",
                MODELS[m]
            );
        }
    }
    let after = dev.resources();
    eprintln!("resources warm {warm:?}\n          after {after:?}");
    assert_eq!(after.open_recordings, 0);
    assert_eq!(
        after.pipelines, warm.pipelines,
        "no new pipeline for the same shapes"
    );
    // Concurrent passes hold at most one pass's activations per thread more.
    let pool = |r: spikescan::Resources| r.pooled_bytes + r.tensor_bytes;
    assert!(
        pool(after) <= pool(warm) * THREADS as u64,
        "{} bytes after, {} warm",
        pool(after),
        pool(warm)
    );
}
