//! Spikformer (ZK-Zhou/spikformer), ImageNet (`imagenet/model.py`) and CIFAR
//! (`cifar10/model.py`) variants, run on packed spikes where the inputs are binary.
//!
//! Activations are `[T, B, C, N]` (channels before tokens). Per block:
//! `x = x + proj_lif(proj_bn(proj(attn_lif(q (kᵀ v) · 0.125))))` with q, k, v =
//! `lif(bn(W x))`, then `x = x + fc2_lif(fc2_bn(fc2(fc1_lif(fc1_bn(fc1(x))))))`. The residual
//! stream holds small integers, so q/k/v and fc1 are dense products; proj and fc2 take packed
//! spikes. Readout: mean over tokens, mean over T, `head`.

use serde_json::Value;
use spikescan_loader::Checkpoint;
use spikescan_runtime::ops::batch_norm::BatchNorm;
use spikescan_runtime::ops::conv::{conv2d, spike_conv2d, Conv2d};
use spikescan_runtime::ops::lif::{lif_bits, lif_bits_into, lif_into, Lif};
use spikescan_runtime::ops::matmul::{channel_linear, linear};
use spikescan_runtime::ops::pool::{maxpool2d_bits, MaxPool2d};
use spikescan_runtime::ops::reduce::mean;
use spikescan_runtime::ops::spike_matmul::{spike_linear, unpack};
use spikescan_runtime::ops::ssa::{ssa, Ssa};
use spikescan_runtime::{DType, Device, PackedSpikes, Recorder, Tensor};

use crate::taps::{Tap, Taps};
use crate::{bn_params, cfg_usize, ModelDir, ModelError, Result};

/// Which official code the checkpoint comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `imagenet/model.py`: 1x1 convs; SPS pools after every stage.
    Imagenet,
    /// `cifar10/model.py`: Linear layers with bias; SPS pools after the last two stages.
    Cifar,
}

/// config.json of a Spikformer.
#[derive(Clone, Debug, PartialEq)]
pub struct SpikformerConfig {
    pub variant: Variant,
    pub t: usize,
    pub img_size_h: usize,
    pub img_size_w: usize,
    pub in_channels: usize,
    pub num_classes: usize,
    pub embed_dims: usize,
    pub num_heads: usize,
    pub mlp_hidden: usize,
    pub depths: usize,
    /// Evaluation crop ratio for image inputs (the official imagenet.yml uses 1.0).
    pub crop_pct: f64,
}

