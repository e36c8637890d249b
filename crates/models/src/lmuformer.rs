//! LMUFormer and Spiking LMUFormer (zeyuliu1037/LMUFormer, `src/lmu_rnn.py`:
//! `lmu_rnn_conv1d` and `slmu_rnn_ms_conv1d`), whole clip and streaming.
//!
//! Input `[B, N frames, C mel]`. Activations are token-major `[N, B, C]`, so 1x1 convolutions
//! are row GEMMs, the k = 3 convolutions an unfold plus a GEMM, and every LIF neuron (whose
//! time axis is the token axis, as in the official code) one invocation per channel looping
//! over frames.
//!
//! - LMUFormer: embedding `4 x [conv k3, ReLU, BN]` then `x + rpe_conv(x)`; block
//!   `x += proj_bn(proj_conv(lmu(x)))`, `x += ReLU(fc2_bn(fc2(GELU(fc1_bn(fc1(x))))))`, where
//!   the LMU cell is `u = ReLU(W_u x)`, `m_t = Ā m_{t-1} + B̄ u_t`, `h = ReLU(W_h [m; x])`.
//! - Spiking: embedding `conv → bn → LIF` (x3) `→ conv` = a, output `a + rpe_conv(LIF(bn3(a)))`;
//!   block `s = LIF_0.5(prev_bn(x))`, `u = LIF(bn_u(W_u s))`, `m` as above,
//!   `h = LIF(bn_h(W_h [LIF(bn_m(m)); s]))`, `x += proj_bn(proj_conv(h))`, then
//!   `x += fc2(LIF(fc2_bn(fc1(LIF(fc1_bn(x))))))`; head `LIF(head_bn(x))`.
//! - Readout: the head on the mean over tokens; `all_seq` gives the running mean's prediction
//!   at every frame (the official `test_mode == 'all_seq'`).
//!
//! The memory is the LMU recurrence. The official code computes it by FFT convolution with
//! the stored impulse response H of `seq_len` (128) columns, which is the same thing for clips
//! of up to `seq_len` frames (the only length it accepts); longer clips here continue the
//! recurrence (chunked). `fft_H` is loaded and ignored.
//!
//! Streaming ([`LmuStream`]): frames go in one at a time; every k = 3 convolution needs one
//! frame of right context, so the five of the embedding delay the output by
//! [`LOOKAHEAD`] frames. The prediction for frame `t` comes out when frame `t + 5` goes in
//! (or at [`LmuStream::finish`], which applies the clip's zero padding to the last five),
//! and equals the whole-clip `all_seq` prediction for frame `t`.

use serde_json::Value;
use spikescan_loader::Checkpoint;
use spikescan_runtime::ops::batch_norm::{batch_norm, BatchNorm};
use spikescan_runtime::ops::elementwise::{add, unary, Unary};
use spikescan_runtime::ops::lif::{lif, lif_step_into, Lif};
use spikescan_runtime::ops::lmu::{memory_into, memory_step_into, LmuMatrices};
use spikescan_runtime::ops::matmul::{gemm_into, linear, Gemm};
use spikescan_runtime::ops::tokens::{
    copy_cols, running_mean_into, running_mean_step, unfold_into, window_push, Cols, TokenLayout,
};
use spikescan_runtime::{DType, Device, Recorder, Tensor};

use crate::taps::{Tap, Taps};
use crate::{bn_params, cfg_usize, ModelDir, ModelError, Result, Uploader};

/// Frames of right context the embedding's five k = 3 convolutions need.
pub const LOOKAHEAD: usize = 5;

/// config.json of an LMUFormer.
#[derive(Clone, Debug, PartialEq)]
pub struct LmuformerConfig {
    pub spiking: bool,
    pub embed_dims: usize,
    pub num_heads: usize,
    pub mlp_hidden: usize,
    pub in_channels: usize,
    pub num_classes: usize,
    pub depths: usize,
    pub seq_len: usize,
    pub theta: usize,
}

