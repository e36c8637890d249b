//! Mamba (state-spaces/mamba; transformers' MambaForCausalLM): checkpoints in mamba_ssm or
//! Hugging Face format, prompts through the fused selective scan, decoding one token
//! at a time from GPU-resident per-layer states (one submit per token), sampling on the GPU.
//!
//! Block: `residual = hidden + residual; hidden = mixer(rms_norm(residual))`; the end:
//! `lm_head(norm_f(hidden + residual))`, the head tied to the embedding unless
//! `lm_head.weight` is present. Mixer: in_proj → x | z; causal conv1d + SiLU; x_proj → dt | B
//! | C; dt_proj (its bias and the softplus inside the scan; in the decode step the whole of
//! dt_proj runs inside the state update); scan with A = -exp(A_log) and D;
//! `y · silu(z)`; out_proj.
//!
//! Falcon-Mamba (`model_type: "falcon_mamba"`, transformers' FalconMambaForCausalLM) is the
//! same block with one difference: x_proj's dt, B and C outputs each pass a weightless
//! RMSNorm (`mixer_rms_eps`) before dt_proj and the scan, in the prompt and the decode path.

use serde_json::Value;
use spikescan_loader::Checkpoint;
use spikescan_runtime::ops::causal_conv1d::{causal_conv1d_into, ConvLayout, ConvStep};
use spikescan_runtime::ops::matmul::{
    gemm_into, linear, linear_conv_step, linear_residual, Gemm, PreNorm,
};
use spikescan_runtime::ops::rms_norm::{add_rms_norm, rms_norm, rms_norm_segments};
use spikescan_runtime::ops::select::topk_prefix_into;
use spikescan_runtime::ops::selective_scan::{
    pack_scan_weights, selective_scan_into, selective_state_update, DtProj, ScanLayout, ScanWeights,
};
use spikescan_runtime::ops::vocab::RowBlocks;
use spikescan_runtime::{DType, Device, Graph, ReadbackRing, Recorder, Residency, Tensor};

use crate::{ModelDir, ModelError, Result};

/// Sizes of a Mamba model.
#[derive(Clone, Debug, PartialEq)]
pub struct MambaConfig {
    pub d_model: usize,
    pub n_layer: usize,
    /// Vocabulary as in the config (before padding).
    pub vocab_size: usize,
    /// Rows of the embedding (the vocabulary padded to `pad_vocab_size_multiple`).
    pub vocab_padded: usize,
    pub d_inner: usize,
    pub d_state: usize,
    pub d_conv: usize,
    pub dt_rank: usize,
    pub eps: f32,
    pub tie: bool,
    pub use_bias: bool,
    pub use_conv_bias: bool,
    /// Falcon-Mamba: the eps of the weightless RMSNorms on x_proj's dt, B and C outputs
    /// (None: plain Mamba, no such norms).
    pub mixer_rms_eps: Option<f32>,
}

