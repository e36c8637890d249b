//! Checkpoint loading for spikescan: safetensors files → f32 weights under the official key
//! names, with errors that name the file and the key. `module.` prefixes (DataParallel) are
//! stripped; f32, f16 and bf16 load (half types convert to f32); keys the model never asks
//! for are listed by [`Checkpoint::unused_keys`]. Sharded checkpoints
//! (`model.safetensors.index.json` and its shards, as the Hugging Face Hub stores large
//! models) load as one [`Checkpoint`]; [`hub`] fetches model repositories from the Hub.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use safetensors::{Dtype, SafeTensors};

#[cfg(feature = "hub")]
pub mod hub;
use thiserror::Error;

/// What went wrong while loading, naming the file and the key.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid safetensors file ({reason}); is it truncated, or a PyTorch pickle? (convert .pth files with tools/convert.py)")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: tensor '{key}' is missing")]
    Missing { path: PathBuf, key: String },
    #[error("{path}: tensor '{key}' has shape {found:?}, expected {expected:?}")]
    Shape {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: tensor '{key}' is {dtype}; spikescan loads f32, f16 and bf16 (and u8 maps)")]
    Dtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },
    #[error("{path}: {reason}")]
    Index { path: PathBuf, reason: String },
    #[error("{path}: both '{a}' and '{b}' map to '{key}' once the 'module.' prefix is stripped")]
    Duplicate {
        path: PathBuf,
        a: String,
        b: String,
        key: String,
    },
}

pub type Result<T, E = LoadError> = std::result::Result<T, E>;

struct Entry {
    /// Index into `Checkpoint::shards`.
    shard: usize,
    original: String,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// One safetensors file of a checkpoint.
struct Shard {
    path: PathBuf,
    bytes: Vec<u8>,
    data_start: usize,
}

/// A safetensors checkpoint held in memory (one file, or the shards of a sharded one), with
/// its keys normalised.
pub struct Checkpoint {
    /// The file, or the index of a sharded checkpoint.
    path: PathBuf,
    shards: Vec<Shard>,
    entries: BTreeMap<String, Entry>,
    metadata: BTreeMap<String, String>,
    used: Mutex<BTreeSet<String>>,
    /// Tensors read so far that hold NaN or ±Inf: key → (non-finite values, all values).
    nonfinite: Mutex<BTreeMap<String, (usize, usize)>>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Checkpoint({}, {} tensors)",
            self.path.display(),
            self.entries.len()
        )
    }
}

/// Strips DataParallel's `module.` prefixes.
pub fn normalise_key(key: &str) -> &str {
    let mut k = key;
    while let Some(rest) = k.strip_prefix("module.") {
        k = rest;
    }
    k
}