impl LmuformerConfig {
    pub fn from_json(cfg: &Value, path: &std::path::Path, spiking: bool) -> Result<Self> {
        let bad = |m: String| ModelError::Config {
            path: path.to_path_buf(),
            message: m,
        };
        let u = |k: &str, d: Option<usize>| cfg_usize(cfg, path, k, d);
        let embed = u("embed_dims", None)?;
        let ratio = match cfg.get("mlp_ratios") {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| bad(format!("\"mlp_ratios\" must be a number, got {v}")))?,
            None => 4.0,
        };
        let c = Self {
            spiking,
            embed_dims: embed,
            num_heads: u("num_heads", Some(1))?,
            mlp_hidden: (embed as f64 * ratio) as usize,
            in_channels: u("in_channels", None)?,
            num_classes: u("num_classes", None)?,
            depths: u("depths", Some(1))?,
            seq_len: u("seq_len", Some(128))?,
            theta: u("theta", Some(128))?,
        };
        if embed == 0 || c.mlp_hidden == 0 || c.in_channels == 0 || c.num_classes == 0 {
            return Err(bad(format!(
                "embed_dims = {embed}, mlp hidden = {}, in_channels = {}, num_classes = {}: all must be positive",
                c.mlp_hidden, c.in_channels, c.num_classes
            )));
        }
        if c.seq_len == 0 || c.theta == 0 {
            return Err(bad("\"seq_len\" and \"theta\" must be positive".into()));
        }
        let dim = crate::MAX_DIM;
        crate::check_sizes(
            path,
            &[
                ("embed_dims", c.embed_dims, dim),
                ("num_heads", c.num_heads, dim),
                ("mlp hidden size", c.mlp_hidden, dim),
                ("in_channels", c.in_channels, dim),
                ("num_classes", c.num_classes, dim),
                ("depths", c.depths, crate::MAX_LAYERS),
                ("seq_len", c.seq_len, dim),
            ],
        )?;
        crate::check_parameters(path, &c.weight_shapes())?;
        Ok(c)
    }

    /// The LMU's memory size: `embed_dims` (LMUFormer) or twice that (spiking).
    pub fn memory(&self) -> usize {
        if self.spiking {
            2 * self.embed_dims
        } else {
            self.embed_dims
        }
    }

    /// Every tensor the model reads, with its shape (official key names; `fft_H` and
    /// `num_batches_tracked` are in checkpoints too and are not read).
    pub fn weight_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (c, h, m) = (self.embed_dims, self.mlp_hidden, self.memory());
        let mut v: Vec<(String, Vec<usize>)> = Vec::new();
        let bn = |v: &mut Vec<(String, Vec<usize>)>, p: &str, n: usize| {
            for f in ["weight", "bias", "running_mean", "running_var"] {
                v.push((format!("{p}.{f}"), vec![n]));
            }
        };
        let chans = [self.in_channels, c, c, c, c];
        for i in 0..4 {
            let (conv, norm) = if self.spiking {
                let sfx = if i == 0 { String::new() } else { i.to_string() };
                (
                    format!("patch_embed.proj_conv{sfx}.weight"),
                    format!("patch_embed.proj_bn{sfx}"),
                )
            } else {
                (
                    format!("patch_embed.conv_layers.{i}.0.weight"),
                    format!("patch_embed.conv_layers.{i}.3"),
                )
            };
            v.push((conv, vec![chans[i + 1], chans[i], 3]));
            bn(&mut v, &norm, c);
        }
        v.push(("patch_embed.rpe_conv.weight".into(), vec![c, c, 3]));
        for i in 0..self.depths {
            let a = format!("block.{i}.attn");
            let l = format!("{a}.lmu");
            if self.spiking {
                bn(&mut v, &format!("{a}.prev_bn"), c);
            }
            v.push((format!("{l}.W_u.weight"), vec![1, c]));
            v.push((format!("{l}.W_u.bias"), vec![1]));
            v.push((format!("{l}.W_h.weight"), vec![c, m + c]));
            v.push((format!("{l}.W_h.bias"), vec![c]));
            v.push((format!("{l}.A"), vec![m, m]));
            v.push((format!("{l}.B"), vec![m, 1]));
            v.push((format!("{l}.H"), vec![m, self.seq_len]));
            if self.spiking {
                bn(&mut v, &format!("{l}.bn_u"), 1);
                bn(&mut v, &format!("{l}.bn_m"), m);
                bn(&mut v, &format!("{l}.bn_h"), c);
            }
            v.push((format!("{a}.proj_conv.weight"), vec![c, c, 1]));
            v.push((format!("{a}.proj_conv.bias"), vec![c]));
            bn(&mut v, &format!("{a}.proj_bn"), c);
            let f = format!("block.{i}.mlp");
            v.push((format!("{f}.fc1_conv.weight"), vec![h, c, 1]));
            v.push((format!("{f}.fc1_conv.bias"), vec![h]));
            bn(
                &mut v,
                &format!("{f}.fc1_bn"),
                if self.spiking { c } else { h },
            );
            v.push((format!("{f}.fc2_conv.weight"), vec![c, h, 1]));
            v.push((format!("{f}.fc2_conv.bias"), vec![c]));
            bn(
                &mut v,
                &format!("{f}.fc2_bn"),
                if self.spiking { h } else { c },
            );
        }
        if self.spiking {
            bn(&mut v, "head_bn", c);
        }
        v.push(("head.weight".into(), vec![self.num_classes, c]));
        v.push(("head.bias".into(), vec![self.num_classes]));
        v
    }

    /// Every LIF layer with the multiply-accumulates, per sample and frame, of the layer its
    /// spikes feed (for synaptic-operation counts), and the dense first layer's MACs.
    pub fn synaptic_costs(&self) -> (Vec<(String, u64)>, u64) {
        let (c, h, m, k) = (
            self.embed_dims as u64,
            self.mlp_hidden as u64,
            self.memory() as u64,
            self.num_classes as u64,
        );
        let first = 3 * self.in_channels as u64 * c;
        if !self.spiking {
            return (Vec::new(), first);
        }
        let mut v = vec![
            ("patch_embed.proj_lif".to_string(), 3 * c * c),
            ("patch_embed.proj_lif1".to_string(), 3 * c * c),
            ("patch_embed.proj_lif2".to_string(), 3 * c * c),
            ("patch_embed.proj_lif3".to_string(), 3 * c * c),
        ];
        for i in 0..self.depths {
            let a = format!("block.{i}.attn");
            v.push((format!("{a}.prev_lif"), c + c * c));
            v.push((format!("{a}.lmu.f_u"), m));
            v.push((format!("{a}.lmu.f_m"), m * c));
            v.push((format!("{a}.lmu.f_h"), c * c));
            v.push((format!("block.{i}.mlp.fc1_lif"), c * h));
            v.push((format!("block.{i}.mlp.fc2_lif"), h * c));
        }
        v.push(("head_lif".into(), c * k));
        (v, first)
    }
}