impl MambaConfig {
    /// Reads either config format: Hugging Face (`model_type: "mamba"` or `"falcon_mamba"`,
    /// `hidden_size`, …) or mamba_ssm (`d_model`, `n_layer`, `ssm_cfg`,
    /// `pad_vocab_size_multiple`, …). Falcon-Mamba's `mixer_rms_eps` defaults to 1e-6 as in
    /// transformers.
    pub fn from_json(cfg: &Value, path: &std::path::Path) -> Result<Self> {
        let bad = |m: String| ModelError::Config {
            path: path.to_path_buf(),
            message: m,
        };
        let int = |v: Option<&Value>, key: &str, default: Option<usize>| -> Result<usize> {
            match v {
                Some(x) => x
                    .as_u64()
                    .map(|x| x as usize)
                    .ok_or_else(|| bad(format!("\"{key}\" must be an integer, got {x}"))),
                None => default.ok_or_else(|| bad(format!("missing \"{key}\""))),
            }
        };
        let boolean = |v: Option<&Value>, key: &str, default: bool| -> Result<bool> {
            match v {
                Some(x) => x
                    .as_bool()
                    .ok_or_else(|| bad(format!("\"{key}\" must be true or false, got {x}"))),
                None => Ok(default),
            }
        };
        let model_type = cfg.get("model_type").and_then(Value::as_str);
        let falcon = model_type == Some("falcon_mamba")
            || cfg.get("architecture").and_then(Value::as_str) == Some("falcon_mamba");
        let hf = cfg.get("hidden_size").is_some() || model_type == Some("mamba") || falcon;
        let mixer_rms_eps = if falcon {
            Some(match cfg.get("mixer_rms_eps") {
                None => 1e-6,
                Some(v) => match v.as_f64() {
                    Some(e) if e.is_finite() && e >= 0.0 => e as f32,
                    _ => {
                        return Err(bad(format!(
                            "\"mixer_rms_eps\" must be a non-negative number, got {v}"
                        )))
                    }
                },
            })
        } else {
            None
        };
        let c = if hf {
            let d_model = int(cfg.get("hidden_size"), "hidden_size", None)?;
            let expand = int(cfg.get("expand"), "expand", Some(2))?;
            let vocab = int(cfg.get("vocab_size"), "vocab_size", None)?;
            let dt_rank = match cfg.get("time_step_rank") {
                None => d_model.div_ceil(16),
                Some(Value::String(s)) if s == "auto" => d_model.div_ceil(16),
                Some(v) => int(Some(v), "time_step_rank", None)?,
            };
            Self {
                d_model,
                n_layer: int(cfg.get("num_hidden_layers"), "num_hidden_layers", None)?,
                vocab_size: vocab,
                vocab_padded: vocab,
                // transformers takes `intermediate_size` when the config has it (Falcon-Mamba
                // 7B's says 8192 next to an `expand` that is not 2), else expand x hidden.
                d_inner: int(
                    cfg.get("intermediate_size"),
                    "intermediate_size",
                    Some(expand.saturating_mul(d_model)),
                )?,
                d_state: int(cfg.get("state_size"), "state_size", Some(16))?,
                d_conv: int(cfg.get("conv_kernel"), "conv_kernel", Some(4))?,
                dt_rank,
                eps: cfg
                    .get("layer_norm_epsilon")
                    .and_then(Value::as_f64)
                    .unwrap_or(1e-5) as f32,
                tie: boolean(cfg.get("tie_word_embeddings"), "tie_word_embeddings", true)?,
                use_bias: boolean(cfg.get("use_bias"), "use_bias", false)?,
                use_conv_bias: boolean(cfg.get("use_conv_bias"), "use_conv_bias", true)?,
                mixer_rms_eps,
            }
        } else {
            let d_model = int(cfg.get("d_model"), "d_model", None)?;
            let ssm = cfg.get("ssm_cfg").cloned().unwrap_or(Value::Null);
            let vocab = int(cfg.get("vocab_size"), "vocab_size", None)?;
            let mult = int(
                cfg.get("pad_vocab_size_multiple"),
                "pad_vocab_size_multiple",
                Some(1),
            )?
            .max(1);
            let dt_rank = match ssm.get("dt_rank") {
                None => d_model.div_ceil(16),
                Some(Value::String(s)) if s == "auto" => d_model.div_ceil(16),
                Some(v) => int(Some(v), "ssm_cfg.dt_rank", None)?,
            };
            Self {
                d_model,
                n_layer: int(cfg.get("n_layer"), "n_layer", None)?,
                vocab_size: vocab,
                vocab_padded: vocab.div_ceil(mult).saturating_mul(mult),
                d_inner: int(ssm.get("expand"), "ssm_cfg.expand", Some(2))?.saturating_mul(d_model),
                d_state: int(ssm.get("d_state"), "ssm_cfg.d_state", Some(16))?,
                d_conv: int(ssm.get("d_conv"), "ssm_cfg.d_conv", Some(4))?,
                dt_rank,
                eps: 1e-5,
                tie: boolean(cfg.get("tie_embeddings"), "tie_embeddings", true)?,
                use_bias: false,
                use_conv_bias: true,
                mixer_rms_eps: None,
            }
        };
        if c.d_model == 0
            || c.n_layer == 0
            || c.vocab_size == 0
            || c.d_state == 0
            || c.d_state > 64
            || !(2..=8).contains(&c.d_conv)
            || c.dt_rank == 0
        {
            return Err(bad(format!(
                "unsupported sizes: {c:?} (d_state 1..=64, d_conv 2..=8)"
            )));
        }
        let dim = crate::MAX_DIM;
        crate::check_sizes(
            path,
            &[
                ("d_model", c.d_model, dim),
                ("n_layer", c.n_layer, crate::MAX_LAYERS),
                ("vocab_size", c.vocab_padded, dim),
                ("d_inner", c.d_inner, dim),
                ("dt_rank", c.dt_rank, dim),
            ],
        )?;
        crate::check_parameters(path, &c.weight_shapes(false))?;
        Ok(c)
    }

    /// Every tensor the model reads (mamba_ssm key names; HF uses `embeddings`).
    pub fn weight_shapes(&self, hf: bool) -> Vec<(String, Vec<usize>)> {
        let (dm, d, n, r, k) = (
            self.d_model,
            self.d_inner,
            self.d_state,
            self.dt_rank,
            self.d_conv,
        );
        let emb = if hf {
            "backbone.embeddings.weight"
        } else {
            "backbone.embedding.weight"
        };
        let mut v = vec![(emb.to_string(), vec![self.vocab_padded, dm])];
        for i in 0..self.n_layer {
            let p = format!("backbone.layers.{i}");
            v.push((format!("{p}.norm.weight"), vec![dm]));
            v.push((format!("{p}.mixer.in_proj.weight"), vec![2 * d, dm]));
            v.push((format!("{p}.mixer.conv1d.weight"), vec![d, 1, k]));
            v.push((format!("{p}.mixer.conv1d.bias"), vec![d]));
            v.push((format!("{p}.mixer.x_proj.weight"), vec![r + 2 * n, d]));
            v.push((format!("{p}.mixer.dt_proj.weight"), vec![d, r]));
            v.push((format!("{p}.mixer.dt_proj.bias"), vec![d]));
            v.push((format!("{p}.mixer.A_log"), vec![d, n]));
            v.push((format!("{p}.mixer.D"), vec![d]));
            v.push((format!("{p}.mixer.out_proj.weight"), vec![dm, d]));
        }
        v.push(("backbone.norm_f.weight".into(), vec![dm]));
        if !self.tie {
            v.push(("lm_head.weight".into(), vec![self.vocab_padded, dm]));
        }
        v
    }
}

