//! Model graphs for spikescan, each assembled from runtime ops, and the model-directory
//! format: a directory with `model.safetensors` (the official state_dict, keys unchanged)
//! and `config.json` (`"architecture"` plus the official constructor's keyword arguments).

pub mod audio;
pub mod eval;
pub mod input;
pub mod lmuformer;
pub mod mamba;
pub mod meta_spikeformer;
pub mod spikformer;
pub mod stats;
pub mod taps;
pub mod text;
pub mod vision;

use std::path::{Path, PathBuf};

use serde_json::Value;
use spikescan_loader::{Checkpoint, LoadError};
use spikescan_runtime::{Device, RuntimeError};
use thiserror::Error;

pub use lmuformer::{LmuSnapshot, LmuStream, Lmuformer, LmuformerConfig};
pub use mamba::{Generation, Mamba, MambaConfig, MambaDecoder, MambaState, Sampling};
pub use meta_spikeformer::{HeadInput, MetaSpikeformer, MetaSpikeformerConfig};
pub use spikformer::{Spikformer, SpikformerConfig};

/// What went wrong while loading or running a model.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("unknown architecture '{found}' in {path} (known: {known})")]
    UnknownArchitecture {
        path: PathBuf,
        found: String,
        known: String,
    },
    #[error("model directory {0} does not exist")]
    NoDirectory(PathBuf),
    #[cfg(feature = "hub")]
    #[error("{0}")]
    Hub(#[from] spikescan_loader::hub::HubError),
    /// A path that is no directory and reads as a Hub id that names no repository.
    #[cfg(feature = "hub")]
    #[error("there is no model directory {path}, and {hub}")]
    Nowhere {
        path: PathBuf,
        hub: Box<spikescan_loader::hub::HubError>,
    },
    #[error("{0}")]
    Input(String),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// Architectures this build runs.
pub const ARCHITECTURES: &[&str] = &[
    "spikformer",
    "meta_spikeformer",
    "lmuformer",
    "spiking_lmuformer",
    "mamba",
    "falcon_mamba",
];

/// config.json of a named preset (used when a model directory has none and is named so).
pub fn preset(name: &str) -> Option<Value> {
    let spikformer = |embed: u64,
                      classes: u64,
                      variant: &str,
                      img: u64,
                      depths: u64,
                      patch: u64| {
        serde_json::json!({
            "architecture": "spikformer", "variant": variant, "T": 4,
            "img_size_h": img, "img_size_w": img, "patch_size": patch, "in_channels": 3,
            "num_classes": classes, "embed_dims": embed, "num_heads": 8, "mlp_ratios": 4, "depths": depths
        })
    };
    let meta = |e: [u64; 4]| {
        serde_json::json!({
            "architecture": "meta_spikeformer", "T": 1, "kd": false, "img_size_h": 224,
            "img_size_w": 224, "patch_size": 16, "in_channels": 3, "num_classes": 1000,
            "embed_dim": e, "num_heads": 8, "mlp_ratios": 4, "depths": 8
        })
    };
    let mamba = |d_model: u64, n_layer: u64| {
        serde_json::json!({
            "d_model": d_model, "n_layer": n_layer, "vocab_size": 50277, "ssm_cfg": {},
            "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true,
            "pad_vocab_size_multiple": 8, "tie_embeddings": true
        })
    };
    let lmu = |arch: &str| {
        serde_json::json!({
            "architecture": arch, "embed_dims": 256, "num_heads": 16, "mlp_ratios": 4,
            "in_channels": 128, "num_classes": 35, "depths": 1, "seq_len": 128, "theta": 128
        })
    };
    Some(match name {
        "lmuformer-gsc" => lmu("lmuformer"),
        "spiking-lmuformer-gsc" => lmu("spiking_lmuformer"),
        "mamba-130m" => mamba(768, 24),
        "mamba-370m" => mamba(1024, 48),
        "mamba-790m" => mamba(1536, 48),
        "mamba-1.4b" => mamba(2048, 48),
        // tiiuae/falcon-mamba-7b (and its instruct variant), as its config.json has it
        // (`expand` 16 beside `intermediate_size` 8192: transformers, and spikescan, take
        // intermediate_size; the published file has no mixer_rms_eps, so 1e-6).
        "falcon-mamba-7b" => serde_json::json!({
            "model_type": "falcon_mamba", "hidden_size": 4096, "num_hidden_layers": 64,
            "vocab_size": 65024, "state_size": 16, "conv_kernel": 4, "expand": 16,
            "intermediate_size": 8192, "time_step_rank": 256, "use_bias": false,
            "use_conv_bias": true, "layer_norm_epsilon": 1e-5, "mixer_rms_eps": 1e-6,
            "residual_in_fp32": true, "tie_word_embeddings": false
        }),
        "spikformer-8-384" => spikformer(384, 1000, "imagenet", 224, 8, 16),
        "spikformer-8-512" => spikformer(512, 1000, "imagenet", 224, 8, 16),
        "spikformer-8-768" => spikformer(768, 1000, "imagenet", 224, 8, 16),
        "spikformer-4-384-cifar10" => spikformer(384, 10, "cifar", 32, 4, 4),
        "spikformer-4-384-cifar100" => spikformer(384, 100, "cifar", 32, 4, 4),
        "meta-spikeformer-8-384" => meta([96, 192, 384, 480]),
        "meta-spikeformer-8-512" => meta([128, 256, 512, 640]),
        "meta-spikeformer-8-768" => meta([192, 384, 768, 960]),
        _ => return None,
    })
}

/// Every preset name [`preset`] knows.
pub const PRESETS: &[&str] = &[
    "spikformer-8-384",
    "spikformer-8-512",
    "spikformer-8-768",
    "spikformer-4-384-cifar10",
    "spikformer-4-384-cifar100",
    "meta-spikeformer-8-384",
    "meta-spikeformer-8-512",
    "meta-spikeformer-8-768",
    "lmuformer-gsc",
    "spiking-lmuformer-gsc",
    "mamba-130m",
    "mamba-370m",
    "mamba-790m",
    "mamba-1.4b",
    "falcon-mamba-7b",
];

/// Whether a preset's weights can be held by a device with the given limits.
#[derive(Clone, Debug, PartialEq)]
pub struct PresetFit {
    pub name: &'static str,
    pub architecture: String,
    pub parameters: u64,
    /// The weights in f32 on the GPU.
    pub weight_bytes: u64,
    /// The largest tensor that must fit one binding, and its key.
    pub largest_key: String,
    pub largest_bytes: u64,
    /// Vocabulary matrices (embedding, LM head) over one binding, held in row blocks.
    pub row_blocked: Vec<String>,
    /// Every weight fits (row-blocked vocabulary matrices included).
    pub fits: bool,
}

/// What each preset needs of `binding_limit` (bytes, [`Device::max_binding_bytes`]): every
/// weight but the vocabulary matrices (split into row blocks) must fit one binding. Batches,
/// prompts and logits over one binding run in micro-batches and chunks, and every kernel fits
/// WebGPU's default limits, so the weights decide.
pub fn preset_fits(binding_limit: u64) -> Vec<PresetFit> {
    PRESETS
        .iter()
        .filter_map(|&name| {
            let cfg = preset(name)?;
            let path = Path::new(name);
            let arch = cfg
                .get("architecture")
                .or_else(|| cfg.get("model_type"))
                .and_then(|v| v.as_str())
                .unwrap_or("mamba")
                .to_string();
            let shapes = match arch.as_str() {
                "spikformer" => SpikformerConfig::from_json(&cfg, path)
                    .ok()?
                    .weight_shapes(),
                "meta_spikeformer" => MetaSpikeformerConfig::from_json(&cfg, path)
                    .ok()?
                    .weight_shapes(),
                "lmuformer" | "spiking_lmuformer" => {
                    LmuformerConfig::from_json(&cfg, path, arch == "spiking_lmuformer")
                        .ok()?
                        .weight_shapes()
                }
                _ => MambaConfig::from_json(&cfg, path)
                    .ok()?
                    .weight_shapes(false),
            };
            let vocab = |k: &str| k.contains("embedding") || k.starts_with("lm_head");
            let bytes = |s: &[usize]| s.iter().product::<usize>() as u64 * 4;
            let parameters = shapes
                .iter()
                .map(|(_, s)| s.iter().product::<usize>() as u64)
                .sum();
            let (largest_key, largest_bytes) = shapes
                .iter()
                .filter(|(k, _)| !vocab(k))
                .map(|(k, s)| (k.clone(), bytes(s)))
                .max_by_key(|(_, b)| *b)
                .unwrap_or_default();
            let row_blocked = shapes
                .iter()
                .filter(|(k, s)| vocab(k) && bytes(s) > binding_limit)
                .map(|(k, _)| k.clone())
                .collect();
            Some(PresetFit {
                name,
                architecture: arch,
                parameters,
                weight_bytes: parameters * 4,
                largest_key,
                largest_bytes,
                row_blocked,
                fits: largest_bytes <= binding_limit,
            })
        })
        .collect()
}

/// Random weights for `shapes` (fan-in scaled uniform; BatchNorms with unit variance, zero
/// mean and a positive bias so neurons fire), as `(key, shape, data)`: for tests and
/// benchmarks at official shapes without the official checkpoints.
pub fn random_weights(
    shapes: &[(String, Vec<usize>)],
    seed: u64,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut state = seed ^ 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32
    };
    let is_bn = |key: &str| {
        let prefix = key.rsplit_once('.').map_or("", |p| p.0);
        shapes
            .iter()
            .any(|(k, _)| *k == format!("{prefix}.running_mean"))
    };
    shapes
        .iter()
        .map(|(k, shape)| {
            let n: usize = shape.iter().product();
            let data = if k.ends_with("running_var") || (is_bn(k) && k.ends_with(".weight")) {
                vec![1.0; n]
            } else if k.ends_with("running_mean") {
                vec![0.0; n]
            } else if is_bn(k) {
                (0..n).map(|_| 0.2 + 0.6 * next()).collect()
            } else {
                let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
                let a = (3.0 / fan_in as f32).sqrt();
                (0..n).map(|_| a * (2.0 * next() - 1.0)).collect()
            };
            (k.clone(), shape.clone(), data)
        })
        .collect()
}