impl Checkpoint {
    /// Reads and validates a safetensors file, or (for a path ending in `.index.json`) a
    /// sharded checkpoint: see [`Checkpoint::open_sharded`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if path.to_string_lossy().ends_with(".index.json") {
            return Self::open_sharded(path);
        }
        let bytes = read(&path)?;
        Self::from_bytes(path, bytes)
    }

    /// Reads a sharded checkpoint from its index (`model.safetensors.index.json`:
    /// `{"weight_map": {"key": "model-00001-of-00002.safetensors", …}}`): every shard the
    /// map names, from the index's directory. Each key must be in the shard the map names,
    /// and in no other; shard names must be plain file names (no directories).
    pub fn open_sharded(index: impl AsRef<Path>) -> Result<Self> {
        let path = index.as_ref().to_path_buf();
        let bad = |reason: String| LoadError::Index {
            path: path.clone(),
            reason,
        };
        let (map, files) = read_index(&path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut shards = Vec::new();
        for file in &files {
            let p = dir.join(file);
            let bytes = read(&p)?;
            shards.push((p, bytes));
        }
        let mut ck = Self::from_shards(path.clone(), shards)?;
        for (key, file) in &map {
            let e = ck.entries.get(normalise_key(key)).ok_or_else(|| {
                bad(format!(
                    "\"{key}\" is listed in {} but no shard holds it",
                    file.as_str().unwrap_or_default()
                ))
            })?;
            let holds = &ck.shards[e.shard].path;
            if holds.file_name().and_then(|n| n.to_str()) != file.as_str() {
                return Err(bad(format!(
                    "\"{key}\" is listed in {} but is in {}",
                    file.as_str().unwrap_or_default(),
                    holds.display()
                )));
            }
        }
        ck.metadata.insert("shards".into(), files.len().to_string());
        Ok(ck)
    }

    /// Parses safetensors bytes; `path` is used in messages.
    pub fn from_bytes(path: PathBuf, bytes: Vec<u8>) -> Result<Self> {
        Self::from_shards(path.clone(), vec![(path, bytes)])
    }

    fn from_shards(path: PathBuf, files: Vec<(PathBuf, Vec<u8>)>) -> Result<Self> {
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        let mut shards = Vec::new();
        let mut metadata = BTreeMap::new();
        for (i, (file, bytes)) in files.into_iter().enumerate() {
            let data_start =
                Self::parse_shard(&file, &bytes, i, &shards, &mut entries, &mut metadata)?;
            shards.push(Shard {
                path: file,
                bytes,
                data_start,
            });
        }
        Ok(Self {
            path,
            shards,
            entries,
            metadata,
            used: Mutex::new(BTreeSet::new()),
            nonfinite: Mutex::new(BTreeMap::new()),
        })
    }

    /// Validates one file and adds its tensors to `entries`; returns where its data starts.
    fn parse_shard(
        path: &Path,
        bytes: &[u8],
        shard: usize,
        earlier: &[Shard],
        entries: &mut BTreeMap<String, Entry>,
        metadata: &mut BTreeMap<String, String>,
    ) -> Result<usize> {
        let corrupt = |e: safetensors::SafeTensorError| LoadError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        // deserialize checks the header and that every tensor's bytes are present.
        SafeTensors::deserialize(bytes).map_err(corrupt)?;
        let (header, meta) = SafeTensors::read_metadata(bytes).map_err(corrupt)?;
        // In name order, so that which error a bad file gets does not depend on hashing.
        let mut tensors: Vec<_> = meta.tensors().into_iter().collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, info) in tensors {
            let key = normalise_key(&name).to_string();
            if let Some(prev) = entries.get(&key) {
                if prev.shard != shard {
                    return Err(LoadError::Index {
                        path: path.to_path_buf(),
                        reason: format!(
                            "tensor '{key}' is also in {}: a key may be in one shard only",
                            earlier[prev.shard].path.display()
                        ),
                    });
                }
                return Err(LoadError::Duplicate {
                    path: path.to_path_buf(),
                    a: prev.original.clone(),
                    b: name,
                    key,
                });
            }
            entries.insert(
                key,
                Entry {
                    shard,
                    original: name.clone(),
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: info.data_offsets.0,
                    end: info.data_offsets.1,
                },
            );
        }
        if let Some(m) = meta.metadata() {
            for (k, v) in m {
                metadata.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        Ok(8 + header)
    }

    /// How many files the checkpoint was read from.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn raw(&self, e: &Entry) -> &[u8] {
        let s = &self.shards[e.shard];
        &s.bytes[s.data_start + e.start..s.data_start + e.end]
    }

    /// A string of the file's `__metadata__` header (e.g. where a fixture came from).
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Normalised keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }
    /// Shape of a tensor, if present.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.entries.get(key).map(|e| e.shape.as_slice())
    }
    /// Stored dtype name (`F32`, `BF16`, …), if present.
    pub fn dtype(&self, key: &str) -> Option<String> {
        self.entries.get(key).map(|e| format!("{:?}", e.dtype))
    }
    /// Total elements over all tensors.
    pub fn parameter_count(&self) -> usize {
        self.entries
            .values()
            .map(|e| e.shape.iter().product::<usize>())
            .sum()
    }

    fn entry(&self, key: &str) -> Result<&Entry> {
        self.entries.get(key).ok_or_else(|| LoadError::Missing {
            path: self.path.clone(),
            key: key.to_string(),
        })
    }

    /// The tensor `key` as f32 values; its shape must be `expected`.
    pub fn f32(&self, key: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let e = self.entry(key)?;
        if e.shape != expected {
            return Err(LoadError::Shape {
                path: self.shards[e.shard].path.clone(),
                key: key.to_string(),
                expected: expected.to_vec(),
                found: e.shape.clone(),
            });
        }
        self.f32_any(key)
    }

    /// The tensor `key` as f32 values, whatever its shape (see [`Checkpoint::shape`]).
    pub fn f32_any(&self, key: &str) -> Result<Vec<f32>> {
        let e = self.entry(key)?;
        let raw = self.raw(e);
        let v = match e.dtype {
            Dtype::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(raw),
            Dtype::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(raw)
                .iter()
                .map(|h| h.to_f32())
                .collect(),
            Dtype::BF16 => bytemuck::pod_collect_to_vec::<u8, half::bf16>(raw)
                .iter()
                .map(|h| h.to_f32())
                .collect(),
            // Spike maps and small integers (fixtures, inputs).
            Dtype::U8 => raw.iter().map(|&b| b as f32).collect(),
            d => {
                return Err(LoadError::Dtype {
                    path: self.shards[e.shard].path.clone(),
                    key: key.to_string(),
                    dtype: format!("{d:?}"),
                })
            }
        };
        if let Ok(mut u) = self.used.lock() {
            u.insert(key.to_string());
        }
        let bad = count_nonfinite(&v);
        if bad > 0 {
            if let Ok(mut n) = self.nonfinite.lock() {
                n.insert(key.to_string(), (bad, v.len()));
            }
        }
        Ok(v)
    }

    /// Tensors read so far (as floats) that hold NaN or ±Inf, as (key, non-finite values,
    /// all values): a model loaded from this checkpoint would compute with them, so callers
    /// report them (the CLI warns, or refuses with `--strict`).
    pub fn nonfinite_tensors(&self) -> Vec<(String, usize, usize)> {
        self.nonfinite
            .lock()
            .map(|n| n.iter().map(|(k, &(b, t))| (k.clone(), b, t)).collect())
            .unwrap_or_default()
    }

    /// An integer tensor (i64, i32, u32, u8) as i64 values: token ids.
    pub fn ints(&self, key: &str) -> Result<Vec<i64>> {
        let e = self.entry(key)?;
        let raw = self.raw(e);
        let v = match e.dtype {
            Dtype::I64 => bytemuck::pod_collect_to_vec::<u8, i64>(raw),
            Dtype::I32 => bytemuck::pod_collect_to_vec::<u8, i32>(raw)
                .into_iter()
                .map(i64::from)
                .collect(),
            Dtype::U32 => bytemuck::pod_collect_to_vec::<u8, u32>(raw)
                .into_iter()
                .map(i64::from)
                .collect(),
            Dtype::U8 => raw.iter().map(|&b| b as i64).collect(),
            d => {
                return Err(LoadError::Dtype {
                    path: self.shards[e.shard].path.clone(),
                    key: key.to_string(),
                    dtype: format!("{d:?} (token ids must be integers: i64, i32, u32 or u8)"),
                })
            }
        };
        if let Ok(mut u) = self.used.lock() {
            u.insert(key.to_string());
        }
        Ok(v)
    }

    /// Keys present in the file that nothing has read (e.g. `block.0.norm1.*` in Spikformer
    /// checkpoints, `num_batches_tracked`).
    pub fn unused_keys(&self) -> Vec<String> {
        let used = self.used.lock().map(|u| u.clone()).unwrap_or_default();
        self.entries
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect()
    }
}

