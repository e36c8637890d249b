//! Model graphs for spikescan, each assembled from runtime ops, and the model-directory
//! format: a directory with `model.safetensors` (the official state_dict, keys unchanged)
//! and `config.json` (`"architecture"` plus the official constructor's keyword arguments).

pub mod spikformer;
pub mod taps;
pub mod vision;

use std::path::{Path, PathBuf};

use serde_json::Value;
use spikescan_loader::{Checkpoint, LoadError};
use spikescan_runtime::{Device, RuntimeError};
use thiserror::Error;

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
    #[error("{0}")]
    Input(String),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// Architectures this build runs.
pub const ARCHITECTURES: &[&str] = &["spikformer"];

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
    Some(match name {
        "spikformer-8-384" => spikformer(384, 1000, "imagenet", 224, 8, 16),
        "spikformer-8-512" => spikformer(512, 1000, "imagenet", 224, 8, 16),
        "spikformer-8-768" => spikformer(768, 1000, "imagenet", 224, 8, 16),
        "spikformer-4-384-cifar10" => spikformer(384, 10, "cifar", 32, 4, 4),
        "spikformer-4-384-cifar100" => spikformer(384, 100, "cifar", 32, 4, 4),
        _ => return None,
    })
}

/// A model directory: its config and its checkpoint.
pub struct ModelDir {
    pub path: PathBuf,
    pub config: Value,
    pub checkpoint: Checkpoint,
}

impl ModelDir {
    /// Opens `dir`: `config.json` (or a preset named like the directory) and
    /// `model.safetensors`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
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
        let checkpoint = Checkpoint::open(path.join("model.safetensors"))?;
        Ok(Self {
            path,
            config,
            checkpoint,
        })
    }

    /// The `"architecture"` field.
    pub fn architecture(&self) -> Result<&str> {
        self.config
            .get("architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| ModelError::Config {
                path: self.path.join("config.json"),
                message: "has no \"architecture\" field (e.g. \"spikformer\")".into(),
            })
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

/// A loaded model of any supported architecture.
pub enum Model {
    Spikformer(Spikformer),
}

impl Model {
    /// Loads a model directory onto `dev`.
    pub fn load(dev: &Device, dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_dir(dev, &ModelDir::open(dir)?)
    }

    /// Loads an opened model directory (which then lists the keys the model did not read).
    pub fn from_dir(dev: &Device, md: &ModelDir) -> Result<Self> {
        match md.architecture()? {
            "spikformer" => Ok(Model::Spikformer(Spikformer::load(dev, md)?)),
            other => Err(ModelError::UnknownArchitecture {
                path: md.path.join("config.json"),
                found: other.to_string(),
                known: ARCHITECTURES.join(", "),
            }),
        }
    }
}