struct Layer {
    norm: Tensor,
    in_proj: Tensor,
    in_bias: Option<Tensor>,
    conv_w: Tensor,
    conv_b: Tensor,
    x_proj: Tensor,
    dt_proj: Tensor,
    /// A, dt_bias and D packed as `ScanWeights` holds them (`[D, N + 2]`).
    scan: Tensor,
    out_proj: Tensor,
    out_bias: Option<Tensor>,
}

/// Per-layer recurrent state of a batch of sequences, resident on the GPU: the conv state
/// `[B, D, K - 1]` and the SSM state `[B, D, N]` (f32) of every layer.
pub struct MambaState {
    pub batch: usize,
    conv: Vec<Tensor>,
    ssm: Vec<Tensor>,
}

impl MambaState {
    /// Copies the state (for prefix reuse): the copy and the original evolve independently.
    pub fn snapshot(&self, dev: &Device) -> Result<MambaState> {
        let mut rec = dev.recorder("snapshot");
        let mut copy = |ts: &[Tensor]| -> Result<Vec<Tensor>> {
            ts.iter()
                .map(|t| {
                    let c = dev.alloc_in(t.shape(), DType::F32, Residency::Owned)?;
                    rec.copy(t, &c)?;
                    Ok(c)
                })
                .collect()
        };
        let conv = copy(&self.conv)?;
        let ssm = copy(&self.ssm)?;
        rec.submit()?;
        Ok(MambaState {
            batch: self.batch,
            conv,
            ssm,
        })
    }

    /// Copies sequence `src_slot` of `src` into slot `dst_slot` of this state: a prefix
    /// computed once can seed any sequence of a batch.
    pub fn copy_slot(
        &mut self,
        dev: &Device,
        dst_slot: usize,
        src: &MambaState,
        src_slot: usize,
    ) -> Result<()> {
        if dst_slot >= self.batch || src_slot >= src.batch || src.conv.len() != self.conv.len() {
            return Err(ModelError::Input(format!(
                "slot {src_slot} of a state of {} into slot {dst_slot} of {}",
                src.batch, self.batch
            )));
        }
        let mut rec = dev.recorder("copy slot");
        for (a, b) in self
            .conv
            .iter()
            .zip(&src.conv)
            .chain(self.ssm.iter().zip(&src.ssm))
        {
            let per = b.bytes() / src.batch as u64;
            rec.copy_region(b, src_slot as u64 * per, a, dst_slot as u64 * per, per)?;
        }
        rec.submit()?;
        Ok(())
    }

    /// Overwrites this state with `other` (same batch).
    pub fn restore(&mut self, dev: &Device, other: &MambaState) -> Result<()> {
        if other.batch != self.batch || other.conv.len() != self.conv.len() {
            return Err(ModelError::Input(
                "restoring a state of another batch size or model".into(),
            ));
        }
        let mut rec = dev.recorder("restore");
        for (a, b) in self
            .conv
            .iter()
            .zip(&other.conv)
            .chain(self.ssm.iter().zip(&other.ssm))
        {
            rec.copy(b, a)?;
        }
        rec.submit()?;
        Ok(())
    }
}

/// How to pick the next token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 is greedy.
    pub temperature: f32,
    /// Candidates kept (0: 256 at most).
    pub top_k: usize,
    /// Nucleus mass kept among the candidates (1.0: all).
    pub top_p: f32,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// A loaded Mamba language model.
pub struct Mamba {
    pub config: MambaConfig,
    embedding: RowBlocks,
    layers: Vec<Layer>,
    norm_f: Tensor,
    lm_head: RowBlocks,
}

fn bias_or_zero(dev: &Device, ck: &Checkpoint, key: &str, n: usize) -> Result<Tensor> {
    let v = if ck.contains(key) {
        ck.f32(key, &[n])?
    } else {
        vec![0.0; n]
    };
    Ok(dev.weight_f32(&v, &[n])?)
}

