//! Stream audio features through an LMUFormer frame by frame, with a snapshot and restore.
//!
//!     cargo run --example stream -- MODEL_DIR [CLIP.wav]
//!     cargo run --example stream -- tests/fixtures/spiking-lmuformer-small   # a synthetic clip

use spikescan::models::lmuformer::LOOKAHEAD;
use spikescan::models::{audio, Model};
use spikescan::Device;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "tests/fixtures/spiking-lmuformer-small".into());
    let dev = Device::new()?;
    let Model::Lmuformer(m) = Model::load(&dev, &dir)? else {
        anyhow::bail!("{dir} is not an LMUFormer");
    };
    let (n, c) = (m.config.seq_len, m.config.in_channels);
    let frames = match args.next() {
        // Kaldi fbank of a 16 kHz WAV, as the official data loader (frames x mel).
        Some(wav) => audio::wav_to_features(std::path::Path::new(&wav), n, c)?,
        None => (0..n * c)
            .map(|i| ((i * 7) % 11) as f32 / 10.0 - 0.5)
            .collect(),
    };
    let mut session = m.stream(&dev, 1)?; // one stream; state lives on the GPU
    let mut snapshot = None;
    for t in 0..n {
        if t == n / 2 {
            snapshot = Some(session.snapshot()?); // save mid-clip ...
        }
        if let Some(logits) = session.push(&frames[t * c..(t + 1) * c])? {
            let best = (0..logits.len())
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
                .unwrap_or(0);
            println!("frame {:>3}: running top-1 {best}", t - LOOKAHEAD);
        }
    }
    let tail = session.finish()?; // the last LOOKAHEAD frames, with the clip's zero padding
    println!("{} more frames at the end of the clip", tail.len());
    if let Some(s) = snapshot {
        session.restore(&s)?; // ... and continue from there with other frames
        println!("restored to frame {}", session.position().0);
    }
    Ok(())
}