/// Of a model's file names, the PyTorch pickle its weights are in, if any (for an error that
/// says to convert it): `pytorch_model.bin` (or its sharded index) first, then any
/// `.bin`/`.pth`/`.pt`/`.ckpt`/`.pth.tar` that is not optimizer or training state.
pub fn pickle_weights<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let names: Vec<&str> = names.into_iter().collect();
    let weights = |f: &&str| {
        [".bin", ".pth", ".pt", ".ckpt", ".pth.tar"]
            .iter()
            .any(|e| f.ends_with(e))
            && !["optimizer", "scheduler", "training_args", "rng_state"]
                .iter()
                .any(|x| f.contains(x))
    };
    ["pytorch_model.bin", "pytorch_model.bin.index.json"]
        .into_iter()
        .find_map(|p| names.iter().copied().find(|&f| f == p))
        .or_else(|| names.iter().copied().find(weights))
}

/// The shard files a sharded checkpoint's index names (sorted, each once), checked to be
/// plain file names.
pub fn index_shards(index: &Path) -> Result<Vec<String>> {
    Ok(read_index(index)?.1.into_iter().collect())
}

/// An index's weight map and the shard files it names.
fn read_index(
    path: &Path,
) -> Result<(serde_json::Map<String, serde_json::Value>, BTreeSet<String>)> {
    let bad = |reason: String| LoadError::Index {
        path: path.to_path_buf(),
        reason,
    };
    let text = String::from_utf8(read(path)?).map_err(|_| bad("is not UTF-8 text".into()))?;
    let mut json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("is not valid JSON: {e}")))?;
    let map = match json.get_mut("weight_map").map(serde_json::Value::take) {
        Some(serde_json::Value::Object(m)) => m,
        _ => return Err(bad("has no \"weight_map\" object".into())),
    };
    if map.is_empty() {
        return Err(bad("its \"weight_map\" is empty".into()));
    }
    let mut files = BTreeSet::new();
    for (key, file) in &map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("\"{key}\" maps to {file}, not a file name")))?;
        if Path::new(file).file_name().and_then(|n| n.to_str()) != Some(file) {
            return Err(bad(format!(
                "shard '{file}' (of \"{key}\") is not a plain file name"
            )));
        }
        files.insert(file.to_string());
    }
    Ok((map, files))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes f32 tensors `(name, shape, data)` to a safetensors file, atomically: the data goes