/// A Linear (or 1x1 conv) with bias, BatchNorm folded in where one follows it.
struct Dense {
    w: Tensor,
    b: Tensor,
}

impl Dense {
    fn apply(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        Ok(linear(rec, x, &self.w, Some(&self.b))?)
    }
}

/// A k = 3, padding 1 Conv1d without bias, its weight laid out `[Cout, 3, Cin]`.
struct Conv3 {
    w: Tensor,
    cin: usize,
}

impl Conv3 {
    fn load(up: Uploader, ck: &Checkpoint, key: &str, cout: usize, cin: usize) -> Result<Self> {
        let w = ck.f32(key, &[cout, cin, 3])?;
        let mut t = vec![0.0f32; w.len()];
        for o in 0..cout {
            for i in 0..cin {
                for k in 0..3 {
                    t[(o * 3 + k) * cin + i] = w[(o * cin + i) * 3 + k];
                }
            }
        }
        Ok(Self {
            w: up.matrix(&t, &[cout, 3 * cin])?,
            cin,
        })
    }

    /// Whole sequence: `x` read through `l` → `[N, B, Cout]`.
    fn apply(&self, rec: &mut Recorder, x: &Tensor, l: &TokenLayout) -> Result<Tensor> {
        let cols = rec.alloc(&[l.n, l.b, 3 * self.cin], DType::F32)?;
        unfold_into(rec, x, l, 3, 1, &cols)?;
        Ok(linear(rec, &cols, &self.w, None)?)
    }
}

struct Cell {
    mats: LmuMatrices,
    w_u: Dense,
    w_h: Dense,
    bn_u: Option<BatchNorm>,
    bn_m: Option<BatchNorm>,
    bn_h: Option<BatchNorm>,
}

struct Block {
    prev_bn: Option<BatchNorm>,
    cell: Cell,
    proj: Dense,
    fc1_bn: Option<BatchNorm>,
    fc1: Dense,
    fc2_bn: Option<BatchNorm>,
    fc2: Dense,
}

enum Embed {
    /// conv → ReLU → BN, four times.
    Plain(Vec<(Conv3, BatchNorm)>),
    /// conv, then (BN → LIF → conv) three times; `bns[3]` feeds the rpe's LIF.
    Spiking {
        convs: Vec<Conv3>,
        bns: Vec<BatchNorm>,
    },
}

/// A loaded LMUFormer (plain or spiking).
pub struct Lmuformer {
    pub config: LmuformerConfig,
    embed: Embed,
    rpe: Conv3,
    blocks: Vec<Block>,
    head_bn: Option<BatchNorm>,
    head: Dense,
}

fn dense(up: Uploader, ck: &Checkpoint, prefix: &str, out: usize, inp: usize) -> Result<Dense> {
    let shape: Vec<usize> = if ck.shape(&format!("{prefix}.weight")) == Some(&[out, inp, 1]) {
        vec![out, inp, 1]
    } else {
        vec![out, inp]
    };
    Ok(Dense {
        w: up.matrix(&ck.f32(&format!("{prefix}.weight"), &shape)?, &[out, inp])?,
        b: up
            .dev
            .weight_f32(&ck.f32(&format!("{prefix}.bias"), &[out])?, &[out])?,
    })
}

/// A 1x1 conv (`[out, inp, 1]` + bias) with the BatchNorm `bn` after it folded in.
fn dense_bn(
    up: Uploader,
    ck: &Checkpoint,
    prefix: &str,
    bn: &str,
    out: usize,
    inp: usize,
) -> Result<Dense> {
    let mut w = ck.f32(&format!("{prefix}.weight"), &[out, inp, 1])?;
    let b = ck.f32(&format!("{prefix}.bias"), &[out])?;
    let b = bn_params(ck, bn, out)?.fold_into(&mut w, Some(&b))?;
    Ok(Dense {
        w: up.matrix(&w, &[out, inp])?,
        b: up.dev.weight_f32(&b, &[out])?,
    })
}

fn load_bn(dev: &Device, ck: &Checkpoint, prefix: &str, c: usize) -> Result<BatchNorm> {
    Ok(BatchNorm::new(dev, &bn_params(ck, prefix, c)?)?)
}

/// Spikes of `bn(x)` through a LIF over the token axis, recorded in `taps` under `name`.
fn fire(
    rec: &mut Recorder,
    x: &Tensor,
    l: &Lif,
    bn: &BatchNorm,
    taps: &mut Option<&mut Taps>,
    name: impl Into<String>,
) -> Result<Tensor> {
    let s = lif(rec, x, l, Some(bn), None)?;
    tap(taps, name, &s);
    Ok(s)
}

fn tap(taps: &mut Option<&mut Taps>, name: impl Into<String>, t: &Tensor) {
    if let Some(taps) = taps.as_deref_mut() {
        taps.put(name, Tap::Dense(t.clone()));
    }
}