impl SpikformerConfig {
    pub fn from_json(cfg: &Value, path: &std::path::Path) -> Result<Self> {
        let bad = |m: String| ModelError::Config {
            path: path.to_path_buf(),
            message: m,
        };
        let variant = match cfg
            .get("variant")
            .and_then(Value::as_str)
            .unwrap_or("imagenet")
        {
            "imagenet" => Variant::Imagenet,
            "cifar" => Variant::Cifar,
            v => {
                return Err(bad(format!(
                    "\"variant\" must be \"imagenet\" or \"cifar\", got \"{v}\""
                )))
            }
        };
        let u = |k: &str, d: Option<usize>| cfg_usize(cfg, path, k, d);
        let embed = u("embed_dims", None)?;
        let heads = u("num_heads", None)?;
        let ratio = match cfg.get("mlp_ratios") {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| bad(format!("\"mlp_ratios\" must be a number, got {v}")))?,
            None => return Err(bad("missing \"mlp_ratios\"".into())),
        };
        let c = Self {
            variant,
            t: u("T", Some(4))?,
            img_size_h: u("img_size_h", None)?,
            img_size_w: u("img_size_w", None)?,
            in_channels: u("in_channels", None)?,
            num_classes: u("num_classes", None)?,
            embed_dims: embed,
            num_heads: heads,
            mlp_hidden: (embed as f64 * ratio) as usize,
            depths: u("depths", None)?,
            crop_pct: match cfg.get("crop_pct") {
                Some(v) => v
                    .as_f64()
                    .filter(|x| *x > 0.0 && *x <= 1.0)
                    .ok_or_else(|| bad(format!("\"crop_pct\" must be in (0, 1], got {v}")))?,
                None => 1.0,
            },
        };
        if c.t == 0 || embed < 8 || heads == 0 || embed % heads != 0 || c.mlp_hidden == 0 {
            return Err(bad(format!(
                "T = {}, embed_dims = {embed} (at least 8: SPS's first conv has embed_dims / 8 channels), num_heads = {heads} (dividing embed_dims): invalid",
                c.t
            )));
        }
        if c.img_size_h == 0 || c.img_size_w == 0 || c.in_channels == 0 || c.num_classes == 0 {
            return Err(bad(format!(
                "img_size_h = {}, img_size_w = {}, in_channels = {}, num_classes = {}: all must be positive",
                c.img_size_h, c.img_size_w, c.in_channels, c.num_classes
            )));
        }
        let (dim, side) = (crate::MAX_DIM, crate::MAX_IMAGE_SIDE);
        crate::check_sizes(
            path,
            &[
                ("T", c.t, side),
                ("img_size_h", c.img_size_h, side),
                ("img_size_w", c.img_size_w, side),
                ("in_channels", c.in_channels, dim),
                ("num_classes", c.num_classes, dim),
                ("embed_dims", c.embed_dims, dim),
                ("mlp hidden size", c.mlp_hidden, dim),
                ("depths", c.depths, crate::MAX_LAYERS),
            ],
        )?;
        crate::check_parameters(path, &c.weight_shapes())?;
        Ok(c)
    }

    /// Every tensor the model reads, with its shape (the official state_dict minus the
    /// unused `norm1`/`norm2` and `num_batches_tracked`).
    pub fn weight_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let c = self.embed_dims;
        let chans = [self.in_channels, c / 8, c / 4, c / 2, c];
        let mut v = Vec::new();
        let bn = |v: &mut Vec<(String, Vec<usize>)>, p: &str, n: usize| {
            for f in ["weight", "bias", "running_mean", "running_var"] {
                v.push((format!("{p}.{f}"), vec![n]));
            }
        };
        for i in 0..4 {
            let sfx = if i == 0 { String::new() } else { i.to_string() };
            v.push((
                format!("patch_embed.proj_conv{sfx}.weight"),
                vec![chans[i + 1], chans[i], 3, 3],
            ));
            bn(&mut v, &format!("patch_embed.proj_bn{sfx}"), chans[i + 1]);
        }
        v.push(("patch_embed.rpe_conv.weight".into(), vec![c, c, 3, 3]));
        bn(&mut v, "patch_embed.rpe_bn", c);
        let cifar = self.variant == Variant::Cifar;
        let h = self.mlp_hidden;
        for i in 0..self.depths {
            let layers = [
                ("attn.q", 1, c, c, false),
                ("attn.k", 1, c, c, false),
                ("attn.v", 1, c, c, false),
                ("attn.proj", 1, c, c, true),
                ("mlp.fc1", 2, h, c, true),
                ("mlp.fc2", 2, c, h, true),
            ];
            for (name, dims, out, inp, bias) in layers {
                let p = format!("block.{i}.{name}");
                if cifar {
                    v.push((format!("{p}_linear.weight"), vec![out, inp]));
                    v.push((format!("{p}_linear.bias"), vec![out]));
                } else {
                    let mut shape = vec![out, inp];
                    shape.extend(std::iter::repeat_n(1, dims));
                    v.push((format!("{p}_conv.weight"), shape));
                    if bias {
                        v.push((format!("{p}_conv.bias"), vec![out]));
                    }
                }
                bn(&mut v, &format!("{p}_bn"), out);
            }
        }
        v.push(("head.weight".into(), vec![self.num_classes, c]));
        v.push(("head.bias".into(), vec![self.num_classes]));
        v
    }

    /// Every LIF layer and the multiply-accumulates, per sample and time step, of the layer
    /// its spikes feed (for synaptic-operation counts), for an `h x w` input.
    pub fn lif_layers(&self, h: usize, w: usize) -> Vec<(String, u64)> {
        let c = self.embed_dims;
        let chans = [self.in_channels, c / 8, c / 4, c / 2, c];
        let pools = |i: usize| self.variant == Variant::Imagenet || i >= 2;
        let (mut hh, mut ww) = (h, w);
        let mut v = Vec::new();
        let mut sizes = Vec::new();
        for i in 0..4 {
            sizes.push((hh, ww));
            if pools(i) {
                hh = (hh - 1) / 2 + 1;
                ww = (ww - 1) / 2 + 1;
            }
        }
        let n = (hh * ww) as u64;
        for i in 0..4 {
            let sfx = if i == 0 { String::new() } else { i.to_string() };
            // The next conv runs at the pooled size.
            let (nh, nw) = if i < 3 { sizes[i + 1] } else { (hh, ww) };
            let next = (chans[i + 1] * 9) as u64
                * (if i < 3 { chans[i + 2] } else { c }) as u64
                * (nh * nw) as u64;
            v.push((format!("patch_embed.proj_lif{sfx}"), next));
        }
        let (c64, h64) = (c as u64, self.mlp_hidden as u64);
        let d = (c / self.num_heads) as u64;
        v.push(("patch_embed.rpe_lif".into(), 3 * c64 * c64 * n));
        for i in 0..self.depths {
            let a = format!("block.{i}.attn");
            let heads = self.num_heads as u64;
            v.push((format!("{a}.q_lif"), n * d * d * heads));
            v.push((format!("{a}.k_lif"), n * d * d * heads));
            v.push((format!("{a}.v_lif"), n * d * d * heads));
            v.push((format!("{a}.attn_lif"), c64 * c64 * n));
            v.push((format!("{a}.proj_lif"), h64 * c64 * n));
            v.push((format!("block.{i}.mlp.fc1_lif"), c64 * h64 * n));
            let next = if i + 1 < self.depths {
                3 * c64 * c64 * n
            } else {
                c64 * self.num_classes as u64
            };
            v.push((format!("block.{i}.mlp.fc2_lif"), next));
        }
        v
    }

    /// Multiply-accumulates of the dense first layer (the image convolution), per sample.
    pub fn first_layer_macs(&self, h: usize, w: usize) -> u64 {
        (self.in_channels * 9 * (self.embed_dims / 8) * h * w) as u64
    }

    /// Spatial size after the SPS stem.
    pub fn tokens_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let pools = match self.variant {
            Variant::Imagenet => 4,
            Variant::Cifar => 2,
        };
        let (mut h, mut w) = (h, w);
        for _ in 0..pools {
            h = (h - 1) / 2 + 1;
            w = (w - 1) / 2 + 1;
        }
        (h, w)
    }
}

