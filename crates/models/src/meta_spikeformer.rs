//! Meta-SpikeFormer (Spike-driven Transformer V2; BICLab/Spike-Driven-Transformer-V2,
//! `classification/models.py`, `Spiking_vit_MetaFormer`).
//!
//! Convolutions that follow a LIF take packed spikes; BatchNorms that feed a LIF are fused
//! into it, the others are folded at load time into the convolution before them. RepConv's
//! BN-and-pad border is the BN(0) value per channel, given to the depthwise 3x3 as its padding
//! value (never a dense 3x3 merge).
//!
//! Readout: the token mean goes through the final `lif`, and `head` (and `head_kd` when
//! `kd`, the eval output being their average) read those spikes — the official code since
//! commit d95ad13 (2024-03-25) and at its current head (35f245f). Before d95ad13 (e.g. at
//! 03cc73e) `head` read the token mean itself (the membrane input of `lif`) while `head_kd`
//! read the spikes; a checkpoint trained with that code sets `"head_input": "membrane"`.

use serde_json::Value;
use spikescan_runtime::ops::batch_norm::{BatchNorm, BatchNormParams};
use spikescan_runtime::ops::conv::{
    conv2d, conv2d_pad_values_into, conv2d_shape, spike_conv2d, Conv2d,
};
use spikescan_runtime::ops::elementwise::{add, scale};
use spikescan_runtime::ops::lif::{lif, lif_bits_into, Lif};
use spikescan_runtime::ops::matmul::{channel_linear, linear};
use spikescan_runtime::ops::reduce::mean;
use spikescan_runtime::ops::spike_matmul::spike_linear;
use spikescan_runtime::ops::ssa::{ssa, Ssa};
use spikescan_runtime::{DType, Device, PackedSpikes, Recorder, Tensor};

use crate::taps::{Tap, Taps};
use crate::{bn_params, cfg_usize, ModelDir, ModelError, Result, Uploader};

/// config.json of a Meta-SpikeFormer.
#[derive(Clone, Debug, PartialEq)]
pub struct MetaSpikeformerConfig {
    pub t: usize,
    pub kd: bool,
    pub img_size_h: usize,
    pub img_size_w: usize,
    pub in_channels: usize,
    pub num_classes: usize,
    pub embed_dim: [usize; 4],
    pub num_heads: usize,
    pub mlp_ratio: usize,
    /// Evaluation crop ratio for image inputs (0.875: resize to 256, crop 224).
    pub crop_pct: f64,
    /// What `head` reads (config key `head_input`).
    pub head_input: HeadInput,
}

/// The input of Meta-SpikeFormer's `head`: the readout changed upstream at commit d95ad13.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HeadInput {
    /// `"spikes"` (default): `head(lif(mean))`, the official code since d95ad13 (2024-03-25).
    #[default]
    Spikes,
    /// `"membrane"`: `head(mean)`, the official code before d95ad13 (e.g. 03cc73e).
    Membrane,
}

