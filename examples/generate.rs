//! Generate tokens with a Mamba model, streaming them, then continue two sequences from one
//! prompt's state.
//!
//!     cargo run --example generate -- MODEL_DIR
//!     cargo run --example generate -- tests/fixtures/mamba-hf-tied

use spikescan::models::{Model, Sampling};
use spikescan::Device;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/mamba-hf-tied".into());
    let dev = Device::new()?;
    let Model::Mamba(m) = Model::load(&dev, &dir)? else {
        anyhow::bail!("{dir} is not a Mamba model");
    };
    let prompt = [12u32, 40, 41, 77];
    let out = m.generate(&dev, &prompt, 8, &Sampling::default(), |t| print!("{t} "))?;
    println!("\n{} tokens", out.len());

    // Prefix reuse: the prompt's state seeds both sequences of a batch.
    let mut one = m.new_state(&dev, 1)?;
    let mut rec = dev.recorder("prefix");
    m.prefill(
        &mut rec,
        &dev.tensor_u32(&prompt, &[1, prompt.len()])?,
        &mut one,
        false,
    )?;
    rec.submit()?;
    let mut two = m.new_state(&dev, 2)?;
    two.copy_slot(&dev, 0, &one, 0)?;
    two.copy_slot(&dev, 1, &one, 0)?;
    let mut rec = dev.recorder("step");
    let logits = m.step(&mut rec, &dev.tensor_u32(&[3, 4], &[2])?, &mut two)?;
    let next = m.pick(
        rec,
        &logits,
        &Sampling {
            temperature: 0.8,
            top_k: 10,
            top_p: 0.9,
            seed: 1,
        },
        &mut 7,
    )?;
    println!("two continuations: {next:?}");
    Ok(())
}