struct ConvBn {
    w: Tensor,
    bn: BatchNorm,
}

struct LinBn {
    w: Tensor,
    b: Option<Tensor>,
    bn: BatchNorm,
}

struct Block {
    q: LinBn,
    k: LinBn,
    v: LinBn,
    proj: LinBn,
    fc1: LinBn,
    fc2: LinBn,
}

/// Packed spike maps `[T, B, C, h * w]` with their spatial size.
#[derive(Clone, Debug)]
pub struct SpikeMap {
    pub spikes: PackedSpikes,
    pub hw: [usize; 2],
}

/// The input of an SPS stage.
pub enum SpsInput {
    /// The image `[B, C, H, W]`, fed to every time step (stage 0).
    Image(Tensor),
    /// The previous stage's (pooled) spikes.
    Spikes(SpikeMap),
}

/// A loaded Spikformer.
pub struct Spikformer {
    pub config: SpikformerConfig,
    sps: Vec<ConvBn>,
    rpe: ConvBn,
    blocks: Vec<Block>,
    head_w: Tensor,
    head_b: Tensor,
    micro: crate::MicroBatches,
}

fn load_bn(dev: &Device, ck: &Checkpoint, prefix: &str, c: usize) -> Result<BatchNorm> {
    Ok(BatchNorm::new(dev, &bn_params(ck, prefix, c)?)?)
}