impl Lmuformer {
    pub fn load(dev: &Device, md: &ModelDir, spiking: bool) -> Result<Self> {
        let config = LmuformerConfig::from_json(&md.config, &md.path.join("config.json"), spiking)?;
        let ck = &md.checkpoint;
        let up = md.uploader(dev)?;
        let (c, hid, m) = (config.embed_dims, config.mlp_hidden, config.memory());
        let cin = |i: usize| if i == 0 { config.in_channels } else { c };
        let embed = if spiking {
            let mut convs = Vec::new();
            let mut bns = Vec::new();
            for i in 0..4 {
                let sfx = if i == 0 { String::new() } else { i.to_string() };
                convs.push(Conv3::load(
                    up,
                    ck,
                    &format!("patch_embed.proj_conv{sfx}.weight"),
                    c,
                    cin(i),
                )?);
                bns.push(load_bn(dev, ck, &format!("patch_embed.proj_bn{sfx}"), c)?);
            }
            Embed::Spiking { convs, bns }
        } else {
            let mut layers = Vec::new();
            for i in 0..4 {
                layers.push((
                    Conv3::load(
                        up,
                        ck,
                        &format!("patch_embed.conv_layers.{i}.0.weight"),
                        c,
                        cin(i),
                    )?,
                    load_bn(dev, ck, &format!("patch_embed.conv_layers.{i}.3"), c)?,
                ));
            }
            Embed::Plain(layers)
        };
        let rpe = Conv3::load(up, ck, "patch_embed.rpe_conv.weight", c, c)?;
        let mut blocks = Vec::new();
        for i in 0..config.depths {
            let a = format!("block.{i}.attn");
            let l = format!("{a}.lmu");
            let opt_bn = |p: String, n: usize| -> Result<Option<BatchNorm>> {
                if spiking {
                    Ok(Some(load_bn(dev, ck, &p, n)?))
                } else {
                    Ok(None)
                }
            };
            let h = ck.f32(&format!("{l}.H"), &[m, config.seq_len])?;
            let cell = Cell {
                mats: LmuMatrices::new(
                    dev,
                    &ck.f32(&format!("{l}.A"), &[m, m])?,
                    &ck.f32(&format!("{l}.B"), &[m, 1])?,
                    &h,
                    m,
                )?,
                w_u: dense(up, ck, &format!("{l}.W_u"), 1, c)?,
                w_h: dense(up, ck, &format!("{l}.W_h"), c, m + c)?,
                bn_u: opt_bn(format!("{l}.bn_u"), 1)?,
                bn_m: opt_bn(format!("{l}.bn_m"), m)?,
                bn_h: opt_bn(format!("{l}.bn_h"), c)?,
            };
            let f = format!("block.{i}.mlp");
            let (fc1, fc2, fc1_bn, fc2_bn) = if spiking {
                (
                    dense(up, ck, &format!("{f}.fc1_conv"), hid, c)?,
                    dense(up, ck, &format!("{f}.fc2_conv"), c, hid)?,
                    Some(load_bn(dev, ck, &format!("{f}.fc1_bn"), c)?),
                    Some(load_bn(dev, ck, &format!("{f}.fc2_bn"), hid)?),
                )
            } else {
                (
                    dense_bn(
                        up,
                        ck,
                        &format!("{f}.fc1_conv"),
                        &format!("{f}.fc1_bn"),
                        hid,
                        c,
                    )?,
                    dense_bn(
                        up,
                        ck,
                        &format!("{f}.fc2_conv"),
                        &format!("{f}.fc2_bn"),
                        c,
                        hid,
                    )?,
                    None,
                    None,
                )
            };
            blocks.push(Block {
                prev_bn: opt_bn(format!("{a}.prev_bn"), c)?,
                cell,
                proj: dense_bn(
                    up,
                    ck,
                    &format!("{a}.proj_conv"),
                    &format!("{a}.proj_bn"),
                    c,
                    c,
                )?,
                fc1_bn,
                fc1,
                fc2_bn,
                fc2,
            });
        }
        let head_bn = if spiking {
            Some(load_bn(dev, ck, "head_bn", c)?)
        } else {
            None
        };
        let head = dense(up, ck, "head", config.num_classes, c)?;
        Ok(Self {
            config,
            embed,
            rpe,
            blocks,
            head_bn,
            head,
        })
    }