/// Each input shape's largest activation per image, measured once by recording a forward
/// pass of one image (never submitted): what splits a batch into micro-batches.
#[derive(Default)]
pub(crate) struct MicroBatches(std::sync::Mutex<std::collections::HashMap<Vec<usize>, u64>>);

impl MicroBatches {
    /// Records `forward` over the batch `x` (`[B, …]`, one image per row), in micro-batches
    /// when the whole batch's largest activation would not fit one storage binding (128 MiB on
    /// WebGPU's default limits: Spikformer-8-384's first activation at 224 px, T = 4 is ~37 MiB
    /// per image). Activations are proportional to the batch, so the micro-batch is the
    /// binding limit over one image's largest activation. The micro-batches record into `rec`
    /// one after another and write their rows of one output; the result equals one pass's.
    /// `taps` keep whole-batch tensors, so with taps a batch must fit one pass.
    pub(crate) fn forward(
        &self,
        rec: &mut spikescan_runtime::Recorder,
        x: &spikescan_runtime::Tensor,
        taps: Option<&mut taps::Taps>,
        forward: impl Fn(
            &mut spikescan_runtime::Recorder,
            &spikescan_runtime::Tensor,
            Option<&mut taps::Taps>,
        ) -> Result<spikescan_runtime::Tensor>,
    ) -> Result<spikescan_runtime::Tensor> {
        let batch = x.shape().first().copied().unwrap_or(1);
        if batch <= 1 {
            return forward(rec, x, taps);
        }
        let dev = rec.device();
        let per_image = self.per_image(dev, x, &forward)?;
        let micro = (dev.max_binding_bytes() / per_image.max(1)).max(1) as usize;
        if micro >= batch {
            return forward(rec, x, taps);
        }
        if taps.is_some() {
            return Err(ModelError::Input(format!(
                "a batch of {batch} needs micro-batches of {micro} here (one image's largest \
                 activation is {per_image} bytes, a binding holds {}), and per-layer taps need \
                 one pass: run at most {micro} images at a time",
                dev.max_binding_bytes()
            )));
        }
        let row = x.numel() / batch;
        let mut out: Option<spikescan_runtime::Tensor> = None;
        let mut start = 0;
        while start < batch {
            let n = micro.min(batch - start);
            let mut shape = x.shape().to_vec();
            shape[0] = n;
            let part = rec.alloc(&shape, x.dtype())?;
            let es = x.dtype().size() as u64;
            rec.copy_region(
                x,
                (start * row) as u64 * es,
                &part,
                0,
                (n * row) as u64 * es,
            )?;
            let y = forward(rec, &part, None)?;
            let o = match &out {
                Some(o) => o.clone(),
                None => {
                    let mut s = y.shape().to_vec();
                    s[0] = batch;
                    let o = rec.alloc(&s, y.dtype())?;
                    out = Some(o.clone());
                    o
                }
            };
            let yrow = y.numel() / n;
            rec.copy_at(&y, &o, (start * yrow * y.dtype().size()) as u64)?;
            start += n;
        }
        out.ok_or_else(|| ModelError::Input("an empty batch".into()))
    }