impl Spikformer {
    /// Loads the weights of `md` (whose architecture is "spikformer").
    pub fn load(dev: &Device, md: &ModelDir) -> Result<Self> {
        let config = SpikformerConfig::from_json(&md.config, &md.path.join("config.json"))?;
        let ck = &md.checkpoint;
        let up = md.uploader(dev)?;
        let c = config.embed_dims;
        let chans = [config.in_channels, c / 8, c / 4, c / 2, c];
        let mut sps = Vec::new();
        for i in 0..4 {
            let sfx = if i == 0 { String::new() } else { i.to_string() };
            let shape = [chans[i + 1], chans[i], 3, 3];
            sps.push(ConvBn {
                w: up.conv(
                    &ck.f32(&format!("patch_embed.proj_conv{sfx}.weight"), &shape)?,
                    &shape,
                    1,
                )?,
                bn: load_bn(dev, ck, &format!("patch_embed.proj_bn{sfx}"), chans[i + 1])?,
            });
        }
        let rpe = ConvBn {
            w: up.conv(
                &ck.f32("patch_embed.rpe_conv.weight", &[c, c, 3, 3])?,
                &[c, c, 3, 3],
                1,
            )?,
            bn: load_bn(dev, ck, "patch_embed.rpe_bn", c)?,
        };
        let cifar = config.variant == Variant::Cifar;
        // ImageNet: Conv1d [out, in, 1] (q/k/v without bias) and Conv2d [out, in, 1, 1];
        // CIFAR: Linear [out, in] with bias.
        let lin = |prefix: &str,
                   conv_dims: usize,
                   out: usize,
                   inp: usize,
                   bias: bool,
                   bn: &str|
         -> Result<LinBn> {
            let (wkey, shape): (String, Vec<usize>) = if cifar {
                (format!("{prefix}_linear.weight"), vec![out, inp])
            } else {
                let mut s = vec![out, inp];
                s.extend(std::iter::repeat_n(1, conv_dims));
                (format!("{prefix}_conv.weight"), s)
            };
            let w = up.matrix(&ck.f32(&wkey, &shape)?, &[out, inp])?;
            let b = if bias || cifar {
                let key = wkey.replace(".weight", ".bias");
                Some(dev.weight_f32(&ck.f32(&key, &[out])?, &[out])?)
            } else {
                None
            };
            Ok(LinBn {
                w,
                b,
                bn: load_bn(dev, ck, bn, out)?,
            })
        };
        let h = config.mlp_hidden;
        let mut blocks = Vec::new();
        for i in 0..config.depths {
            let a = format!("block.{i}.attn");
            let m = format!("block.{i}.mlp");
            blocks.push(Block {
                q: lin(&format!("{a}.q"), 1, c, c, false, &format!("{a}.q_bn"))?,
                k: lin(&format!("{a}.k"), 1, c, c, false, &format!("{a}.k_bn"))?,
                v: lin(&format!("{a}.v"), 1, c, c, false, &format!("{a}.v_bn"))?,
                proj: lin(&format!("{a}.proj"), 1, c, c, true, &format!("{a}.proj_bn"))?,
                fc1: lin(&format!("{m}.fc1"), 2, h, c, true, &format!("{m}.fc1_bn"))?,
                fc2: lin(&format!("{m}.fc2"), 2, c, h, true, &format!("{m}.fc2_bn"))?,
            });
        }
        let k = config.num_classes;
        let head_w = up.matrix(&ck.f32("head.weight", &[k, c])?, &[k, c])?;
        let head_b = dev.weight_f32(&ck.f32("head.bias", &[k])?, &[k])?;
        Ok(Self {
            config,
            sps,
            rpe,
            blocks,
            head_w,
            head_b,
            micro: crate::MicroBatches::default(),
        })
    }

    /// Checks an input batch `[B, C, H, W]`.
    pub fn check_input(&self, shape: &[usize]) -> Result<()> {
        let c = &self.config;
        if shape.len() != 4 || shape[1] != c.in_channels || shape[0] == 0 {
            return Err(ModelError::Input(format!(
                "input must be [B, {}, H, W] images, got {shape:?}",
                c.in_channels
            )));
        }
        let (h, w) = c.tokens_hw(shape[2], shape[3]);
        if shape[2] < 16 || shape[3] < 16 || h == 0 || w == 0 {
            return Err(ModelError::Input(format!(
                "input {shape:?} is too small for the SPS stem"
            )));
        }
        Ok(())
    }

    /// SPS stage `i`: conv 3x3 → BN → LIF, as packed spikes `[T, B, C, h * w]` (before the
    /// stage's max-pool). Stage 0 takes the image `[B, C, H, W]` (fed to every step); later
    /// stages take the previous stage's (pooled) spikes of spatial size `hw`.
    pub fn sps_stage(
        &self,
        rec: &mut Recorder,
        i: usize,
        x: &SpsInput,
        taps: Option<&mut Taps>,
    ) -> Result<SpikeMap> {
        let t = self.config.t;
        let s = &self.sps[i];
        let (y, b) = match x {
            SpsInput::Image(img) => (
                conv2d(rec, img, &s.w, None, &Conv2d::new(1, 1))?,
                img.dim(0),
            ),
            SpsInput::Spikes(m) => {
                let sh = m.spikes.shape().to_vec();
                let flat = m.spikes.reshape(&[sh[0] * sh[1], sh[2], sh[3]])?;
                (
                    spike_conv2d(rec, &flat, m.hw, &s.w, None, &Conv2d::new(1, 1))?,
                    sh[1],
                )
            }
        };
        let ys = y.shape().to_vec();
        let out = PackedSpikes::alloc_in(rec, &[t, b, ys[1], ys[2] * ys[3]])?;
        lif_bits_into(rec, &y, &Lif::STANDARD, Some(&s.bn), &out)?;
        if let Some(tp) = taps {
            let sfx = if i == 0 { String::new() } else { i.to_string() };
            tp.put(
                format!("patch_embed.proj_lif{sfx}"),
                Tap::Packed(out.clone()),
            );
        }
        Ok(SpikeMap {
            spikes: out,
            hw: [ys[2], ys[3]],
        })
    }