impl MetaSpikeformerConfig {
    pub fn from_json(cfg: &Value, path: &std::path::Path) -> Result<Self> {
        let bad = |m: String| ModelError::Config {
            path: path.to_path_buf(),
            message: m,
        };
        let u = |k: &str, d: Option<usize>| cfg_usize(cfg, path, k, d);
        let e = cfg
            .get("embed_dim")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 4)
            .and_then(|a| {
                a.iter()
                    .map(|v| v.as_u64().map(|x| x as usize))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| {
                bad(
                    "\"embed_dim\" must be a list of four integers, e.g. [96, 192, 384, 480]"
                        .into(),
                )
            })?;
        let c = Self {
            t: u("T", Some(1))?,
            kd: match cfg.get("kd") {
                None => false,
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| bad(format!("\"kd\" must be true or false, got {v}")))?,
            },
            img_size_h: u("img_size_h", Some(224))?,
            img_size_w: u("img_size_w", Some(224))?,
            in_channels: u("in_channels", Some(3))?,
            num_classes: u("num_classes", None)?,
            embed_dim: [e[0], e[1], e[2], e[3]],
            num_heads: u("num_heads", Some(8))?,
            mlp_ratio: u("mlp_ratios", Some(4))?,
            crop_pct: cfg.get("crop_pct").and_then(Value::as_f64).unwrap_or(0.875),
            head_input: match cfg.get("head_input") {
                None => HeadInput::Spikes,
                Some(v) => match v.as_str() {
                    Some("spikes") => HeadInput::Spikes,
                    Some("membrane") => HeadInput::Membrane,
                    _ => {
                        return Err(bad(format!(
                            "\"head_input\" must be \"spikes\" (the official code since \
                             commit d95ad13) or \"membrane\" (before it), got {v}"
                        )))
                    }
                },
            },
        };
        if c.t == 0 || e.contains(&0) || e[0] % 2 != 0 || c.num_heads == 0 || c.mlp_ratio == 0 {
            return Err(bad(format!(
                "invalid sizes: T = {}, embed_dim = {e:?}, num_heads = {}",
                c.t, c.num_heads
            )));
        }
        for &d in &e[2..] {
            if d % c.num_heads != 0 {
                return Err(bad(format!(
                    "embed_dim {d} is not divisible by num_heads = {}",
                    c.num_heads
                )));
            }
        }
        if c.img_size_h == 0 || c.img_size_w == 0 || c.in_channels == 0 || c.num_classes == 0 {
            return Err(bad(format!(
                "img_size_h = {}, img_size_w = {}, in_channels = {}, num_classes = {}: all must be positive",
                c.img_size_h, c.img_size_w, c.in_channels, c.num_classes
            )));
        }
        if !(c.crop_pct > 0.0 && c.crop_pct.is_finite()) {
            return Err(bad(format!(
                "\"crop_pct\" must be a positive number, got {}",
                c.crop_pct
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
                ("embed_dim[0]", e[0], dim),
                ("embed_dim[1]", e[1], dim),
                ("embed_dim[2]", e[2], dim),
                ("embed_dim[3]", e[3], dim),
                ("mlp_ratios", c.mlp_ratio, 64),
            ],
        )?;
        crate::check_parameters(path, &c.weight_shapes())?;
        Ok(c)
    }
}

impl MetaSpikeformerConfig {
    /// Every LIF layer with the MACs (per sample and time step) of the layer its spikes feed,
    /// and the MACs of the dense first convolution, for an `h x w` input.
    pub fn synaptic_costs(&self, h: usize, w: usize) -> (Vec<(String, u64)>, u64) {
        let e = self.embed_dim;
        let r = self.mlp_ratio as u64;
        let down = |x: usize, s: usize| (x - 1) / s + 1;
        let (mut hh, mut ww) = (down(h, 2), down(w, 2));
        let first = (self.in_channels * 49 * (e[0] / 2) * hh * ww) as u64;
        let mut v = Vec::new();
        let conv_block = |v: &mut Vec<(String, u64)>, p: &str, c: u64, n: u64| {
            v.push((format!("{p}.Conv.lif1"), c * 2 * c * n));
            v.push((format!("{p}.Conv.lif2"), 2 * c * 49 * n));
            v.push((format!("{p}.lif1"), c * r * c * 9 * n));
            v.push((format!("{p}.lif2"), r * c * c * 9 * n));
        };
        conv_block(
            &mut v,
            "ConvBlock1_1.0",
            (e[0] / 2) as u64,
            (hh * ww) as u64,
        );
        let encode = |v: &mut Vec<(String, u64)>,
                      p: &str,
                      cin: usize,
                      cout: usize,
                      s: usize,
                      hh: &mut usize,
                      ww: &mut usize| {
            *hh = down(*hh, s);
            *ww = down(*ww, s);
            v.push((
                format!("{p}.encode_lif"),
                (cin * cout * 9 * *hh * *ww) as u64,
            ));
        };
        encode(&mut v, "downsample1_2", e[0] / 2, e[0], 2, &mut hh, &mut ww);
        conv_block(&mut v, "ConvBlock1_2.0", e[0] as u64, (hh * ww) as u64);
        encode(&mut v, "downsample2", e[0], e[1], 2, &mut hh, &mut ww);
        conv_block(&mut v, "ConvBlock2_1.0", e[1] as u64, (hh * ww) as u64);
        conv_block(&mut v, "ConvBlock2_2.0", e[1] as u64, (hh * ww) as u64);
        encode(&mut v, "downsample3", e[1], e[2], 2, &mut hh, &mut ww);
        let heads = self.num_heads as u64;
        let block = |v: &mut Vec<(String, u64)>, p: &str, c: u64, n: u64| {
            let d = c / heads;
            v.push((format!("{p}.attn.head_lif"), 3 * c * c * n));
            for x in ["q", "k", "v"] {
                v.push((format!("{p}.attn.{x}_lif"), n * d * d * heads));
            }
            v.push((format!("{p}.attn.attn_lif"), c * c * n));
            v.push((format!("{p}.mlp.fc1_lif"), c * r * c * n));
            v.push((format!("{p}.mlp.fc2_lif"), r * c * c * n));
        };
        for i in 0..6 {
            block(
                &mut v,
                &format!("block3.{i}"),
                e[2] as u64,
                (hh * ww) as u64,
            );
        }
        encode(&mut v, "downsample4", e[2], e[3], 1, &mut hh, &mut ww);
        for i in 0..2 {
            block(
                &mut v,
                &format!("block4.{i}"),
                e[3] as u64,
                (hh * ww) as u64,
            );
        }
        v.push((
            "lif".into(),
            if self.kd {
                (e[3] * self.num_classes) as u64
            } else {
                0
            },
        ));
        (v, first)
    }
}

impl MetaSpikeformerConfig {
    /// Every tensor the model reads, with its shape (official key names).
    pub fn weight_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let e = self.embed_dim;
        let r = self.mlp_ratio;
        let mut v: Vec<(String, Vec<usize>)> = Vec::new();
        let bn = |v: &mut Vec<(String, Vec<usize>)>, p: &str, c: usize| {
            for f in ["weight", "bias", "running_mean", "running_var"] {
                v.push((format!("{p}.{f}"), vec![c]));
            }
        };
        let downs = [
            ("downsample1_1", self.in_channels, e[0] / 2, 7),
            ("downsample1_2", e[0] / 2, e[0], 3),
            ("downsample2", e[0], e[1], 3),
            ("downsample3", e[1], e[2], 3),
            ("downsample4", e[2], e[3], 3),
        ];
        let cbs = [
            ("ConvBlock1_1.0", e[0] / 2),
            ("ConvBlock1_2.0", e[0]),
            ("ConvBlock2_1.0", e[1]),
            ("ConvBlock2_2.0", e[1]),
        ];
        for (p, cin, cout, k) in downs {
            v.push((format!("{p}.encode_conv.weight"), vec![cout, cin, k, k]));
            v.push((format!("{p}.encode_conv.bias"), vec![cout]));
            bn(&mut v, &format!("{p}.encode_bn"), cout);
        }
        for (p, c) in cbs {
            v.push((format!("{p}.Conv.pwconv1.weight"), vec![2 * c, c, 1, 1]));
            bn(&mut v, &format!("{p}.Conv.bn1"), 2 * c);
            v.push((format!("{p}.Conv.dwconv.weight"), vec![2 * c, 1, 7, 7]));
            v.push((format!("{p}.Conv.pwconv2.weight"), vec![c, 2 * c, 1, 1]));
            bn(&mut v, &format!("{p}.Conv.bn2"), c);
            v.push((format!("{p}.conv1.weight"), vec![r * c, c, 3, 3]));
            bn(&mut v, &format!("{p}.bn1"), r * c);
            v.push((format!("{p}.conv2.weight"), vec![c, r * c, 3, 3]));
            bn(&mut v, &format!("{p}.bn2"), c);
        }
        for (stage, n, c) in [(3, 6, e[2]), (4, 2, e[3])] {
            for i in 0..n {
                let a = format!("block{stage}.{i}.attn");
                for x in ["q", "k", "v", "proj"] {
                    let p = format!("{a}.{x}_conv");
                    v.push((format!("{p}.0.body.0.weight"), vec![c, c, 1, 1]));
                    bn(&mut v, &format!("{p}.0.body.1.bn"), c);
                    v.push((format!("{p}.0.body.2.0.weight"), vec![c, 1, 3, 3]));
                    v.push((format!("{p}.0.body.2.1.weight"), vec![c, c, 1, 1]));
                    bn(&mut v, &format!("{p}.0.body.2.2"), c);
                    bn(&mut v, &format!("{p}.1"), c);
                }
                let m = format!("block{stage}.{i}.mlp");
                v.push((format!("{m}.fc1_conv.weight"), vec![r * c, c, 1]));
                v.push((format!("{m}.fc1_conv.bias"), vec![r * c]));
                bn(&mut v, &format!("{m}.fc1_bn"), r * c);
                v.push((format!("{m}.fc2_conv.weight"), vec![c, r * c, 1]));
                v.push((format!("{m}.fc2_conv.bias"), vec![c]));
                bn(&mut v, &format!("{m}.fc2_bn"), c);
            }
        }
        let heads: &[&str] = if self.kd {
            &["head", "head_kd"]
        } else {
            &["head"]
        };
        for h in heads {
            v.push((format!("{h}.weight"), vec![self.num_classes, e[3]]));
            v.push((format!("{h}.bias"), vec![self.num_classes]));
        }
        v
    }
}

