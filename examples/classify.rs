//! Classify images with a spiking vision model (Spikformer or Meta-SpikeFormer).
//!
//!     cargo run --example classify -- MODEL_DIR IMAGE.png
//!     cargo run --example classify -- tests/fixtures/spikformer-cifar-exact   # a random test image

use spikescan::models::{vision, Model};
use spikescan::Device;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "tests/fixtures/spikformer-cifar-exact".into());
    let dev = Device::new()?; // one device, shared by every model and thread
    let model = Model::load(&dev, &dir)?;
    let spec = model
        .image_spec()
        .ok_or_else(|| anyhow::anyhow!("{dir} is not an image model"))?;
    let (h, w) = (spec.height, spec.width);
    let pixels = match args.next() {
        Some(img) => vision::load_image(std::path::Path::new(&img), h, w, spec.crop_pct)?,
        None => (0..3 * h * w)
            .map(|i| ((i * 7) % 13) as f32 / 6.0 - 1.0)
            .collect(),
    };
    let x = dev.tensor_f32(&pixels, &[1, 3, h, w])?;
    let mut taps = spikescan::models::taps::Taps::default();
    let mut rec = dev.recorder("classify");
    let logits = model.forward(&mut rec, &x, Some(&mut taps))?; // recorded, not yet run
    rec.submit()?; // one submit for the whole forward pass
    let logits = dev.read_f32(&logits)?;
    let best = (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap_or(0);
    println!("class {best} (logit {:.3})", logits[best]);
    for (layer, spikes) in taps.read(&dev)?.iter().take(3) {
        println!(
            "{layer}: firing rate {:.3}",
            spikes.iter().sum::<f32>() / spikes.len() as f32
        );
    }
    Ok(())
}
