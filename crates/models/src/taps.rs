//! Taps: the spike outputs of every LIF layer of a forward pass, by layer name, for tests
//! (spike agreement with a reference) and `--stats` (firing rates).

use spikescan_runtime::{Device, PackedSpikes, Result, Tensor};

/// How a layer's spikes are held on the GPU.
pub enum Tap {
    /// 0/1 values.
    Dense(Tensor),
    /// Packed bits.
    Packed(PackedSpikes),
    /// A residual sum `base + spikes` (the LIF wrote its spikes added to `base`).
    Diff { sum: Tensor, base: Tensor },
}

/// Layer name → spikes, in forward order.
#[derive(Default)]
pub struct Taps {
    pub entries: Vec<(String, Tap)>,
}

impl Taps {
    pub fn put(&mut self, name: impl Into<String>, tap: Tap) {
        self.entries.push((name.into(), tap));
    }

    /// Reads every tap back as 0/1 values (after the recording was submitted).
    pub fn read(&self, dev: &Device) -> Result<Vec<(String, Vec<f32>)>> {
        self.entries
            .iter()
            .map(|(name, tap)| {
                let v = match tap {
                    Tap::Dense(t) => dev.read_f32(t)?,
                    Tap::Packed(p) => p.read(dev)?,
                    Tap::Diff { sum, base } => {
                        let (s, b) = (dev.read_f32(sum)?, dev.read_f32(base)?);
                        s.iter().zip(&b).map(|(s, b)| s - b).collect()
                    }
                };
                Ok((name.clone(), v))
            })
            .collect()
    }
}