/// A convolution with the BatchNorms after it folded in.
struct Folded {
    w: Tensor,
    b: Tensor,
}

fn fold(
    up: Uploader,
    mut w: Vec<f32>,
    shape: &[usize],
    bias: Option<Vec<f32>>,
    bns: &[BatchNormParams],
) -> Result<Folded> {
    let mut b = bias;
    for bn in bns {
        b = Some(bn.fold_into(&mut w, b.as_deref())?);
    }
    let b = b.expect("at least one BatchNorm folds in");
    Ok(Folded {
        w: up.conv(&w, shape, 1)?,
        b: up.dev.weight_f32(&b, &[shape[0]])?,
    })
}

struct Down {
    conv: Folded,
    c: Conv2d,
    first: bool,
}

struct SepConv {
    pw1: Tensor,
    bn1: BatchNorm,
    dw: Tensor,
    pw2: Folded,
}

struct ConvBlock {
    sep: SepConv,
    conv1: Tensor,
    bn1: BatchNorm,
    conv2: Folded,
}

struct RepConv {
    c1: Folded,
    dw: Tensor,
    c2: Folded,
}

struct MsBlock {
    q: (RepConv, BatchNorm),
    k: (RepConv, BatchNorm),
    v: (RepConv, BatchNorm),
    proj: RepConv,
    fc1_w: Tensor,
    fc1_b: Tensor,
    fc1_bn: BatchNorm,
    fc2: Folded,
}