    fn per_image(
        &self,
        dev: &Device,
        x: &spikescan_runtime::Tensor,
        forward: &impl Fn(
            &mut spikescan_runtime::Recorder,
            &spikescan_runtime::Tensor,
            Option<&mut taps::Taps>,
        ) -> Result<spikescan_runtime::Tensor>,
    ) -> Result<u64> {
        let mut shape = x.shape().to_vec();
        shape[0] = 1;
        if let Some(v) = self.0.lock().ok().and_then(|m| m.get(&shape).copied()) {
            return Ok(v);
        }
        let (probe, bytes) = spikescan_runtime::tensor::largest_allocation(|| -> Result<()> {
            let one = dev.alloc(&shape, x.dtype())?;
            let mut r = dev.recorder("micro-batch probe");
            forward(&mut r, &one, None)?;
            Ok(()) // dropped unsubmitted: nothing of it runs
        });
        probe?;
        if let Ok(mut m) = self.0.lock() {
            m.insert(shape, bytes);
        }
        Ok(bytes)
    }
}

/// Uploads a batch of images, records one forward pass with `forward`, submits and reads the
/// logits back: the body of every image model's `run`.
pub(crate) fn run_images(
    dev: &Device,
    images: &[f32],
    shape: &[usize],
    label: &'static str,
    check: impl FnOnce(&[usize]) -> Result<()>,
    forward: impl Fn(
        &mut spikescan_runtime::Recorder,
        &spikescan_runtime::Tensor,
    ) -> Result<spikescan_runtime::Tensor>,
) -> Result<Vec<f32>> {
    check(shape)?;
    if images.len() != shape.iter().product::<usize>() {
        return Err(ModelError::Input(format!(
            "{} values for an input of shape {shape:?}",
            images.len()
        )));
    }
    let batch = shape[0];
    let per_image = images.len() / batch.max(1);
    let run = |start: usize, n: usize| -> Result<Vec<f32>> {
        let mut s = shape.to_vec();
        s[0] = n;
        let x = dev.tensor_f32(&images[start * per_image..(start + n) * per_image], &s)?;
        let mut rec = dev.recorder(label);
        let logits = forward(&mut rec, &x)?;
        rec.submit()?;
        Ok(dev.read_f32(&logits)?)
    };
    // `forward` micro-batches activations itself; an input too large to upload as one tensor
    // runs in the largest halving that fits. A recording that fails to allocate is dropped
    // unsubmitted, so nothing of it runs.
    let mut micro = batch;
    let mut out = loop {
        match run(0, micro) {
            Ok(v) => break v,
            Err(ModelError::Runtime(RuntimeError::BufferTooLarge { .. })) if micro > 1 => {
                micro = micro.div_ceil(2);
            }
            Err(e) => return Err(e),
        }
    };
    let mut start = micro;
    while start < batch {
        let n = micro.min(batch - start);
        out.extend(run(start, n)?);
        start += n;
    }
    Ok(out)
}