impl Mamba {
    pub fn load(dev: &Device, md: &ModelDir) -> Result<Self> {
        let mut config = MambaConfig::from_json(&md.config, &md.path.join("config.json"))?;
        let ck = &md.checkpoint;
        let emb_key = if ck.contains("backbone.embeddings.weight") {
            "backbone.embeddings.weight"
        } else {
            "backbone.embedding.weight"
        };
        let rows = ck.shape(emb_key).map(|s| s[0]).ok_or_else(|| {
            ModelError::Load(spikescan_loader::LoadError::Missing {
                path: ck.path().to_path_buf(),
                key: "backbone.embedding.weight".into(),
            })
        })?;
        if rows < config.vocab_size {
            return Err(ModelError::Config {
                path: md.path.join("config.json"),
                message: format!(
                    "vocab_size {} exceeds the embedding's {rows} rows",
                    config.vocab_size
                ),
            });
        }
        config.vocab_padded = rows;
        // lm_head.weight present means untied, whatever the config says.
        config.tie = !ck.contains("lm_head.weight");
        let c = &config;
        let (dm, d, n, r, k) = (c.d_model, c.d_inner, c.d_state, c.dt_rank, c.d_conv);
        let w = |key: &str, shape: &[usize]| -> Result<Tensor> {
            Ok(dev.weight_f32(&ck.f32(key, shape)?, shape)?)
        };
        // in_proj, x_proj and out_proj: f16 where the weights are (dt_proj stays f32: the
        // decode state update reads it).
        let up = md.uploader(dev)?;
        let mat = |key: &str, shape: &[usize]| up.matrix(&ck.f32(key, shape)?, shape);
        // A vocabulary-sized matrix may exceed one storage binding (128 MiB on many adapters:
        // mamba-130m's is 147 MiB and mamba-1.4b's 412 MB in f32): it is kept in f32, split
        // into row blocks that each fit.
        let big = |key: &str| -> Result<RowBlocks> {
            Ok(RowBlocks::new(dev, &ck.f32(key, &[rows, dm])?, rows, dm)?)
        };
        let embedding = big(emb_key)?;
        let mut layers = Vec::new();
        for i in 0..c.n_layer {
            let p = format!("backbone.layers.{i}");
            let m = format!("{p}.mixer");
            let a_log = ck.f32(&format!("{m}.A_log"), &[d, n])?;
            let a: Vec<f32> = a_log.iter().map(|v| -v.exp()).collect();
            let opt = |key: String, len: usize| -> Result<Option<Tensor>> {
                Ok(if ck.contains(&key) {
                    Some(w(&key, &[len])?)
                } else {
                    None
                })
            };
            layers.push(Layer {
                norm: w(&format!("{p}.norm.weight"), &[dm])?,
                in_proj: mat(&format!("{m}.in_proj.weight"), &[2 * d, dm])?,
                in_bias: opt(format!("{m}.in_proj.bias"), 2 * d)?,
                conv_w: dev
                    .weight_f32(&ck.f32(&format!("{m}.conv1d.weight"), &[d, 1, k])?, &[d, k])?,
                conv_b: bias_or_zero(dev, ck, &format!("{m}.conv1d.bias"), d)?,
                x_proj: mat(&format!("{m}.x_proj.weight"), &[r + 2 * n, d])?,
                dt_proj: w(&format!("{m}.dt_proj.weight"), &[d, r])?,
                scan: dev.weight_f32(
                    &pack_scan_weights(
                        &a,
                        &ck.f32(&format!("{m}.dt_proj.bias"), &[d])?,
                        &ck.f32(&format!("{m}.D"), &[d])?,
                    )?,
                    &[d, n + 2],
                )?,
                out_proj: mat(&format!("{m}.out_proj.weight"), &[dm, d])?,
                out_bias: opt(format!("{m}.out_proj.bias"), dm)?,
            });
        }
        let norm_f = w("backbone.norm_f.weight", &[dm])?;
        let lm_head = if c.tie {
            embedding.clone()
        } else {
            big("lm_head.weight")?
        };
        Ok(Self {
            config,
            embedding,
            layers,
            norm_f,
            lm_head,
        })
    }

    /// How many storage bindings the embedding table takes (more than one where it exceeds
    /// the device's binding limit).
    pub fn vocab_blocks(&self) -> usize {
        self.embedding.blocks()
    }

    /// A fresh (zero) state for `batch` sequences.
    pub fn new_state(&self, dev: &Device, batch: usize) -> Result<MambaState> {
        let c = &self.config;
        let zeros = |shape: &[usize]| -> Result<Tensor> {
            let t = dev.alloc_in(shape, DType::F32, Residency::Owned)?;
            dev.write(&t, &vec![0u8; t.numel() * 4])?;
            Ok(t)
        };
        let mut conv = Vec::new();
        let mut ssm = Vec::new();
        for _ in 0..c.n_layer {
            conv.push(zeros(&[batch, c.d_inner, c.d_conv - 1])?);
            ssm.push(zeros(&[batch, c.d_inner, c.d_state])?);
        }
        Ok(MambaState { batch, conv, ssm })
    }