/// A loaded Meta-SpikeFormer.
pub struct MetaSpikeformer {
    pub config: MetaSpikeformerConfig,
    downs: Vec<Down>,
    conv_blocks: Vec<ConvBlock>,
    blocks: Vec<MsBlock>,
    head: (Tensor, Tensor),
    head_kd: Option<(Tensor, Tensor)>,
    micro: crate::MicroBatches,
}

/// The units of the network in order: `(official prefix, kind)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Down(usize),
    ConvBlock(usize),
    Block(usize),
}

impl MetaSpikeformer {
    /// The forward order of units with their official module names.
    pub fn units() -> Vec<(String, Unit)> {
        let mut v = vec![
            ("downsample1_1".to_string(), Unit::Down(0)),
            ("ConvBlock1_1.0".into(), Unit::ConvBlock(0)),
            ("downsample1_2".into(), Unit::Down(1)),
            ("ConvBlock1_2.0".into(), Unit::ConvBlock(1)),
            ("downsample2".into(), Unit::Down(2)),
            ("ConvBlock2_1.0".into(), Unit::ConvBlock(2)),
            ("ConvBlock2_2.0".into(), Unit::ConvBlock(3)),
            ("downsample3".into(), Unit::Down(3)),
        ];
        v.extend((0..6).map(|i| (format!("block3.{i}"), Unit::Block(i))));
        v.push(("downsample4".into(), Unit::Down(4)));
        v.extend((0..2).map(|i| (format!("block4.{i}"), Unit::Block(6 + i))));
        v
    }

