//! `--stats`: per-LIF-layer firing rates, synaptic operations and the energy estimate of one
//! forward pass, from its [`Taps`]. SOPs are firing rate x T x the MACs of the layer the
//! spikes feed; E = 4.6 pJ x MACs of the dense first layer + 0.9 pJ x SOPs.

use spikescan_runtime::Device;

use crate::taps::Taps;
use crate::{Model, Result};

/// One LIF layer's activity.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerStats {
    pub layer: String,
    /// Mean spike count per neuron and time step.
    pub firing_rate: f64,
    /// Synaptic operations per sample.
    pub sops: f64,
}

/// A forward pass's activity and energy estimate (per sample).
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub layers: Vec<LayerStats>,
    pub first_layer_macs: f64,
    pub sops: f64,
    pub energy_mj: f64,
}

/// Energy of a MAC of the dense first layer and of a synaptic operation (45 nm, pJ).
pub const E_MAC_PJ: f64 = 4.6;
pub const E_SOP_PJ: f64 = 0.9;

/// Stats of the submitted pass that filled `taps`, for an input of `shape` (`[B, C, H, W]`
/// images, or `[B, frames, mel]` for an LMUFormer, whose costs are per frame); `t` is the
/// model's time steps (images) or the frames (LMUFormer).
pub fn stats(dev: &Device, model: &Model, taps: &Taps, shape: &[usize], t: usize) -> Result<Stats> {
    let spikes = taps.read(dev)?;
    let (fed, first) = if shape.len() == 4 {
        model.synaptic_costs(shape[2], shape[3])
    } else {
        let (fed, first) = model.synaptic_costs(0, 0);
        (fed, first * t as u64)
    };
    let t = t as f64;
    let mut sops = 0.0;
    let layers = spikes
        .iter()
        .map(|(name, s)| {
            let rate = s.iter().map(|&v| v as f64).sum::<f64>() / s.len().max(1) as f64;
            let macs = fed.iter().find(|(n, _)| n == name).map_or(0, |(_, m)| *m) as f64;
            let sop = rate * t * macs;
            sops += sop;
            LayerStats {
                layer: name.clone(),
                firing_rate: rate,
                sops: sop,
            }
        })
        .collect();
    let first = first as f64;
    Ok(Stats {
        layers,
        first_layer_macs: first,
        sops,
        energy_mj: (E_MAC_PJ * first + E_SOP_PJ * sops) * 1e-9,
    })
}