    /// The architecture name, as in config.json.
    pub fn architecture(&self) -> &'static str {
        if self.config.spiking {
            "spiking_lmuformer"
        } else {
            "lmuformer"
        }
    }

    /// Checks an input batch shape `[B, N, in_channels]`.
    pub fn check_input(&self, shape: &[usize]) -> Result<()> {
        match shape {
            [b, n, c] if *b > 0 && *n > 0 && *c == self.config.in_channels => Ok(()),
            _ => Err(ModelError::Input(format!(
                "input must be [batch, frames, {}] (frames x mel bins), got {shape:?}",
                self.config.in_channels
            ))),
        }
    }

    /// The embedding of `x [B, N, C_in]` (batch-major) → `[N, B, C]`.
    pub fn embed(
        &self,
        rec: &mut Recorder,
        x: &Tensor,
        mut taps: Option<&mut Taps>,
    ) -> Result<Tensor> {
        self.check_input(x.shape())?;
        let (b, n) = (x.dim(0), x.dim(1));
        let c = self.config.embed_dims;
        let mut l = TokenLayout::batch_major(n, b, self.config.in_channels);
        let a = match &self.embed {
            Embed::Plain(layers) => {
                let mut cur = x.clone();
                for (conv, bn) in layers {
                    let y = conv.apply(rec, &cur, &l)?;
                    let y = unary(rec, Unary::Relu, &y)?;
                    cur = batch_norm(rec, &y.reshape(&[n * b, c])?, bn)?.reshape(&[n, b, c])?;
                    l = TokenLayout::token_major(n, b, c);
                }
                cur
            }
            Embed::Spiking { convs, bns } => {
                let mut y = convs[0].apply(rec, x, &l)?;
                l = TokenLayout::token_major(n, b, c);
                for i in 0..3 {
                    let sfx = if i == 0 { String::new() } else { i.to_string() };
                    let s = fire(
                        rec,
                        &y,
                        &Lif::STANDARD,
                        &bns[i],
                        &mut taps,
                        format!("patch_embed.proj_lif{sfx}"),
                    )?;
                    y = convs[i + 1].apply(rec, &s, &l)?;
                }
                y
            }
        };
        let r = match &self.embed {
            Embed::Plain(_) => a.clone(),
            Embed::Spiking { bns, .. } => fire(
                rec,
                &a,
                &Lif::STANDARD,
                &bns[3],
                &mut taps,
                "patch_embed.proj_lif3",
            )?,
        };
        let r = self.rpe.apply(rec, &r, &l)?;
        Ok(add(rec, &a, &r)?)
    }

    /// Block `i`'s LMU unit with its residual: `x + attn(x)`, `x [N, B, C]`.
    pub fn attn(
        &self,
        rec: &mut Recorder,
        i: usize,
        x: &Tensor,
        mut taps: Option<&mut Taps>,
    ) -> Result<Tensor> {
        let blk = self.block(i)?;
        let cell = &blk.cell;
        let (n, b, c) = (x.dim(0), x.dim(1), x.dim(2));
        let m = cell.mats.m;
        let name = format!("block.{i}.attn");
        let s = match &blk.prev_bn {
            Some(bn) => fire(
                rec,
                x,
                &Lif::ATTENTION,
                bn,
                &mut taps,
                format!("{name}.prev_lif"),
            )?,
            None => x.clone(),
        };
        let wu = cell.w_u.apply(rec, &s)?; // [N, B, 1]
        let u = match &cell.bn_u {
            Some(bn) => fire(
                rec,
                &wu,
                &Lif::STANDARD,
                bn,
                &mut taps,
                format!("{name}.lmu.f_u"),
            )?,
            None => unary(rec, Unary::Relu, &wu)?,
        };
        let mem = rec.alloc(&[n, b, m], DType::F32)?;
        memory_into(rec, &cell.mats, &u, n, b, &mem)?;
        let mem = match &cell.bn_m {
            Some(bn) => fire(
                rec,
                &mem,
                &Lif::STANDARD,
                bn,
                &mut taps,
                format!("{name}.lmu.f_m"),
            )?,
            None => mem,
        };
        let cat = concat(rec, &mem, &s, n * b)?;
        let h = cell.w_h.apply(rec, &cat.reshape(&[n, b, m + c])?)?;
        let h = match &cell.bn_h {
            Some(bn) => fire(
                rec,
                &h,
                &Lif::STANDARD,
                bn,
                &mut taps,
                format!("{name}.lmu.f_h"),
            )?,
            None => unary(rec, Unary::Relu, &h)?,
        };
        let a = blk.proj.apply(rec, &h)?;
        Ok(add(rec, x, &a)?)
    }

    /// Block `i`'s MLP unit with its residual: `x + mlp(x)`.
    pub fn mlp(
        &self,
        rec: &mut Recorder,
        i: usize,
        x: &Tensor,
        mut taps: Option<&mut Taps>,
    ) -> Result<Tensor> {
        let blk = self.block(i)?;
        let name = format!("block.{i}.mlp");
        let y = match (&blk.fc1_bn, &blk.fc2_bn) {
            (Some(bn1), Some(bn2)) => {
                let s1 = fire(
                    rec,
                    x,
                    &Lif::STANDARD,
                    bn1,
                    &mut taps,
                    format!("{name}.fc1_lif"),
                )?;
                let y = blk.fc1.apply(rec, &s1)?;
                let s2 = fire(
                    rec,
                    &y,
                    &Lif::STANDARD,
                    bn2,
                    &mut taps,
                    format!("{name}.fc2_lif"),
                )?;
                blk.fc2.apply(rec, &s2)?
            }
            _ => {
                let y = blk.fc1.apply(rec, x)?;
                let y = unary(rec, Unary::Gelu, &y)?;
                let y = blk.fc2.apply(rec, &y)?;
                unary(rec, Unary::Relu, &y)?
            }
        };
        Ok(add(rec, x, &y)?)
    }

    /// The readout of `x [N, B, C]`: logits `[B, classes]`, or with `all_seq` the running
    /// prediction at every frame, `[N, B, classes]`.
    pub fn head(
        &self,
        rec: &mut Recorder,
        x: &Tensor,
        all_seq: bool,
        mut taps: Option<&mut Taps>,
    ) -> Result<Tensor> {
        let (n, b, c) = (x.dim(0), x.dim(1), x.dim(2));
        let z = match &self.head_bn {
            Some(bn) => fire(rec, x, &Lif::STANDARD, bn, &mut taps, "head_lif")?,
            None => x.clone(),
        };
        let mean = rec.alloc(&[n, b, c], DType::F32)?;
        running_mean_into(rec, &z, &mean)?;
        if all_seq {
            return self.head.apply(rec, &mean);
        }
        let k = self.config.num_classes;
        let out = rec.alloc(&[b, k], DType::F32)?;
        let mut g = Gemm::linear(b, k, c);
        g.x_offset = (n - 1) * b * c;
        gemm_into(rec, &g, &mean, &self.head.w, Some(&self.head.b), &out)?;
        Ok(out)
    }

    fn block(&self, i: usize) -> Result<&Block> {
        self.blocks
            .get(i)
            .ok_or_else(|| ModelError::Input(format!("block {i} of {}", self.blocks.len())))
    }

    /// Records a whole-clip forward pass of `x [B, N, C_in]`: logits `[B, classes]`, or
    /// `[N, B, classes]` with `all_seq`.
    pub fn forward(
        &self,
        rec: &mut Recorder,
        x: &Tensor,
        all_seq: bool,
        mut taps: Option<&mut Taps>,
    ) -> Result<Tensor> {
        let mut h = self.embed(rec, x, taps.as_deref_mut())?;
        for i in 0..self.blocks.len() {
            h = self.attn(rec, i, &h, taps.as_deref_mut())?;
            h = self.mlp(rec, i, &h, taps.as_deref_mut())?;
        }
        self.head(rec, &h, all_seq, taps)
    }

    /// Runs `x [B, N, C_in]` (host values) and reads the logits back: `[B, classes]`, or
    /// with `all_seq` `[B, N, classes]` (batch-major, as the CLI writes it).
    pub fn run(&self, dev: &Device, x: &[f32], shape: &[usize], all_seq: bool) -> Result<Vec<f32>> {
        self.check_input(shape)?;
        if x.len() != shape.iter().product::<usize>() {
            return Err(ModelError::Input(format!(
                "{} values for an input of shape {shape:?}",
                x.len()
            )));
        }
        let xt = dev.tensor_f32(x, shape)?;
        let mut rec = dev.recorder("lmuformer");
        let out = self.forward(&mut rec, &xt, all_seq, None)?;
        rec.submit()?;
        let v = dev.read_f32(&out)?;
        if !all_seq {
            return Ok(v);
        }
        let (b, n, k) = (shape[0], shape[1], self.config.num_classes);
        let mut t = vec![0.0; v.len()];
        for f in 0..n {
            for s in 0..b {
                t[(s * n + f) * k..(s * n + f + 1) * k]
                    .copy_from_slice(&v[(f * b + s) * k..(f * b + s + 1) * k]);
            }
        }
        Ok(t)
    }

    /// A streaming session over `streams` independent streams.
    pub fn stream(&self, dev: &Device, streams: usize) -> Result<LmuStream<'_>> {
        LmuStream::new(self, dev, streams)
    }
}