    pub fn load(dev: &Device, md: &ModelDir) -> Result<Self> {
        let config = MetaSpikeformerConfig::from_json(&md.config, &md.path.join("config.json"))?;
        let ck = &md.checkpoint;
        let e = config.embed_dim;
        let r = config.mlp_ratio;
        let w = |key: &str, shape: &[usize]| -> Result<Vec<f32>> { Ok(ck.f32(key, shape)?) };
        let up = md.uploader(dev)?;
        let gpu =
            |v: Vec<f32>, shape: &[usize]| -> Result<Tensor> { Ok(dev.weight_f32(&v, shape)?) };
        // A GEMM operand (a linear's or a dense convolution's weight).
        let mat = |v: Vec<f32>, shape: &[usize]| up.conv(&v, shape, 1);
        let bn = |p: &str, c: usize| -> Result<BatchNorm> {
            Ok(BatchNorm::new(dev, &bn_params(ck, p, c)?)?)
        };

        let down_specs = [
            ("downsample1_1", config.in_channels, e[0] / 2, 7, 2, 3),
            ("downsample1_2", e[0] / 2, e[0], 3, 2, 1),
            ("downsample2", e[0], e[1], 3, 2, 1),
            ("downsample3", e[1], e[2], 3, 2, 1),
            ("downsample4", e[2], e[3], 3, 1, 1),
        ];
        let mut downs = Vec::new();
        for (i, (p, cin, cout, k, s, pad)) in down_specs.into_iter().enumerate() {
            let shape = [cout, cin, k, k];
            let conv = fold(
                up,
                w(&format!("{p}.encode_conv.weight"), &shape)?,
                &shape,
                Some(w(&format!("{p}.encode_conv.bias"), &[cout])?),
                &[bn_params(ck, &format!("{p}.encode_bn"), cout)?],
            )?;
            downs.push(Down {
                conv,
                c: Conv2d::new(s, pad),
                first: i == 0,
            });
        }

        let cb_specs = [
            ("ConvBlock1_1.0", e[0] / 2),
            ("ConvBlock1_2.0", e[0]),
            ("ConvBlock2_1.0", e[1]),
            ("ConvBlock2_2.0", e[1]),
        ];
        let mut conv_blocks = Vec::new();
        for (p, c) in cb_specs {
            let m = 2 * c;
            let sep = SepConv {
                pw1: mat(
                    w(&format!("{p}.Conv.pwconv1.weight"), &[m, c, 1, 1])?,
                    &[m, c],
                )?,
                bn1: bn(&format!("{p}.Conv.bn1"), m)?,
                dw: gpu(
                    w(&format!("{p}.Conv.dwconv.weight"), &[m, 1, 7, 7])?,
                    &[m, 1, 7, 7],
                )?,
                pw2: fold(
                    up,
                    w(&format!("{p}.Conv.pwconv2.weight"), &[c, m, 1, 1])?,
                    &[c, m],
                    None,
                    &[bn_params(ck, &format!("{p}.Conv.bn2"), c)?],
                )?,
            };
            let h = r * c;
            conv_blocks.push(ConvBlock {
                sep,
                conv1: mat(
                    w(&format!("{p}.conv1.weight"), &[h, c, 3, 3])?,
                    &[h, c, 3, 3],
                )?,
                bn1: bn(&format!("{p}.bn1"), h)?,
                conv2: fold(
                    up,
                    w(&format!("{p}.conv2.weight"), &[c, h, 3, 3])?,
                    &[c, h, 3, 3],
                    None,
                    &[bn_params(ck, &format!("{p}.bn2"), c)?],
                )?,
            });
        }

        let repconv = |p: &str, c: usize, outer: Option<BatchNormParams>| -> Result<RepConv> {
            let c1 = fold(
                up,
                w(&format!("{p}.body.0.weight"), &[c, c, 1, 1])?,
                &[c, c],
                None,
                &[bn_params(ck, &format!("{p}.body.1.bn"), c)?],
            )?;
            let dw = gpu(
                w(&format!("{p}.body.2.0.weight"), &[c, 1, 3, 3])?,
                &[c, 1, 3, 3],
            )?;
            let mut bns = vec![bn_params(ck, &format!("{p}.body.2.2"), c)?];
            bns.extend(outer);
            let c2 = fold(
                up,
                w(&format!("{p}.body.2.1.weight"), &[c, c, 1, 1])?,
                &[c, c],
                None,
                &bns,
            )?;
            Ok(RepConv { c1, dw, c2 })
        };
        let mut blocks = Vec::new();
        for (stage, n, c) in [(3, 6, e[2]), (4, 2, e[3])] {
            for i in 0..n {
                let a = format!("block{stage}.{i}.attn");
                let m = format!("block{stage}.{i}.mlp");
                let qkv = |x: &str| -> Result<(RepConv, BatchNorm)> {
                    Ok((
                        repconv(&format!("{a}.{x}_conv.0"), c, None)?,
                        bn(&format!("{a}.{x}_conv.1"), c)?,
                    ))
                };
                let h = r * c;
                blocks.push(MsBlock {
                    q: qkv("q")?,
                    k: qkv("k")?,
                    v: qkv("v")?,
                    proj: repconv(
                        &format!("{a}.proj_conv.0"),
                        c,
                        Some(bn_params(ck, &format!("{a}.proj_conv.1"), c)?),
                    )?,
                    fc1_w: mat(w(&format!("{m}.fc1_conv.weight"), &[h, c, 1])?, &[h, c])?,
                    fc1_b: gpu(w(&format!("{m}.fc1_conv.bias"), &[h])?, &[h])?,
                    fc1_bn: bn(&format!("{m}.fc1_bn"), h)?,
                    fc2: fold(
                        up,
                        w(&format!("{m}.fc2_conv.weight"), &[c, h, 1])?,
                        &[c, h],
                        Some(w(&format!("{m}.fc2_conv.bias"), &[c])?),
                        &[bn_params(ck, &format!("{m}.fc2_bn"), c)?],
                    )?,
                });
            }
        }
        let k = config.num_classes;
        let head = (
            mat(w("head.weight", &[k, e[3]])?, &[k, e[3]])?,
            gpu(w("head.bias", &[k])?, &[k])?,
        );
        let head_kd = if config.kd {
            Some((
                mat(w("head_kd.weight", &[k, e[3]])?, &[k, e[3]])?,
                gpu(w("head_kd.bias", &[k])?, &[k])?,
            ))
        } else {
            None
        };
        Ok(Self {
            config,
            downs,
            conv_blocks,
            blocks,
            head,
            head_kd,
            micro: crate::MicroBatches::default(),
        })
    }