    /// Checks token ids against the vocabulary (the boundary: the GPU gather cannot fail).
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(ModelError::Input("the prompt is empty".into()));
        }
        if let Some(&bad) = ids
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_padded)
        {
            return Err(ModelError::Input(format!(
                "token id {bad} is out of range: the vocabulary has {} entries",
                self.config.vocab_padded
            )));
        }
        Ok(())
    }

    /// The block's input norm: the first layer starts the residual stream, later ones add
    /// into it (mamba_ssm's fused add + norm).
    fn pre_norm(
        rec: &mut Recorder,
        hidden: &Tensor,
        residual: &mut Option<Tensor>,
        w: &Tensor,
        eps: f32,
    ) -> Result<Tensor> {
        Ok(match residual.as_ref() {
            None => {
                *residual = Some(hidden.clone());
                rms_norm(rec, hidden, w, eps)?
            }
            Some(res) => {
                let (nm, sum) = add_rms_norm(rec, hidden, res, w, eps)?;
                *residual = Some(sum);
                nm
            }
        })
    }

    /// Falcon-Mamba's weightless RMSNorms of dt, B and C, in place on x_proj's output
    /// `[rows, R + 2N]` (nothing for plain Mamba).
    fn mixer_norms(&self, rec: &mut Recorder, xdbl: &Tensor) -> Result<()> {
        let c = &self.config;
        if let Some(eps) = c.mixer_rms_eps {
            let (r, n) = (c.dt_rank, c.d_state);
            rms_norm_segments(rec, xdbl, &[(0, r), (r, n), (r + n, n)], eps)?;
        }
        Ok(())
    }

    /// dt_proj (without its bias) on the dt columns of x_proj's output `[rows, R + 2N]`.
    fn dt_gemm(rows: usize, d: usize, r: usize, n: usize) -> Gemm {
        Gemm {
            batch: 1,
            m: rows,
            n: d,
            k: r,
            x_strides: [0, r + 2 * n, 1],
            w_strides: [0, r, 1],
            bias_on_rows: false,
            x_offset: 0,
            out_row_stride: d,
            out_offset: 0,
        }
    }

    /// Where the scan finds its inputs: u and dt `[B, L, D]`, B and C in x_proj's output
    /// `[B, L, R + 2N]`, z in in_proj's output `[B, L, 2D]`.
    fn scan_layout(batch: usize, len: usize, d: usize, n: usize, r: usize) -> ScanLayout {
        ScanLayout {
            batch,
            len,
            d,
            n,
            u_stride: d,
            dt_stride: d,
            bc_stride: r + 2 * n,
            b_offset: r,
            c_offset: r + n,
            z_stride: 2 * d,
            z_offset: d,
        }
    }

    fn proj(rec: &mut Recorder, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        Ok(linear(rec, x, w, b)?)
    }

    /// Records a prompt `ids [B, L]` through every layer, continuing from `state` and leaving
    /// the final states in it. Returns logits `[B, L, V]` (`all`) or `[B, V]` (last position).
    /// A one-token prompt (L = 1) runs the decoding step ([`Mamba::step`]: 4 dispatches a layer
    /// and the state update instead of the prompt scan, which would keep 1 of 16 lanes busy).
    pub fn prefill(
        &self,
        rec: &mut Recorder,
        ids: &Tensor,
        state: &mut MambaState,
        all: bool,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, l) = (ids.dim(0), ids.dim(1));
        if b != state.batch {
            return Err(ModelError::Input(format!(
                "{b} sequences for a state of {}",
                state.batch
            )));
        }
        if l == 1 {
            let logits = self.step(rec, ids, state)?;
            return Ok(if all {
                logits.reshape(&[b, 1, c.vocab_padded])?
            } else {
                logits
            });
        }
        let (dm, d, n, r) = (c.d_model, c.d_inner, c.d_state, c.dt_rank);
        let mut hidden = self.embedding.gather(rec, ids)?.reshape(&[b * l, dm])?;
        let mut residual: Option<Tensor> = None;
        for (i, ly) in self.layers.iter().enumerate() {
            let normed = Self::pre_norm(rec, &hidden, &mut residual, &ly.norm, c.eps)?;
            let xz = Self::proj(rec, &normed, &ly.in_proj, ly.in_bias.as_ref())?; // [B·L, 2D]
            let u = rec.alloc(&[b, l, d], DType::F32)?;
            let conv_state = rec.alloc(&[b, d, c.d_conv - 1], DType::F32)?;
            let cl = ConvLayout {
                batch: b,
                len: l,
                d,
                k: c.d_conv,
                x_stride: 2 * d,
            };
            causal_conv1d_into(
                rec,
                &cl,
                &xz,
                &ly.conv_w,
                &ly.conv_b,
                Some(&state.conv[i]),
                &u,
                &conv_state,
            )?;
            // Into the state's own buffers: they stay the same for the state's lifetime, so a
            // captured decoder (`Mamba::decoder`) stays valid across prefills.
            rec.copy(&conv_state, &state.conv[i])?;
            let xdbl = Self::proj(rec, &u.reshape(&[b * l, d])?, &ly.x_proj, None)?; // [B·L, R + 2N]
            self.mixer_norms(rec, &xdbl)?;
            let dt = rec.alloc(&[b * l, d], DType::F32)?;
            let g = Self::dt_gemm(b * l, d, r, n);
            gemm_into(rec, &g, &xdbl, &ly.dt_proj, None, &dt)?;
            let sl = Self::scan_layout(b, l, d, n, r);
            let y = rec.alloc(&[b, l, d], DType::F32)?;
            let h = rec.alloc(&[b, d, n], DType::F32)?;
            let sw = ScanWeights { packed: &ly.scan };
            selective_scan_into(
                rec,
                &sl,
                &u,
                &dt,
                &xdbl,
                &xz,
                &sw,
                Some(&state.ssm[i]),
                &y,
                &h,
            )?;
            rec.copy(&h, &state.ssm[i])?;
            hidden = Self::proj(
                rec,
                &y.reshape(&[b * l, d])?,
                &ly.out_proj,
                ly.out_bias.as_ref(),
            )?;
        }
        let (normed, _) = add_rms_norm(
            rec,
            &hidden,
            residual.as_ref().expect("at least one layer"),
            &self.norm_f,
            c.eps,
        )?;
        let v = c.vocab_padded;
        if all {
            Ok(self.lm_head.head(rec, &normed)?.reshape(&[b, l, v])?)
        } else {
            let out = rec.alloc(&[b, v], DType::F32)?;
            // The last position of each sequence: rows l - 1, 2l - 1, ...
            let g = Gemm {
                batch: b,
                m: 1,
                n: v,
                k: dm,
                x_strides: [l * dm, 0, 1],
                w_strides: [0, dm, 1],
                bias_on_rows: false,
                x_offset: (l - 1) * dm,
                out_row_stride: v,
                out_offset: 0,
            };
            self.lm_head.head_into(rec, &g, &normed, &out)?;
            Ok(out)
        }
    }

    /// Records one decoding step: `ids [B]` (one token per sequence) → logits `[B, V]`, the
    /// states updated in place.
    pub fn step(&self, rec: &mut Recorder, ids: &Tensor, state: &mut MambaState) -> Result<Tensor> {
        let c = &self.config;
        let b = ids.numel();
        if b != state.batch {
            return Err(ModelError::Input(format!(
                "{b} tokens for a state of {} sequences",
                state.batch
            )));
        }
        let (d, n, r) = (c.d_inner, c.d_state, c.dt_rank);
        // The residual stream: the embedding, then each layer's out_proj added to it in
        // out_proj's epilogue (mamba_ssm's residual = hidden + residual, one step early).
        let mut residual = self.embedding.gather(rec, &ids.reshape(&[b])?)?;
        for (i, ly) in self.layers.iter().enumerate() {
            // The pre-norm inside in_proj, in_proj [B, 2D], and the conv step of its
            // x half in its epilogue, one dispatch (batch <= 32, no in_proj bias; apart
            // otherwise): u = silu(conv(x)) [B, D].
            let u = rec.alloc(&[b, d], DType::F32)?;
            let conv = ConvStep {
                weight: &ly.conv_w,
                bias: &ly.conv_b,
                state: &state.conv[i],
                out: &u,
                k: c.d_conv,
            };
            let norm = PreNorm {
                weight: &ly.norm,
                eps: c.eps,
            };
            let xz = linear_conv_step(
                rec,
                &residual,
                Some(norm),
                &ly.in_proj,
                ly.in_bias.as_ref(),
                &conv,
            )?;
            let xdbl = Self::proj(rec, &u, &ly.x_proj, None)?;
            self.mixer_norms(rec, &xdbl)?;
            // dt_proj runs inside the state update (one dispatch fewer per layer).
            let sl = Self::scan_layout(b, 1, d, n, r);
            let y = rec.alloc(&[b, d], DType::F32)?;
            let sw = ScanWeights { packed: &ly.scan };
            let dtp = DtProj {
                weight: &ly.dt_proj,
                rank: r,
                offset: 0,
            };
            selective_state_update(rec, &sl, &u, &dtp, &xdbl, &xz, &sw, &state.ssm[i], &y)?;
            residual = linear_residual(rec, &y, &ly.out_proj, ly.out_bias.as_ref(), &residual)?;
        }
        // The final norm inside the head's products (skinny: batch <= 32).
        let norm = PreNorm {
            weight: &self.norm_f,
            eps: c.eps,
        };
        Ok(self.lm_head.head_norm(rec, &residual, norm)?)
    }

    /// Logits `[B, L, V]` of a batch of prompts (`ids` row-major `[B, L]`), from fresh states;
    /// prompts too large for one storage binding run in chunks (one submit each).
    pub fn logits(&self, dev: &Device, ids: &[u32], batch: usize) -> Result<Vec<f32>> {
        self.check_ids(ids)?;
        if batch == 0 || !ids.len().is_multiple_of(batch) {
            return Err(ModelError::Input(format!(
                "{} ids do not split into {batch} sequences",
                ids.len()
            )));
        }
        let l = ids.len() / batch;
        let c = &self.config;
        let v = c.vocab_padded;
        // Token rows per pass: the widest per-token activation (in_proj's [tokens, 2 d_inner]
        // or the logits' [tokens, V]) must fit one storage binding. B = 8 x L = 2048 prompts
        // of mamba-130m have 3.3 GB of logits; they run as groups of sequences and chunks of
        // tokens, each chunk's scan and conv continuing from the state the previous one left.
        let limit = dev.max_binding_bytes();
        let row_bytes = 4 * (2 * c.d_inner).max(v).max(c.d_model) as u64;
        let rows = (limit / row_bytes).max(1) as usize;
        let group = batch.min(rows);
        let mut out = vec![0.0f32; batch * l * v];
        for b0 in (0..batch).step_by(group) {
            let g = group.min(batch - b0);
            let chunk = (rows / g).clamp(1, l);
            let mut state = self.new_state(dev, g)?;
            for t0 in (0..l).step_by(chunk) {
                let n = chunk.min(l - t0);
                let sub: Vec<u32> = (b0..b0 + g)
                    .flat_map(|s| ids[s * l + t0..s * l + t0 + n].iter().copied())
                    .collect();
                let t = dev.tensor_u32(&sub, &[g, n])?;
                let mut rec = dev.recorder("mamba prefill");
                let logits = self.prefill(&mut rec, &t, &mut state, true)?;
                rec.submit()?;
                let got = dev.read_f32(&logits)?;
                for (i, row) in got.chunks(n * v).enumerate() {
                    let at = ((b0 + i) * l + t0) * v;
                    out[at..at + n * v].copy_from_slice(row);
                }
            }
        }
        Ok(out)
    }

    /// Picks the next token of each sequence from logits `[B, V]` on the GPU, submitting
    /// `rec` (which holds the step that produced them): greedy reads back one id per
    /// sequence; sampling reads back only the top-k candidates. Padded vocabulary rows are
    /// never picked.
    pub fn pick(
        &self,
        mut rec: Recorder,
        logits: &Tensor,
        s: &Sampling,
        rng: &mut u64,
    ) -> Result<Vec<u32>> {
        let dev = rec.device();
        let v = self.config.vocab_size.min(logits.dim(-1));
        let k = if s.temperature <= 0.0 {
            1
        } else if s.top_k == 0 {
            256.min(v)
        } else {
            s.top_k.min(v)
        };
        let rows = logits.numel() / logits.dim(-1);
        let idx = rec.alloc(&[rows, k], DType::U32)?;
        let val = rec.alloc(&[rows, k], DType::F32)?;
        topk_prefix_into(&mut rec, logits, v, k, &idx, &val)?;
        rec.submit()?;
        let idx = dev.read_u32(&idx)?;
        if k == 1 {
            return Ok(idx);
        }
        let val = dev.read_f32(&val)?;
        Ok(idx
            .chunks(k)
            .zip(val.chunks(k))
            .map(|(ids, vals)| sample(ids, vals, s, rng))
            .collect())
    }

    /// The decode step of `state`'s batch captured as graphs (see [`MambaDecoder`]): bind
    /// groups, parameters and pipelines built once, replayed every token. Capture needs no
    /// other recording open on the device.
    pub fn decoder(&self, dev: &Device, state: &mut MambaState) -> Result<MambaDecoder> {
        let b = state.batch;
        let ids = dev.alloc_in(&[b], DType::U32, Residency::Owned)?;
        let mut rec = dev.capture("mamba step")?;
        let logits = self.step(&mut rec, &ids, state)?;
        let step = rec.into_graph()?;
        let v = self.config.vocab_size.min(logits.dim(-1));
        let best = dev.alloc_in(&[b, 1], DType::F32, Residency::Owned)?;
        let mut rec = dev.capture("mamba argmax")?;
        topk_prefix_into(&mut rec, &logits, v, 1, &ids.reshape(&[b, 1])?, &best)?;
        let argmax = rec.into_graph()?;
        Ok(MambaDecoder {
            step,
            argmax,
            ids,
            logits,
            batch: b,
        })
    }

    /// Starts generating after `prompt` (one sequence): a fresh state, its captured decoder
    /// and the sampler's seed; [`Mamba::next_token`] then produces one token at a time.
    /// `max_new` bounds how far greedy decoding may run ahead of the tokens taken (None: one
    /// step ahead, without bound).
    pub fn start_generation(
        &self,
        dev: &Device,
        prompt: &[u32],
        s: &Sampling,
        max_new: Option<usize>,
    ) -> Result<Generation> {
        self.check_ids(prompt)?;
        let mut state = self.new_state(dev, 1)?;
        let decoder = self.decoder(dev, &mut state)?;
        Ok(Generation {
            state,
            decoder,
            ring: ReadbackRing::new(dev, 4, 3)?,
            sampling: *s,
            rng: s.seed ^ 0x9E37_79B9_7F4A_7C15,
            prompt: Some(prompt.to_vec()),
            budget: max_new,
            produced: 0,
            submitted: 0,
        })
    }

    /// The next token of `g`. The first call runs the prompt through the parallel scan; then
    /// each token is one replay of the captured step. Greedy decoding keeps the ids on the
    /// GPU (the argmax writes the id the next step's embedding gather reads) and keeps a
    /// second step in flight while the host waits for the first one's id, read from an
    /// asynchronous copy. Sampling reads the top-k candidates back and writes the chosen id.
    pub fn next_token(&self, dev: &Device, g: &mut Generation) -> Result<u32> {
        if g.budget.is_some_and(|b| g.produced >= b) {
            return Err(ModelError::Input(format!(
                "the generation was started for {} tokens",
                g.produced
            )));
        }
        let dec = &g.decoder;
        // The prompt, recorded (not submitted) with its last position's logits.
        let prefill = |prompt: Vec<u32>, state: &mut MambaState| -> Result<(Recorder, Tensor)> {
            let ids = dev.tensor_u32(&prompt, &[1, prompt.len()])?;
            let mut rec = dev.recorder("mamba prefill");
            let logits = self.prefill(&mut rec, &ids, state, false)?;
            Ok((rec, logits))
        };
        let next = if g.sampling.temperature > 0.0 {
            if let Some(prompt) = g.prompt.take() {
                let (rec, logits) = prefill(prompt, &mut g.state)?;
                self.pick(rec, &logits, &g.sampling, &mut g.rng)?[0]
            } else {
                dev.replay(&[&dec.step], None)?;
                let rec = dev.recorder("mamba pick");
                self.pick(rec, &dec.logits, &g.sampling, &mut g.rng)?[0]
            }
        } else {
            if let Some(prompt) = g.prompt.take() {
                let (mut rec, logits) = prefill(prompt, &mut g.state)?;
                let v = self.config.vocab_size.min(logits.dim(-1));
                let best = rec.alloc(&[1, 1], DType::F32)?;
                topk_prefix_into(&mut rec, &logits, v, 1, &dec.ids.reshape(&[1, 1])?, &best)?;
                rec.submit()?;
                dev.replay(&[], Some((&dec.ids, &mut g.ring)))?;
                g.submitted = 1;
            }
            let limit = g.budget.unwrap_or(usize::MAX);
            while g.submitted < limit && g.ring.in_flight() < 2 {
                dev.replay(&[&dec.step, &dec.argmax], Some((&dec.ids, &mut g.ring)))?;
                g.submitted += 1;
            }
            let bytes = g.ring.take_oldest(dev)?.ok_or_else(|| {
                ModelError::Input("no token in flight (the generation ended)".into())
            })?;
            u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
        };
        if g.sampling.temperature > 0.0 {
            // The next step reads the chosen id.
            dev.write(&dec.ids, &next.to_le_bytes())?;
        }
        g.produced += 1;
        Ok(next)
    }

    /// Generates up to `max_new` tokens after `prompt` (one sequence) with
    /// [`Mamba::start_generation`] and [`Mamba::next_token`]: the prompt through the parallel
    /// scan, then one replay of the captured decode step per token (greedy: ids on the GPU,
    /// two steps in flight). `on_token` sees each token as it is produced. Returns prompt +
    /// new tokens.
    pub fn generate(
        &self,
        dev: &Device,
        prompt: &[u32],
        max_new: usize,
        s: &Sampling,
        mut on_token: impl FnMut(u32),
    ) -> Result<Vec<u32>> {
        let mut g = self.start_generation(dev, prompt, s, Some(max_new))?;
        let mut out = prompt.to_vec();
        for _ in 0..max_new {
            let next = self.next_token(dev, &mut g)?;
            out.push(next);
            on_token(next);
        }
        Ok(out)
    }
}