/// Class names from `labels.txt` in a model directory (one a line), if it has one.
pub fn labels(dir: &Path) -> Option<Vec<String>> {
    std::fs::read_to_string(dir.join("labels.txt"))
        .ok()
        .map(|t| t.lines().map(str::to_string).collect())
}

/// The indices of `row`'s `n` largest entries, largest first (ties in index order).
pub fn top_classes(row: &[f32], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &c| row[c].total_cmp(&row[a]));
    order.truncate(n);
    order
}

/// A model directory: its config and its checkpoint.
pub struct ModelDir {
    pub path: PathBuf,
    pub config: Value,
    pub checkpoint: Checkpoint,
    /// How the model's matrices are kept on the GPU ([`ModelDir::with_weights`]).
    pub weights: WeightDtype,
}

/// How a model keeps its matrix weights — the operands of its GEMMs and implicit-GEMM
/// convolutions — on the GPU. Products always accumulate in f32, and everything else stays
/// f32: biases, norms and BatchNorms, LIF and scan parameters, depthwise and other thin-group
/// convolutions (direct kernels), vocabulary tables (embedding and LM head).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightDtype {
    /// f16 for a checkpoint stored in f16 or bf16, where the adapter has shader-f16; else f32
    /// (so an f32 checkpoint's outputs match PyTorch's).
    #[default]
    Auto,
    F32,
    /// f16 whatever the checkpoint holds (an error on an adapter without shader-f16).
    F16,
}