/// `[rows, M + C]`: `m [rows, M]` then `x [rows, C]` along the last axis.
fn concat(rec: &mut Recorder, m: &Tensor, x: &Tensor, rows: usize) -> Result<Tensor> {
    let (mw, xw) = (m.numel() / rows, x.numel() / rows);
    let cat = rec.alloc(&[rows, mw + xw], DType::F32)?;
    let w = mw + xw;
    copy_cols(
        rec,
        m,
        Cols {
            stride: mw,
            offset: 0,
        },
        &cat,
        Cols {
            stride: w,
            offset: 0,
        },
        rows,
        mw,
    )?;
    copy_cols(
        rec,
        x,
        Cols {
            stride: xw,
            offset: 0,
        },
        &cat,
        Cols {
            stride: w,
            offset: mw,
        },
        rows,
        xw,
    )?;
    Ok(cat)
}

/// One k = 3 convolution's streaming window: the last three input frames of every stream.
struct Window {
    buf: Tensor,
    seen: usize,
}

/// Everything a stream carries between frames (on the GPU), plus frame counts.
struct StreamState {
    windows: Vec<Window>,
    /// Membranes of every LIF, in a fixed order (spiking only).
    membranes: Vec<Tensor>,
    /// The embedding's `a` one frame back (its residual, aligned with the rpe output).
    a_prev: Tensor,
    /// The LMU memory of each block.
    memory: Vec<Tensor>,
    /// The running sum of the head's input.
    sum: Tensor,
    /// Frames pushed, frames emitted.
    pushed: usize,
    emitted: usize,
    finished: bool,
}

/// A saved [`LmuStream`] state (host copies), for [`LmuStream::restore`].
#[derive(Clone, Debug)]
pub struct LmuSnapshot {
    tensors: Vec<Vec<f32>>,
    counts: Vec<usize>,
    pushed: usize,
    emitted: usize,
    finished: bool,
}

/// Frame-by-frame inference over S streams: push one frame of each (`[S, C_in]`), get the
/// running prediction of the frame [`LOOKAHEAD`] frames back.
pub struct LmuStream<'m> {
    model: &'m Lmuformer,
    dev: Device,
    streams: usize,
    state: StreamState,
}

impl<'m> LmuStream<'m> {
    fn new(model: &'m Lmuformer, dev: &Device, streams: usize) -> Result<Self> {
        if streams == 0 {
            return Err(ModelError::Input(
                "a stream session needs at least one stream".into(),
            ));
        }
        let cfg = &model.config;
        let (s, c) = (streams, cfg.embed_dims);
        let zeros =
            |n: usize| -> Result<Tensor> { Ok(dev.tensor_f32(&vec![0.0; s * n], &[s, n])?) };
        let mut windows = Vec::new();
        for cin in [cfg.in_channels, c, c, c, c] {
            windows.push(Window {
                buf: dev.tensor_f32(&vec![0.0; s * 3 * cin], &[s, 3 * cin])?,
                seen: 0,
            });
        }
        let mut membranes = Vec::new();
        if cfg.spiking {
            // 4 embedding LIFs; per block prev, u, m, h, fc1, fc2; the head.
            for _ in 0..4 {
                membranes.push(zeros(c)?);
            }
            for _ in 0..cfg.depths {
                for n in [c, 1, cfg.memory(), c, c, cfg.mlp_hidden] {
                    membranes.push(zeros(n)?);
                }
            }
            membranes.push(zeros(c)?);
        }
        let memory = (0..cfg.depths)
            .map(|_| zeros(cfg.memory()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            model,
            dev: dev.clone(),
            streams,
            state: StreamState {
                windows,
                membranes,
                a_prev: zeros(c)?,
                memory,
                sum: zeros(c)?,
                pushed: 0,
                emitted: 0,
                finished: false,
            },
        })
    }