/// to a temporary file next to `path`, which is then renamed, so a failure never leaves a
/// half-written file.
pub fn save_f32(path: impl AsRef<Path>, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
    let raw: Vec<(String, Dtype, Vec<usize>, &[u8])> = tensors
        .iter()
        .map(|(n, s, d)| (n.clone(), Dtype::F32, s.clone(), bytemuck::cast_slice(d)))
        .collect();
    save_raw(path.as_ref(), &raw)
}

/// Writes one i64 tensor (token ids) atomically, like [`save_f32`].
pub fn save_i64(path: impl AsRef<Path>, name: &str, shape: &[usize], data: &[i64]) -> Result<()> {
    save_raw(
        path.as_ref(),
        &[(
            name.to_string(),
            Dtype::I64,
            shape.to_vec(),
            bytemuck::cast_slice(data),
        )],
    )
}

impl Checkpoint {
    /// A checkpoint built in memory from f32 tensors (random weights for benchmarks and
    /// tests); `name` stands for the path in messages.
    pub fn from_f32(name: &str, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<Self> {
        let path = PathBuf::from(name);
        let raw: Vec<(String, Dtype, Vec<usize>, &[u8])> = tensors
            .iter()
            .map(|(n, s, d)| (n.clone(), Dtype::F32, s.clone(), bytemuck::cast_slice(d)))
            .collect();
        let bytes = serialize_raw(&path, &raw)?;
        Self::from_bytes(path, bytes)
    }
}

fn serialize_raw(path: &Path, tensors: &[(String, Dtype, Vec<usize>, &[u8])]) -> Result<Vec<u8>> {
    let corrupt = |reason: String| LoadError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut views = Vec::new();
    for (name, dtype, shape, data) in tensors {
        let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)
            .map_err(|e| corrupt(format!("{name}: {e}")))?;
        views.push((name.clone(), view));
    }
    safetensors::serialize(views, None).map_err(|e| corrupt(e.to_string()))
}

/// NaN and ±Inf values in `v`.
pub fn count_nonfinite(v: &[f32]) -> usize {
    v.iter().filter(|x| !x.is_finite()).count()
}