impl std::str::FromStr for WeightDtype {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            _ => Err(format!("unknown weight dtype '{s}' (auto, f32 or f16)")),
        }
    }
}

/// Uploads a model's weights: matrices in the dtype [`ModelDir::matrix_dtype`] chose,
/// everything else in f32.
#[derive(Clone, Copy)]
pub(crate) struct Uploader<'a> {
    pub dev: &'a Device,
    pub f16: bool,
}

impl Uploader<'_> {
    /// A GEMM operand.
    pub fn matrix(&self, v: &[f32], shape: &[usize]) -> Result<spikescan_runtime::Tensor> {
        Ok(if self.f16 {
            self.dev.weight_f16(v, shape)?
        } else {
            self.dev.weight_f32(v, shape)?
        })
    }
    /// A convolution's weight `[Cout, Cin / groups, ..]`: a matrix where the convolution runs
    /// as an implicit GEMM, else f32 (the direct kernel's).
    pub fn conv(
        &self,
        v: &[f32],
        shape: &[usize],
        groups: usize,
    ) -> Result<spikescan_runtime::Tensor> {
        if shape[0] / groups.max(1) >= spikescan_runtime::ops::conv::GEMM_MIN_ROWS {
            self.matrix(v, shape)
        } else {
            Ok(self.dev.weight_f32(v, shape)?)
        }
    }
}

impl ModelDir {
    /// A model directory held in memory: `config` plus tensors (random weights of an
    /// official shape, for benchmarks and tests).
    pub fn in_memory(
        name: &str,
        config: Value,
        tensors: &[(String, Vec<usize>, Vec<f32>)],
    ) -> Result<Self> {
        Ok(Self {
            path: PathBuf::from(name),
            config,
            checkpoint: Checkpoint::from_f32(name, tensors)?,
            weights: WeightDtype::Auto,
        })
    }

    /// Opens a model: a directory with `config.json` (or a preset named like the directory)
    /// and `model.safetensors` (or `model.safetensors.index.json` and its shards); or, where
    /// no such directory exists and `spec` is a Hub id (`owner/name[@revision]`), that
    /// repository, fetched into the Hub cache ([`spikescan_loader::hub`], settings from
    /// `HF_*` variables: [`HubOptions::from_env`](spikescan_loader::hub::HubOptions)).
    pub fn open(spec: impl AsRef<Path>) -> Result<Self> {
        let path = spec.as_ref();
        #[cfg(feature = "hub")]
        if !path.exists() {
            if let Some(id) = path.to_str().and_then(spikescan_loader::hub::HubId::parse) {
                let opts = spikescan_loader::hub::HubOptions::from_env()?;
                return Self::open_hub(&id, &opts).map_err(|e| match e {
                    ModelError::Hub(hub @ spikescan_loader::hub::HubError::NotFound { .. }) => {
                        ModelError::Nowhere {
                            path: path.to_path_buf(),
                            hub: Box::new(hub),
                        }
                    }
                    e => e,
                });
            }
        }
        Self::open_dir(path)
    }

    /// Opens repository `id` of the Hub (fetched unless its files are cached).
    #[cfg(feature = "hub")]
    pub fn open_hub(
        id: &spikescan_loader::hub::HubId,
        opts: &spikescan_loader::hub::HubOptions,
    ) -> Result<Self> {
        Self::open_dir(spikescan_loader::hub::fetch_model(id, opts)?)
    }