    /// Streams in this session.
    pub fn streams(&self) -> usize {
        self.streams
    }

    /// Frames pushed so far, and predictions emitted.
    pub fn position(&self) -> (usize, usize) {
        (self.state.pushed, self.state.emitted)
    }

    /// Pushes one frame of every stream (`[S, C_in]`, row-major). Returns the logits
    /// `[S, classes]` of frame `pushed - 1 - LOOKAHEAD` once there is one.
    pub fn push(&mut self, frame: &[f32]) -> Result<Option<Vec<f32>>> {
        if self.state.finished {
            return Err(ModelError::Input(
                "this stream was finished; restore a snapshot or start a new one".into(),
            ));
        }
        let cin = self.model.config.in_channels;
        if frame.len() != self.streams * cin {
            return Err(ModelError::Input(format!(
                "a frame is [{}, {cin}] ({} values), got {} values",
                self.streams,
                self.streams * cin,
                frame.len()
            )));
        }
        let x = self.dev.tensor_f32(frame, &[self.streams, cin])?;
        let dev = self.dev.clone();
        let mut rec = dev.recorder("lmuformer stream");
        let out = self.stage(&mut rec, 0, &x)?;
        self.state.pushed += 1;
        rec.submit()?;
        match out {
            Some(t) => Ok(Some(dev.read_f32(&t)?)),
            None => Ok(None),
        }
    }

    /// Ends the clip: applies the zero padding of the embedding's convolutions and returns
    /// the predictions of the last frames still held back (up to [`LOOKAHEAD`]), in order.
    pub fn finish(&mut self) -> Result<Vec<Vec<f32>>> {
        if self.state.finished {
            return Ok(Vec::new());
        }
        self.state.finished = true;
        let dev = self.dev.clone();
        let mut outs = Vec::new();
        for j in 0..5 {
            if self.state.windows[j].seen == 0 {
                continue;
            }
            let cin = self.state.windows[j].buf.dim(1) / 3;
            let zero = dev.tensor_f32(&vec![0.0; self.streams * cin], &[self.streams, cin])?;
            let mut rec = dev.recorder("lmuformer stream");
            let out = self.stage(&mut rec, j, &zero)?;
            rec.submit()?;
            if let Some(t) = out {
                outs.push(dev.read_f32(&t)?);
            }
        }
        Ok(outs)
    }

    /// Feeds `x [S, C]` into embedding stage `j` (0..4: the convolutions, 4: the rpe) and on
    /// through the model; the logits when a frame comes out of the end.
    fn stage(&mut self, rec: &mut Recorder, j: usize, x: &Tensor) -> Result<Option<Tensor>> {
        let model = self.model;
        let (s, c) = (self.streams, model.config.embed_dims);
        let win = &mut self.state.windows[j];
        window_push(rec, &win.buf, x, 3)?;
        win.seen += 1;
        if win.seen < 2 {
            return Ok(None);
        }
        let window = win.buf.clone();
        if j == 4 {
            let r = linear(rec, &window, &model.rpe.w, None)?;
            let e = add(rec, &self.state.a_prev, &r)?;
            return self.tail(rec, &e).map(Some);
        }
        let y = match &model.embed {
            Embed::Plain(layers) => {
                let (conv, bn) = &layers[j];
                let y = linear(rec, &window, &conv.w, None)?;
                let y = unary(rec, Unary::Relu, &y)?;
                batch_norm(rec, &y, bn)?
            }
            Embed::Spiking { convs, .. } => linear(rec, &window, &convs[j].w, None)?,
        };
        // The input of the next stage: the spikes (spiking), or y itself.
        let next = match &model.embed {
            Embed::Plain(_) => y.clone(),
            Embed::Spiking { bns, .. } => {
                let v = self.state.membranes[j].clone();
                let sp = rec.alloc(&[s, c], DType::F32)?;
                lif_step_into(rec, &y, &Lif::STANDARD, Some(&bns[j]), &v, &sp)?;
                sp
            }
        };
        if j == 3 {
            // y is `a`; its residual is added one frame later, aligned with the rpe output.
            let out = self.stage(rec, 4, &next)?;
            rec.copy(&y, &self.state.a_prev)?;
            return Ok(out);
        }
        self.stage(rec, j + 1, &next)
    }