    /// Whether SPS stage `i` is followed by a max-pool in this variant.
    pub fn pools_after(&self, stage: usize) -> bool {
        match self.config.variant {
            Variant::Imagenet => true,
            Variant::Cifar => stage >= 2,
        }
    }

    /// Max-pool 3x3 s2 p1 of packed spikes (an OR over each window).
    pub fn pool(&self, rec: &mut Recorder, x: &SpikeMap) -> Result<SpikeMap> {
        let sh = x.spikes.shape().to_vec();
        let flat = x.spikes.reshape(&[sh[0] * sh[1], sh[2], sh[3]])?;
        let (y, hw) = maxpool2d_bits(rec, &flat, x.hw, &MaxPool2d::new(3, 2, 1))?;
        Ok(SpikeMap {
            spikes: y.reshape(&[sh[0], sh[1], sh[2], hw[0] * hw[1]])?,
            hw,
        })
    }

    /// `rpe_lif(rpe_bn(rpe_conv(x_feat))) + x_feat`, as `[T, B, C, N]` f32 (values 0, 1, 2).
    pub fn rpe(
        &self,
        rec: &mut Recorder,
        x_feat: &SpikeMap,
        taps: Option<&mut Taps>,
    ) -> Result<Tensor> {
        let sh = x_feat.spikes.shape().to_vec();
        let flat = x_feat.spikes.reshape(&[sh[0] * sh[1], sh[2], sh[3]])?;
        let y = spike_conv2d(rec, &flat, x_feat.hw, &self.rpe.w, None, &Conv2d::new(1, 1))?;
        let y = y.reshape(&sh)?;
        let feat = unpack(rec, &x_feat.spikes)?;
        let out = rec.alloc(&sh, DType::F32)?;
        lif_into(
            rec,
            &y,
            &Lif::STANDARD,
            Some(&self.rpe.bn),
            Some(&feat),
            &out,
        )?;
        if let Some(tp) = taps {
            tp.put(
                "patch_embed.rpe_lif",
                Tap::Diff {
                    sum: out.clone(),
                    base: feat,
                },
            );
        }
        Ok(out)
    }

    /// The SPS stem: image `[B, C, H, W]` → `[T, B, C, N]`.
    pub fn sps(
        &self,
        rec: &mut Recorder,
        img: &Tensor,
        mut taps: Option<&mut Taps>,
    ) -> Result<Tensor> {
        let mut x = self.sps_stage(rec, 0, &SpsInput::Image(img.clone()), taps.as_deref_mut())?;
        for i in 0..4 {
            if i > 0 {
                x = self.sps_stage(rec, i, &SpsInput::Spikes(x), taps.as_deref_mut())?;
            }
            if self.pools_after(i) {
                x = self.pool(rec, &x)?;
            }
        }
        self.rpe(rec, &x, taps)
    }

    fn dense_lif_bits(&self, rec: &mut Recorder, l: &LinBn, x: &Tensor) -> Result<PackedSpikes> {
        let s = x.shape().to_vec();
        let y = channel_linear(
            rec,
            &x.reshape(&[s[0] * s[1], s[2], s[3]])?,
            &l.w,
            l.b.as_ref(),
        )?;
        let out_c = y.dim(1);
        let y = y.reshape(&[s[0], s[1], out_c, s[3]])?;
        Ok(lif_bits(rec, &y, &Lif::STANDARD, Some(&l.bn))?)
    }

    fn spike_lif_residual(
        &self,
        rec: &mut Recorder,
        l: &LinBn,
        s: &PackedSpikes,
        residual: &Tensor,
    ) -> Result<Tensor> {
        let y = spike_linear(rec, s, &l.w, l.b.as_ref())?;
        let out = rec.alloc(residual.shape(), DType::F32)?;
        lif_into(rec, &y, &Lif::STANDARD, Some(&l.bn), Some(residual), &out)?;
        Ok(out)
    }