    /// Opens a model directory (see [`ModelDir::open`]).
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().to_path_buf();
        if !path.is_dir() {
            return Err(ModelError::NoDirectory(path));
        }
        let cfg_path = path.join("config.json");
        let config = if cfg_path.exists() {
            let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::Config {
                path: cfg_path.clone(),
                message: e.to_string(),
            })?;
            serde_json::from_str::<Value>(&text).map_err(|e| ModelError::Config {
                path: cfg_path.clone(),
                message: format!("not valid JSON: {e}"),
            })?
        } else {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            preset(&name).ok_or_else(|| ModelError::Config {
                path: cfg_path.clone(),
                message: format!(
                    "missing, and '{name}' is not a preset name (e.g. spikformer-8-384)"
                ),
            })?
        };
        let checkpoint = Self::checkpoint(&path)?;
        Ok(Self {
            path,
            config,
            checkpoint,
            weights: WeightDtype::Auto,
        })
    }

    /// This directory, its matrices kept as `w`.
    pub fn with_weights(mut self, w: WeightDtype) -> Self {
        self.weights = w;
        self
    }

    /// Whether the checkpoint stores its floating-point tensors in 16 bits (f16 or bf16).
    pub fn is_half(&self) -> bool {
        let ck = &self.checkpoint;
        let mut floats = ck
            .keys()
            .filter_map(|k| ck.dtype(k))
            .filter(|d| d.starts_with('F') || d.starts_with("BF"))
            .peekable();
        floats.peek().is_some() && floats.all(|d| d == "F16" || d == "BF16")
    }

    /// The dtype the model's matrices take on `dev` (see [`WeightDtype`]).
    pub fn matrix_dtype(&self, dev: &Device) -> Result<spikescan_runtime::DType> {
        use spikescan_runtime::DType;
        let f16 = dev.caps().f16;
        match self.weights {
            WeightDtype::F32 => Ok(DType::F32),
            WeightDtype::F16 if f16 => Ok(DType::F16),
            WeightDtype::F16 => Err(ModelError::Input(format!(
                "f16 weights need an adapter with shader-f16, and {} has none (use f32)",
                dev.adapter().name
            ))),
            WeightDtype::Auto if f16 && self.is_half() => Ok(DType::F16),
            WeightDtype::Auto => Ok(DType::F32),
        }
    }

    pub(crate) fn uploader<'a>(&self, dev: &'a Device) -> Result<Uploader<'a>> {
        Ok(Uploader {
            dev,
            f16: self.matrix_dtype(dev)? == spikescan_runtime::DType::F16,
        })
    }

    /// `model.safetensors`, else a sharded checkpoint's index; a directory with only PyTorch
    /// pickles gets an error that says how to convert them.
    fn checkpoint(dir: &Path) -> Result<Checkpoint> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.exists() {
            return Ok(Checkpoint::open(single)?);
        }
        if index.exists() {
            return Ok(Checkpoint::open_sharded(index)?);
        }
        let names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(p) = spikescan_loader::pickle_weights(names.iter().map(String::as_str)) {
            return Err(ModelError::Config {
                path: single,
                message: format!(
                    "missing: the directory has a PyTorch pickle ({p}), which spikescan does \
                     not read; convert it: python3 tools/convert.py {} OUT_DIR --config {}",
                    dir.join(p).display(),
                    dir.join("config.json").display()
                ),
            });
        }
        // The error names the missing file.
        Ok(Checkpoint::open(single)?)
    }

    /// The `"architecture"` field; Mamba configs in mamba_ssm or Hugging Face format
    /// (`"model_type": "mamba"`, or `d_model` with `ssm_cfg`) need none, nor do Falcon-Mamba
    /// ones (`"model_type": "falcon_mamba"`, the architecture `falcon_mamba`).
    pub fn architecture(&self) -> Result<&str> {
        let c = &self.config;
        if let Some(a) = c.get("architecture").and_then(Value::as_str) {
            return Ok(a);
        }
        if c.get("model_type").and_then(Value::as_str) == Some("falcon_mamba") {
            return Ok("falcon_mamba");
        }
        if c.get("model_type").and_then(Value::as_str) == Some("mamba")
            || (c.get("d_model").is_some() && c.get("ssm_cfg").is_some())
        {
            return Ok("mamba");
        }
        Err(ModelError::Config {
            path: self.path.join("config.json"),
            message: "has no \"architecture\" field (e.g. \"spikformer\")".into(),
        })
    }
}

/// Largest width, channel, vocabulary or class count a config may give.
pub const MAX_DIM: usize = 1 << 20;
/// Most layers (blocks, depths) a config may give.
pub const MAX_LAYERS: usize = 1024;
/// Largest image side and time-step count a config may give.
pub const MAX_IMAGE_SIDE: usize = 4096;
/// Most parameters the weights a config describes may have (2^35, 128 GiB in f32): a config
/// beyond it is refused before anything is allocated for it.
pub const MAX_PARAMETERS: u64 = 1 << 35;

/// Refuses sizes beyond their bounds: `(name, value, most)`.
pub(crate) fn check_sizes(path: &Path, sizes: &[(&str, usize, usize)]) -> Result<()> {
    for &(name, value, most) in sizes {
        if value > most {
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                message: format!("\"{name}\" = {value} is beyond the supported {most}"),
            });
        }
    }
    Ok(())
}

