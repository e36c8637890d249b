//! One model, one device, a pool of worker threads: each worker takes the next image off a
//! shared queue, records and submits its own forward pass, and sends its top-1 back. Any
//! number of recordings may be open on one device at once (the activation pool never hands
//! one recording a buffer another's pending work still uses), so the results equal a
//! single-threaded run's.
//!
//!     cargo run --example threads -- [MODEL_DIR] [WORKERS]
//!     cargo run --example threads -- models/spikformer-digits 4

use std::sync::{mpsc, Arc, Mutex};

use spikescan::models::eval::{predict, Heldout};
use spikescan::models::Model;
use spikescan::Device;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "models/spikformer-digits".into());
    let workers: usize = args.next().map_or(Ok(4), |w| w.parse())?;
    let dev = Device::new()?; // shared by every worker (Device is Send + Sync, cheap to clone)
    let model = Arc::new(Model::load(&dev, &dir)?); // so is Model
    let set = Arc::new(Heldout::open(std::path::Path::new(&dir))?);
    let per: usize = set.shape[1..].iter().product();

    // The queue: image indices; the results: (index, top-1).
    let (job_tx, job_rx) = mpsc::channel::<usize>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (out_tx, out_rx) = mpsc::channel::<anyhow::Result<(usize, usize)>>();
    let pool: Vec<_> = (0..workers)
        .map(|_| {
            let (dev, model, set) = (dev.clone(), model.clone(), set.clone());
            let (job_rx, out_tx) = (job_rx.clone(), out_tx.clone());
            std::thread::spawn(move || loop {
                let Ok(i) = job_rx
                    .lock()
                    .map_err(|_| ())
                    .and_then(|r| r.recv().map_err(|_| ()))
                else {
                    return; // the queue is closed
                };
                let mut shape = set.shape.clone();
                shape[0] = 1;
                let image = &set.input[i * per..(i + 1) * per];
                let top1 = predict(&dev, &model, image, &shape, 1).map(|p| (i, p[0]));
                if out_tx.send(top1.map_err(Into::into)).is_err() {
                    return;
                }
            })
        })
        .collect();
    drop(out_tx);
    let n = set.len().min(48);
    for i in 0..n {
        job_tx.send(i)?;
    }
    drop(job_tx);
    let mut threaded = vec![0; n];
    for r in out_rx {
        let (i, top1) = r?;
        threaded[i] = top1;
    }
    for w in pool {
        w.join().map_err(|_| anyhow::anyhow!("a worker panicked"))?;
    }
    // The same images on this thread alone.
    let single = predict(
        &dev,
        &model,
        &set.input[..n * per],
        &{
            let mut s = set.shape.clone();
            s[0] = n;
            s
        },
        1,
    )?;
    let correct = (0..n)
        .filter(|&i| threaded[i] as i64 == set.labels[i])
        .count();
    println!("{workers} workers, {n} images: {correct}/{n} correct");
    anyhow::ensure!(
        threaded == single,
        "threaded results differ from the single-threaded run"
    );
    println!("identical to a single-threaded run");
    Ok(())
}