    /// One embedded frame `e [S, C]` through the blocks and the head: logits `[S, classes]`.
    fn tail(&mut self, rec: &mut Recorder, e: &Tensor) -> Result<Tensor> {
        let model = self.model;
        let cfg = &model.config;
        let (s, c) = (self.streams, cfg.embed_dims);
        let step = |rec: &mut Recorder, k: usize, x: &Tensor, l: &Lif, bn: &BatchNorm| {
            let out = rec.alloc(x.shape(), DType::F32)?;
            lif_step_into(rec, x, l, Some(bn), &self.state.membranes[k], &out)?;
            Ok::<Tensor, ModelError>(out)
        };
        let mut x = e.clone();
        for (i, blk) in model.blocks.iter().enumerate() {
            let base = 4 + 6 * i;
            let cell = &blk.cell;
            let m = cell.mats.m;
            let sx = match &blk.prev_bn {
                Some(bn) => step(rec, base, &x, &Lif::ATTENTION, bn)?,
                None => x.clone(),
            };
            let wu = cell.w_u.apply(rec, &sx)?; // [S, 1]
            let u = match &cell.bn_u {
                Some(bn) => step(rec, base + 1, &wu, &Lif::STANDARD, bn)?,
                None => unary(rec, Unary::Relu, &wu)?,
            };
            let mem = rec.alloc(&[s, m], DType::F32)?;
            memory_step_into(rec, &cell.mats, &u, &self.state.memory[i], &mem)?;
            self.state.memory[i] = mem.clone();
            let mem = match &cell.bn_m {
                Some(bn) => step(rec, base + 2, &mem, &Lif::STANDARD, bn)?,
                None => mem,
            };
            let cat = concat(rec, &mem, &sx, s)?;
            let h = cell.w_h.apply(rec, &cat)?;
            let h = match &cell.bn_h {
                Some(bn) => step(rec, base + 3, &h, &Lif::STANDARD, bn)?,
                None => unary(rec, Unary::Relu, &h)?,
            };
            let a = blk.proj.apply(rec, &h)?;
            x = add(rec, &x, &a)?;
            let y = match (&blk.fc1_bn, &blk.fc2_bn) {
                (Some(bn1), Some(bn2)) => {
                    let s1 = step(rec, base + 4, &x, &Lif::STANDARD, bn1)?;
                    let y = blk.fc1.apply(rec, &s1)?;
                    let s2 = step(rec, base + 5, &y, &Lif::STANDARD, bn2)?;
                    blk.fc2.apply(rec, &s2)?
                }
                _ => {
                    let y = blk.fc1.apply(rec, &x)?;
                    let y = unary(rec, Unary::Gelu, &y)?;
                    let y = blk.fc2.apply(rec, &y)?;
                    unary(rec, Unary::Relu, &y)?
                }
            };
            x = add(rec, &x, &y)?;
        }
        let z = match &model.head_bn {
            Some(bn) => step(rec, 4 + 6 * cfg.depths, &x, &Lif::STANDARD, bn)?,
            None => x,
        };
        self.state.emitted += 1;
        let mean = rec.alloc(&[s, c], DType::F32)?;
        running_mean_step(rec, &z, &self.state.sum, self.state.emitted, &mean)?;
        model.head.apply(rec, &mean)
    }

    fn tensors(&self) -> Vec<&Tensor> {
        let st = &self.state;
        st.windows
            .iter()
            .map(|w| &w.buf)
            .chain(st.membranes.iter())
            .chain(st.memory.iter())
            .chain([&st.a_prev, &st.sum])
            .collect()
    }

    /// Copies the whole state to the host.
    pub fn snapshot(&self) -> Result<LmuSnapshot> {
        Ok(LmuSnapshot {
            tensors: self
                .tensors()
                .into_iter()
                .map(|t| self.dev.read_f32(t))
                .collect::<std::result::Result<_, _>>()?,
            counts: self.state.windows.iter().map(|w| w.seen).collect(),
            pushed: self.state.pushed,
            emitted: self.state.emitted,
            finished: self.state.finished,
        })
    }

    /// Returns to a state saved by [`snapshot`](Self::snapshot) of a session of the same
    /// model and stream count.
    pub fn restore(&mut self, snap: &LmuSnapshot) -> Result<()> {
        let ts = self.tensors();
        if snap.tensors.len() != ts.len()
            || snap
                .tensors
                .iter()
                .zip(&ts)
                .any(|(v, t)| v.len() != t.numel())
        {
            return Err(ModelError::Input(
                "the snapshot is of another model or stream count".into(),
            ));
        }
        for (v, t) in snap.tensors.iter().zip(&ts) {
            self.dev.write_f32(t, v)?;
        }
        for (w, &n) in self.state.windows.iter_mut().zip(&snap.counts) {
            w.seen = n;
        }
        self.state.pushed = snap.pushed;
        self.state.emitted = snap.emitted;
        self.state.finished = snap.finished;
        Ok(())
    }
}

/// Random weights of `config`'s shapes (as [`crate::random_weights`]) with the real LMU
/// matrices (A, B from the ZOH-discretised Legendre system of θ = `theta`, H = Ā^k B̄), for
/// benchmarks and tests at official shapes without the official checkpoints.
pub fn random_checkpoint(
    config: &LmuformerConfig,
    seed: u64,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut w = crate::random_weights(&config.weight_shapes(), seed);
    let (a, b, h) = spikescan_runtime::ops::lmu::test_matrices(
        config.memory(),
        config.theta as f64,
        config.seq_len,
    );
    for (k, _, data) in w.iter_mut() {
        if k.ends_with(".lmu.A") {
            *data = a.clone();
        } else if k.ends_with(".lmu.B") {
            *data = b.clone();
        } else if k.ends_with(".lmu.H") {
            *data = h.clone();
        }
    }
    w
}