/// Refuses weights of more than [`MAX_PARAMETERS`] parameters (checked arithmetic: shapes
/// from a config can be anything).
pub(crate) fn check_parameters(path: &Path, shapes: &[(String, Vec<usize>)]) -> Result<()> {
    let total = shapes.iter().try_fold(0u64, |acc, (_, s)| {
        s.iter()
            .try_fold(1u64, |p, &d| p.checked_mul(d as u64))
            .and_then(|n| acc.checked_add(n))
    });
    match total {
        Some(n) if n <= MAX_PARAMETERS => Ok(()),
        _ => Err(ModelError::Config {
            path: path.to_path_buf(),
            message: format!(
                "the sizes describe {} parameters, beyond the supported {MAX_PARAMETERS}",
                total.map_or("more than 2^64".to_string(), |n| n.to_string())
            ),
        }),
    }
}

/// Reads a config field as an integer, naming the file and field when it is missing.
pub(crate) fn cfg_usize(
    cfg: &Value,
    path: &Path,
    key: &str,
    default: Option<usize>,
) -> Result<usize> {
    match cfg.get(key) {
        Some(v) => v
            .as_u64()
            .map(|x| x as usize)
            .ok_or_else(|| ModelError::Config {
                path: path.to_path_buf(),
                message: format!("\"{key}\" must be a non-negative integer, got {v}"),
            }),
        None => default.ok_or_else(|| ModelError::Config {
            path: path.to_path_buf(),
            message: format!("missing \"{key}\""),
        }),
    }
}

/// A BatchNorm's four tensors under `prefix` (eps 1e-5, PyTorch's default).
pub(crate) fn bn_params(
    ck: &Checkpoint,
    prefix: &str,
    c: usize,
) -> Result<spikescan_runtime::ops::batch_norm::BatchNormParams> {
    Ok(spikescan_runtime::ops::batch_norm::BatchNormParams {
        weight: ck.f32(&format!("{prefix}.weight"), &[c])?,
        bias: ck.f32(&format!("{prefix}.bias"), &[c])?,
        running_mean: ck.f32(&format!("{prefix}.running_mean"), &[c])?,
        running_var: ck.f32(&format!("{prefix}.running_var"), &[c])?,
        eps: 1e-5,
    })
}

/// A loaded model of any supported architecture.
pub enum Model {
    Spikformer(Spikformer),
    MetaSpikeformer(MetaSpikeformer),
    Lmuformer(Lmuformer),
    Mamba(Mamba),
}

/// Image-classification facts a caller needs, whatever the architecture.
pub struct ImageSpec {
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    pub crop_pct: f64,
    pub num_classes: usize,
    pub t: usize,
}