/// Checks, before any work, that an output file can be written at `path`: not a directory,
/// in a directory that exists and takes a new file (a probe file is created and removed
/// there). The error names the path and the reason.
pub fn check_writable(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let err = |source: std::io::Error| LoadError::Write {
        path: path.to_path_buf(),
        source,
    };
    let msg = |kind: std::io::ErrorKind, m: String| err(std::io::Error::new(kind, m));
    if path.is_dir() {
        return Err(msg(
            std::io::ErrorKind::IsADirectory,
            "the output path is a directory".into(),
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(msg(
            std::io::ErrorKind::NotFound,
            format!("the output directory {} does not exist", dir.display()),
        ));
    }
    if path.exists() {
        // Replaced by a rename at the end; it must at least not be read-only.
        let ro = std::fs::metadata(path)
            .map_err(err)?
            .permissions()
            .readonly();
        if ro {
            return Err(msg(
                std::io::ErrorKind::PermissionDenied,
                "the output file is read-only".into(),
            ));
        }
    }
    let probe = dir.join(format!(".spikescan-write-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| {
            msg(
                e.kind(),
                format!("cannot create a file in {}: {e}", dir.display()),
            )
        })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn save_raw(path: &Path, tensors: &[(String, Dtype, Vec<usize>, &[u8])]) -> Result<()> {
    let io = |source: std::io::Error| LoadError::Write {
        path: path.to_path_buf(),
        source,
    };
    let bytes = serialize_raw(path, tensors)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn write(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(k, d, s, b)| (k.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        bytemuck::cast_slice(v).to_vec()
    }

    #[test]
    fn loads_f32_f16_and_bf16_and_strips_module_prefixes() {
        let h: Vec<u8> =
            bytemuck::cast_slice(&[half::f16::from_f32(0.5), half::f16::from_f32(-2.0)]).to_vec();
        let b: Vec<u8> = bytemuck::cast_slice(&[half::bf16::from_f32(1.5)]).to_vec();
        let bytes = write(&[
            (
                "module.a.weight",
                Dtype::F32,
                vec![2, 2],
                f32_bytes(&[1.0, 2.0, 3.0, 4.0]),
            ),
            ("module.b", Dtype::F16, vec![2], h),
            ("c", Dtype::BF16, vec![1], b),
        ]);
        let c = Checkpoint::from_bytes("m.safetensors".into(), bytes).unwrap();
        assert_eq!(c.keys().collect::<Vec<_>>(), ["a.weight", "b", "c"]);
        assert_eq!(
            c.f32("a.weight", &[2, 2]).unwrap(),
            vec![1.0, 2.0, 3.0, 4.0]
        );
        assert_eq!(c.f32("b", &[2]).unwrap(), vec![0.5, -2.0]);
        assert_eq!(c.f32_any("c").unwrap(), vec![1.5]);
        assert_eq!(c.parameter_count(), 7);
        assert!(c.unused_keys().is_empty());
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let bytes = write(&[
            ("w", Dtype::F32, vec![2, 3], f32_bytes(&[0.0; 6])),
            ("ids", Dtype::I64, vec![1], vec![0; 8]),
        ]);
        let c = Checkpoint::from_bytes("dir/model.safetensors".into(), bytes.clone()).unwrap();
        let e = c.f32("missing.weight", &[1]).unwrap_err().to_string();
        assert!(
            e.contains("dir/model.safetensors") && e.contains("'missing.weight' is missing"),
            "{e}"
        );
        let e = c.f32("w", &[3, 2]).unwrap_err().to_string();
        assert!(
            e.contains("'w'") && e.contains("[2, 3]") && e.contains("expected [3, 2]"),
            "{e}"
        );
        let e = c.f32("ids", &[1]).unwrap_err().to_string();
        assert!(e.contains("'ids'") && e.contains("I64"), "{e}");
        assert_eq!(c.unused_keys(), vec!["ids".to_string(), "w".to_string()]);

        for cut in [bytes.len() - 3, 20, 4, 0] {
            let e = Checkpoint::from_bytes("t.safetensors".into(), bytes[..cut].to_vec())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("t.safetensors") && e.contains("not a valid safetensors file"),
                "{cut}: {e}"
            );
        }
        let e = Checkpoint::open("/no/such/model.safetensors")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/no/such/model.safetensors"), "{e}");
    }

    #[test]
    fn saved_tensors_load_back() {
        let dir = std::env::temp_dir().join(format!("spikescan-loader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.safetensors");
        save_f32(&p, &[("a".into(), vec![2], vec![1.0, -1.5])]).unwrap();
        let c = Checkpoint::open(&p).unwrap();
        assert_eq!(c.f32("a", &[2]).unwrap(), vec![1.0, -1.5]);
        assert!(!dir.join("t.safetensors.partial").exists());
    }

    #[test]
    fn a_key_present_with_and_without_prefix_is_ambiguous() {
        let bytes = write(&[
            ("module.w", Dtype::F32, vec![1], f32_bytes(&[1.0])),
            ("w", Dtype::F32, vec![1], f32_bytes(&[2.0])),
        ]);
        let e = Checkpoint::from_bytes("x".into(), bytes)
            .unwrap_err()
            .to_string();
        assert!(e.contains("module.w") && e.contains("'w'"), "{e}");
    }

    #[test]
    fn a_sharded_checkpoint_loads_as_one_and_its_index_is_checked() {
        let dir = std::env::temp_dir().join(format!("spikescan-shards-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = write(&[("a.weight", Dtype::F32, vec![2], f32_bytes(&[1.0, 2.0]))]);
        let h: Vec<u8> = bytemuck::cast_slice(&[half::bf16::from_f32(-3.0)]).to_vec();
        let b = write(&[
            ("b.weight", Dtype::BF16, vec![1], h),
            ("c", Dtype::F32, vec![1], f32_bytes(&[4.0])),
        ]);
        std::fs::write(dir.join("m-1.safetensors"), &a).unwrap();
        std::fs::write(dir.join("m-2.safetensors"), &b).unwrap();
        let index = dir.join("model.safetensors.index.json");
        let put = |map: &str| {
            std::fs::write(
                &index,
                format!("{{\"metadata\": {{}}, \"weight_map\": {map}}}"),
            )
            .unwrap()
        };
        put(
            r#"{"a.weight": "m-1.safetensors", "b.weight": "m-2.safetensors", "c": "m-2.safetensors"}"#,
        );
        let c = Checkpoint::open(&index).unwrap();
        assert_eq!(c.shard_count(), 2);
        assert_eq!(c.keys().collect::<Vec<_>>(), ["a.weight", "b.weight", "c"]);
        assert_eq!(c.f32("a.weight", &[2]).unwrap(), vec![1.0, 2.0]);
        assert_eq!(c.f32("b.weight", &[1]).unwrap(), vec![-3.0]);
        assert_eq!(c.parameter_count(), 4);
        let e = c.f32("c", &[2]).unwrap_err().to_string();
        assert!(e.contains("m-2.safetensors") && e.contains("'c'"), "{e}");
        let e = c.f32("nope", &[1]).unwrap_err().to_string();
        assert!(
            e.contains("model.safetensors.index.json") && e.contains("'nope'"),
            "{e}"
        );

        let err = |map: &str| {
            put(map);
            Checkpoint::open(&index).unwrap_err().to_string()
        };
        let e = err(r#"{"a.weight": "m-2.safetensors", "b.weight": "m-2.safetensors"}"#);
        assert!(
            e.contains("\"a.weight\" is listed in m-2.safetensors but no shard holds it"),
            "{e}"
        );
        let e = err(
            r#"{"a.weight": "m-1.safetensors", "b.weight": "m-1.safetensors", "c": "m-2.safetensors"}"#,
        );
        assert!(
            e.contains("\"b.weight\" is listed in m-1.safetensors but is in"),
            "{e}"
        );
        let e = err(r#"{"a.weight": "m-3.safetensors"}"#);
        assert!(e.contains("m-3.safetensors"), "{e}");
        let e = err(r#"{"a.weight": "../m-1.safetensors"}"#);
        assert!(e.contains("not a plain file name"), "{e}");
        let e = err(r#"{"a.weight": 3}"#);
        assert!(e.contains("not a file name"), "{e}");
        let e = err("{}");
        assert!(e.contains("empty"), "{e}");
        std::fs::write(&index, "{not json").unwrap();
        let e = Checkpoint::open(&index).unwrap_err().to_string();
        assert!(
            e.contains("index.json") && e.contains("not valid JSON"),
            "{e}"
        );
        // A key in two shards is ambiguous.
        std::fs::write(dir.join("m-1.safetensors"), &b).unwrap();
        let e = err(r#"{"b.weight": "m-1.safetensors", "c": "m-2.safetensors"}"#);
        assert!(
            e.contains("m-2.safetensors: tensor 'b.weight' is also in")
                && e.contains("m-1.safetensors: a key may be in one shard only"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