    /// Checks an input batch `[B, C, H, W]`.
    pub fn check_input(&self, shape: &[usize]) -> Result<()> {
        if shape.len() != 4 || shape[1] != self.config.in_channels || shape[0] == 0 {
            return Err(ModelError::Input(format!(
                "input must be [B, {}, H, W] images, got {shape:?}",
                self.config.in_channels
            )));
        }
        if shape[2] < 16 || shape[3] < 16 {
            return Err(ModelError::Input(format!(
                "input {shape:?} is too small (at least 16 x 16)"
            )));
        }
        Ok(())
    }

    /// Spikes of `x [T, B, C, H, W]` (BN fused when given), packed along H·W.
    fn spikes(
        &self,
        rec: &mut Recorder,
        x: &Tensor,
        bn: Option<&BatchNorm>,
        name: String,
        taps: &mut Option<&mut Taps>,
    ) -> Result<PackedSpikes> {
        let s = x.shape();
        let n: usize = s[3..].iter().product();
        let out = PackedSpikes::alloc_in(rec, &[s[0], s[1], s[2], n])?;
        lif_bits_into(rec, x, &Lif::STANDARD, bn, &out)?;
        if let Some(tp) = taps.as_deref_mut() {
            tp.put(name, Tap::Packed(out.clone()));
        }
        Ok(out)
    }

    /// Spike conv2d of `[T, B, C, HW]` spikes with spatial size `hw`: `[T, B, C', H', W']`.
    fn sconv(
        rec: &mut Recorder,
        s: &PackedSpikes,
        hw: [usize; 2],
        w: &Tensor,
        b: Option<&Tensor>,
        c: &Conv2d,
    ) -> Result<Tensor> {
        let sh = s.shape().to_vec();
        let y = spike_conv2d(
            rec,
            &s.reshape(&[sh[0] * sh[1], sh[2], sh[3]])?,
            hw,
            w,
            b,
            c,
        )?;
        let ys = y.shape().to_vec();
        Ok(y.reshape(&[sh[0], sh[1], ys[1], ys[2], ys[3]])?)
    }

    /// Spike 1x1 conv over channels of `[T, B, C, HW]`: `[T, B, C', HW]`.
    fn slin(
        rec: &mut Recorder,
        s: &PackedSpikes,
        w: &Tensor,
        b: Option<&Tensor>,
    ) -> Result<Tensor> {
        Ok(spike_linear(rec, s, w, b)?)
    }