impl Model {
    /// The architecture name, as in config.json.
    pub fn architecture(&self) -> &'static str {
        match self {
            Model::Spikformer(_) => "spikformer",
            Model::MetaSpikeformer(_) => "meta_spikeformer",
            Model::Lmuformer(m) => m.architecture(),
            Model::Mamba(m) if m.config.mixer_rms_eps.is_some() => "falcon_mamba",
            Model::Mamba(_) => "mamba",
        }
    }

    /// Input and output facts of an image classifier (None for a language model).
    pub fn image_spec(&self) -> Option<ImageSpec> {
        Some(match self {
            Model::Mamba(_) | Model::Lmuformer(_) => return None,
            Model::Spikformer(m) => {
                let c = &m.config;
                ImageSpec {
                    in_channels: c.in_channels,
                    height: c.img_size_h,
                    width: c.img_size_w,
                    crop_pct: c.crop_pct,
                    num_classes: c.num_classes,
                    t: c.t,
                }
            }
            Model::MetaSpikeformer(m) => {
                let c = &m.config;
                ImageSpec {
                    in_channels: c.in_channels,
                    height: c.img_size_h,
                    width: c.img_size_w,
                    crop_pct: c.crop_pct,
                    num_classes: c.num_classes,
                    t: c.t,
                }
            }
        })
    }

    /// Checks an input batch shape.
    pub fn check_input(&self, shape: &[usize]) -> Result<()> {
        match self {
            Model::Spikformer(m) => m.check_input(shape),
            Model::MetaSpikeformer(m) => m.check_input(shape),
            Model::Lmuformer(m) => m.check_input(shape),
            Model::Mamba(_) => Err(ModelError::Input(
                "a Mamba model takes token ids, not images".into(),
            )),
        }
    }

    /// Records a forward pass of images `[B, C, H, W]` (or, for an LMUFormer, features
    /// `[B, frames, mel]`); logits `[B, classes]`.
    pub fn forward(
        &self,
        rec: &mut spikescan_runtime::Recorder,
        x: &spikescan_runtime::Tensor,
        taps: Option<&mut taps::Taps>,
    ) -> Result<spikescan_runtime::Tensor> {
        match self {
            Model::Spikformer(m) => m.forward(rec, x, taps),
            Model::MetaSpikeformer(m) => m.forward(rec, x, taps),
            Model::Lmuformer(m) => m.forward(rec, x, false, taps),
            Model::Mamba(_) => Err(ModelError::Input(
                "a Mamba model takes token ids, not images".into(),
            )),
        }
    }

    /// Every LIF layer with the MACs (per sample and time step) of the layer its spikes
    /// feed, and the MACs of the dense first layer, for an `h x w` input.
    pub fn synaptic_costs(&self, h: usize, w: usize) -> (Vec<(String, u64)>, u64) {
        match self {
            Model::Spikformer(m) => (m.config.lif_layers(h, w), m.config.first_layer_macs(h, w)),
            Model::MetaSpikeformer(m) => m.config.synaptic_costs(h, w),
            // Per frame: the `h x w` arguments do not apply.
            Model::Lmuformer(m) => m.config.synaptic_costs(),
            Model::Mamba(_) => (Vec::new(), 0),
        }
    }

    /// Loads a model directory onto `dev`.
    pub fn load(dev: &Device, dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_dir(dev, &ModelDir::open(dir)?)
    }

    /// Loads an opened model directory (which then lists the keys the model did not read).
    pub fn from_dir(dev: &Device, md: &ModelDir) -> Result<Self> {
        match md.architecture()? {
            "spikformer" => Ok(Model::Spikformer(Spikformer::load(dev, md)?)),
            "meta_spikeformer" => Ok(Model::MetaSpikeformer(MetaSpikeformer::load(dev, md)?)),
            "lmuformer" => Ok(Model::Lmuformer(Lmuformer::load(dev, md, false)?)),
            "spiking_lmuformer" => Ok(Model::Lmuformer(Lmuformer::load(dev, md, true)?)),
            // Falcon-Mamba is Mamba with the mixer's dt, B and C norms (MambaConfig reads them).
            "mamba" | "falcon_mamba" => Ok(Model::Mamba(Mamba::load(dev, md)?)),
            other => Err(ModelError::UnknownArchitecture {
                path: md.path.join("config.json"),
                found: other.to_string(),
                known: ARCHITECTURES.join(", "),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn top_classes_are_largest_first_with_ties_in_index_order() {
        assert_eq!(super::top_classes(&[0.5, 2.0, 0.5, -1.0], 3), vec![1, 0, 2]);
        assert_eq!(super::top_classes(&[1.0, 3.0], 5), vec![1, 0]);
    }

    /// The Falcon-Mamba 7B preset reads as Falcon-Mamba at its published size (7.27 B
    /// parameters: 64 layers of d_model 4096, d_inner 8192, an untied 65,024-row head).
    #[test]
    fn the_falcon_mamba_7b_preset_has_its_published_size() {
        let cfg = super::preset("falcon-mamba-7b").unwrap();
        let c =
            super::MambaConfig::from_json(&cfg, std::path::Path::new("falcon-mamba-7b")).unwrap();
        assert_eq!(c.mixer_rms_eps, Some(1e-6));
        assert_eq!((c.d_inner, c.dt_rank, c.tie), (8192, 256, false));
        let fit = super::preset_fits(u64::MAX)
            .into_iter()
            .find(|p| p.name == "falcon-mamba-7b")
            .unwrap();
        assert_eq!(fit.architecture, "falcon_mamba");
        assert!(
            (7.2e9..7.35e9).contains(&(fit.parameters as f64)),
            "{}",
            fit.parameters
        );
    }

    /// A directory with only PyTorch pickles says which one holds the weights and how to
    /// convert it.
    #[test]
    fn a_directory_of_pickles_says_how_to_convert() {
        let dir = std::env::temp_dir().join(format!("spikescan-pickles-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), r#"{"architecture": "mamba"}"#).unwrap();
        for f in ["optimizer.pt", "pytorch_model.bin"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let e = super::ModelDir::open_dir(&dir).err().unwrap().to_string();
        assert!(
            e.contains("PyTorch pickle (pytorch_model.bin)") && e.contains("tools/convert.py"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