/// One sequence batch's decode step captured for replay ([`Mamba::decoder`]): the step graph
/// reads the ids in [`MambaDecoder::ids`] (`[B]` u32) and the state it was captured for, and
/// writes [`MambaDecoder::logits`] (`[B, V]`); the argmax graph writes each row's best id
/// back into `ids`, so replaying both advances greedy decoding without the host. The graphs
/// keep the state's buffers: prefill, `restore` and `copy_slot`, which write into them, keep
/// it valid.
pub struct MambaDecoder {
    pub step: Graph,
    pub argmax: Graph,
    pub ids: Tensor,
    pub logits: Tensor,
    pub batch: usize,
}

impl MambaDecoder {
    /// Dispatches of one greedy step (the step and the argmax).
    pub fn dispatches_per_step(&self) -> usize {
        self.step.dispatches() + self.argmax.dispatches()
    }
}

/// A generation in progress (one sequence): its state and captured decoder, the ring its ids
/// come back through, the sampler's RNG and the prompt until it has run.
pub struct Generation {
    state: MambaState,
    decoder: MambaDecoder,
    ring: ReadbackRing,
    sampling: Sampling,
    rng: u64,
    prompt: Option<Vec<u32>>,
    /// Tokens this generation may produce (None: unbounded).
    budget: Option<usize>,
    produced: usize,
    /// Greedy steps submitted (each yields one token).
    submitted: usize,
}

/// Samples one id from top-k candidates (sorted best first) with temperature and top-p.
fn sample(ids: &[u32], vals: &[f32], s: &Sampling, rng: &mut u64) -> u32 {
    let max = vals[0] as f64;
    let mut p: Vec<f64> = vals
        .iter()
        .map(|&v| ((v as f64 - max) / s.temperature as f64).exp())
        .collect();
    let total: f64 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= total);
    let mut keep = p.len();
    let mut acc = 0.0;
    for (i, x) in p.iter().enumerate() {
        acc += x;
        if acc >= s.top_p as f64 {
            keep = i + 1;
            break;
        }
    }
    let mass: f64 = p[..keep].iter().sum();
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let mut r = (*rng >> 11) as f64 / (1u64 << 53) as f64 * mass;
    for (i, pi) in p[..keep].iter().enumerate() {
        r -= pi;
        if r <= 0.0 {
            return ids[i];
        }
    }
    ids[keep - 1]
}