    /// Runs unit `u` (named `name`) on its input: the image `[B, C, H, W]` for the first
    /// downsampling, else the residual stream `[T, B, C, H, W]`.
    pub fn unit(
        &self,
        rec: &mut Recorder,
        name: &str,
        u: Unit,
        x: &Tensor,
        mut taps: Option<&mut Taps>,
    ) -> Result<Tensor> {
        let t = self.config.t;
        match u {
            Unit::Down(i) => {
                let d = &self.downs[i];
                if d.first {
                    let y = conv2d(rec, x, &d.conv.w, Some(&d.conv.b), &d.c)?;
                    let mut shape = vec![t];
                    shape.extend_from_slice(y.shape());
                    let out = rec.alloc(&shape, DType::F32)?;
                    for step in 0..t {
                        rec.copy_at(&y, &out, step as u64 * y.bytes())?;
                    }
                    Ok(out)
                } else {
                    let s = x.shape().to_vec();
                    let sp = self.spikes(rec, x, None, format!("{name}.encode_lif"), &mut taps)?;
                    Self::sconv(rec, &sp, [s[3], s[4]], &d.conv.w, Some(&d.conv.b), &d.c)
                }
            }
            Unit::ConvBlock(i) => {
                let cb = &self.conv_blocks[i];
                let s = x.shape().to_vec();
                let (tb, c, hw) = (s[0] * s[1], s[2], [s[3], s[4]]);
                // SepConv: lif1 → pwconv1 → bn1 → lif2 → dwconv 7x7 → pwconv2 → bn2, plus x.
                let s1 = self.spikes(rec, x, None, format!("{name}.Conv.lif1"), &mut taps)?;
                let h = Self::slin(rec, &s1, &cb.sep.pw1, None)?;
                let hs = h.shape().to_vec();
                let s2 = self.spikes(
                    rec,
                    &h.reshape(&[s[0], s[1], hs[2], hw[0], hw[1]])?,
                    Some(&cb.sep.bn1),
                    format!("{name}.Conv.lif2"),
                    &mut taps,
                )?;
                let m = 2 * c;
                let dw = Self::sconv(rec, &s2, hw, &cb.sep.dw, None, &Conv2d::new(1, 3).groups(m))?;
                let y = channel_linear(
                    rec,
                    &dw.reshape(&[tb, m, hw[0] * hw[1]])?,
                    &cb.sep.pw2.w,
                    Some(&cb.sep.pw2.b),
                )?;
                let x1 = add(rec, x, &y.reshape(&s)?)?;
                // conv1 → bn1 → lif2 → conv2 → bn2, plus x1.
                let s3 = self.spikes(rec, &x1, None, format!("{name}.lif1"), &mut taps)?;
                let h = Self::sconv(rec, &s3, hw, &cb.conv1, None, &Conv2d::new(1, 1))?;
                let s4 = self.spikes(rec, &h, Some(&cb.bn1), format!("{name}.lif2"), &mut taps)?;
                let y = Self::sconv(
                    rec,
                    &s4,
                    hw,
                    &cb.conv2.w,
                    Some(&cb.conv2.b),
                    &Conv2d::new(1, 1),
                )?;
                Ok(add(rec, &x1, &y)?)
            }
            Unit::Block(i) => {
                let b = &self.blocks[i];
                let s = x.shape().to_vec();
                let hw = [s[3], s[4]];
                let hl = self.spikes(rec, x, None, format!("{name}.attn.head_lif"), &mut taps)?;
                let mut qkv = Vec::new();
                for (tag, (rc, outer)) in [("q", &b.q), ("k", &b.k), ("v", &b.v)] {
                    let y = self.repconv(rec, rc, &hl, hw)?;
                    qkv.push(self.spikes(
                        rec,
                        &y.reshape(&s)?,
                        Some(outer),
                        format!("{name}.attn.{tag}_lif"),
                        &mut taps,
                    )?);
                }
                let attn = ssa(
                    rec,
                    &qkv[0],
                    &qkv[1],
                    &qkv[2],
                    &Ssa::official(self.config.num_heads),
                )?;
                if let Some(tp) = taps.as_deref_mut() {
                    tp.put(format!("{name}.attn.attn_lif"), Tap::Packed(attn.clone()));
                }
                let p = self.repconv(rec, &b.proj, &attn, hw)?;
                let x1 = add(rec, x, &p.reshape(&s)?)?;
                let f1 = self.spikes(rec, &x1, None, format!("{name}.mlp.fc1_lif"), &mut taps)?;
                let h = Self::slin(rec, &f1, &b.fc1_w, Some(&b.fc1_b))?;
                let hs = h.shape().to_vec();
                let f2 = self.spikes(
                    rec,
                    &h.reshape(&[hs[0], hs[1], hs[2], hw[0], hw[1]])?,
                    Some(&b.fc1_bn),
                    format!("{name}.mlp.fc2_lif"),
                    &mut taps,
                )?;
                let y = Self::slin(rec, &f2, &b.fc2.w, Some(&b.fc2.b))?;
                Ok(add(rec, &x1, &y.reshape(&s)?)?)
            }
        }
    }