    /// q, k, v spikes of block `i` from its input `x [T, B, C, N]`.
    pub fn qkv(&self, rec: &mut Recorder, i: usize, x: &Tensor) -> Result<[PackedSpikes; 3]> {
        let b = &self.blocks[i];
        Ok([
            self.dense_lif_bits(rec, &b.q, x)?,
            self.dense_lif_bits(rec, &b.k, x)?,
            self.dense_lif_bits(rec, &b.v, x)?,
        ])
    }

    /// `attn_lif((q (kᵀ v)) · 0.125)`.
    pub fn attention(
        &self,
        rec: &mut Recorder,
        q: &PackedSpikes,
        k: &PackedSpikes,
        v: &PackedSpikes,
    ) -> Result<PackedSpikes> {
        Ok(ssa(rec, q, k, v, &Ssa::official(self.config.num_heads))?)
    }

    /// `x + proj_lif(proj_bn(proj(attn)))`.
    pub fn proj(
        &self,
        rec: &mut Recorder,
        i: usize,
        attn: &PackedSpikes,
        x: &Tensor,
    ) -> Result<Tensor> {
        self.spike_lif_residual(rec, &self.blocks[i].proj, attn, x)
    }

    /// `fc1_lif(fc1_bn(fc1(x)))`.
    pub fn fc1(&self, rec: &mut Recorder, i: usize, x: &Tensor) -> Result<PackedSpikes> {
        self.dense_lif_bits(rec, &self.blocks[i].fc1, x)
    }

    /// `x + fc2_lif(fc2_bn(fc2(h)))`.
    pub fn fc2(
        &self,
        rec: &mut Recorder,
        i: usize,
        h: &PackedSpikes,
        x: &Tensor,
    ) -> Result<Tensor> {
        self.spike_lif_residual(rec, &self.blocks[i].fc2, h, x)
    }

    /// Mean over tokens, then over T, then `head`: `[B, classes]`.
    pub fn readout(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        let m = mean(rec, x, 3)?;
        let m = mean(rec, &m, 0)?;
        Ok(linear(rec, &m, &self.head_w, Some(&self.head_b))?)
    }

    /// Logits `[B, classes]` of images `[B, C, H, W]` (already normalised). With `taps`,
    /// every LIF layer's spikes are kept under the official module names. A batch whose
    /// activations exceed one storage binding records in micro-batches (one pass's result).
    pub fn forward(
        &self,
        rec: &mut Recorder,
        img: &Tensor,
        taps: Option<&mut Taps>,
    ) -> Result<Tensor> {
        self.check_input(img.shape())?;
        self.micro.forward(rec, img, taps, |rec, x, taps| {
            self.forward_pass(rec, x, taps)
        })
    }

    fn forward_pass(
        &self,
        rec: &mut Recorder,
        img: &Tensor,
        mut taps: Option<&mut Taps>,
    ) -> Result<Tensor> {
        let mut x = self.sps(rec, img, taps.as_deref_mut())?;
        for i in 0..self.blocks.len() {
            let [q, k, v] = self.qkv(rec, i, &x)?;
            let attn = self.attention(rec, &q, &k, &v)?;
            let x1 = self.proj(rec, i, &attn, &x)?;
            let h = self.fc1(rec, i, &x1)?;
            let x2 = self.fc2(rec, i, &h, &x1)?;
            if let Some(tp) = taps.as_deref_mut() {
                let a = format!("block.{i}.attn");
                tp.put(format!("{a}.q_lif"), Tap::Packed(q));
                tp.put(format!("{a}.k_lif"), Tap::Packed(k));
                tp.put(format!("{a}.v_lif"), Tap::Packed(v));
                tp.put(format!("{a}.attn_lif"), Tap::Packed(attn));
                tp.put(
                    format!("{a}.proj_lif"),
                    Tap::Diff {
                        sum: x1.clone(),
                        base: x.clone(),
                    },
                );
                tp.put(format!("block.{i}.mlp.fc1_lif"), Tap::Packed(h));
                tp.put(
                    format!("block.{i}.mlp.fc2_lif"),
                    Tap::Diff {
                        sum: x2.clone(),
                        base: x1,
                    },
                );
            }
            x = x2;
        }
        self.readout(rec, &x)
    }

    /// Runs a batch: uploads, records one forward, submits, reads the logits back.
    pub fn run(&self, dev: &Device, images: &[f32], shape: &[usize]) -> Result<Vec<f32>> {
        crate::run_images(
            dev,
            images,
            shape,
            "spikformer",
            |s| self.check_input(s),
            |rec, x| self.forward(rec, x, None),
        )
    }
}