    /// RepConv on spikes `[T, B, C, HW]`: 1x1 (BN folded) → depthwise 3x3 over the BN(0)
    /// border → 1x1 (BNs folded). Returns `[T·B, C', HW]`.
    fn repconv(
        &self,
        rec: &mut Recorder,
        rc: &RepConv,
        s: &PackedSpikes,
        hw: [usize; 2],
    ) -> Result<Tensor> {
        let sh = s.shape().to_vec();
        let tb = sh[0] * sh[1];
        let y = Self::slin(rec, s, &rc.c1.w, Some(&rc.c1.b))?;
        let y = y.reshape(&[tb, sh[2], hw[0], hw[1]])?;
        let c = Conv2d::new(1, 1).groups(sh[2]);
        let os = conv2d_shape(y.shape(), rc.dw.shape(), &c)?;
        let dw = rec.alloc(&os, DType::F32)?;
        // The padded border holds BN(0), which is the folded 1x1's bias.
        conv2d_pad_values_into(rec, &y, &rc.dw, None, &rc.c1.b, &c, &dw)?;
        Ok(channel_linear(
            rec,
            &dw.reshape(&[tb, sh[2], hw[0] * hw[1]])?,
            &rc.c2.w,
            Some(&rc.c2.b),
        )?)
    }

    /// Readout of the final stream `[T, B, C, H, W]`: `[B, classes]`.
    pub fn readout(
        &self,
        rec: &mut Recorder,
        x: &Tensor,
        taps: Option<&mut Taps>,
    ) -> Result<Tensor> {
        let s = x.shape().to_vec();
        let m = mean(rec, &x.reshape(&[s[0], s[1], s[2], s[3] * s[4]])?, 3)?; // [T, B, C]
        let x_lif = lif(rec, &m, &Lif::STANDARD, None, None)?;
        if let Some(tp) = taps {
            tp.put("lif", Tap::Dense(x_lif.clone()));
        }
        let head_in = match self.config.head_input {
            HeadInput::Spikes => &x_lif,
            HeadInput::Membrane => &m,
        };
        let per_step = linear(rec, head_in, &self.head.0, Some(&self.head.1))?;
        let out = mean(rec, &per_step, 0)?;
        match &self.head_kd {
            None => Ok(out),
            Some((w, b)) => {
                let per_step = linear(rec, &x_lif, w, Some(b))?;
                let kd = mean(rec, &per_step, 0)?;
                let sum = add(rec, &out, &kd)?;
                Ok(scale(rec, &sum, 0.5)?)
            }
        }
    }

    /// Logits `[B, classes]` of images `[B, C, H, W]`. A batch whose activations exceed one
    /// storage binding records in micro-batches (one pass's result).
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
        let mut x = img.clone();
        for (name, u) in Self::units() {
            x = self.unit(rec, &name, u, &x, taps.as_deref_mut())?;
        }
        self.readout(rec, &x, taps)
    }

    /// Uploads, runs one forward, reads the logits back.
    pub fn run(&self, dev: &Device, images: &[f32], shape: &[usize]) -> Result<Vec<f32>> {
        crate::run_images(
            dev,
            images,
            shape,
            "meta_spikeformer",
            |s| self.check_input(s),
            |rec, x| self.forward(rec, x, None),
        )
    }
}
