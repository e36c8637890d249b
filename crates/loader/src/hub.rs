//! Model repositories from the Hugging Face Hub, by id (`owner/name[@revision]`), through
//! the Hub's own client crate (`hf-hub`, its blocking API).
//!
//! Files go into the Hub's standard cache, shared with Python tools: `HF_HUB_CACHE`, else
//! `HF_HOME/hub`, else `~/.cache/huggingface/hub` (`models--owner--name/{blobs, refs,
//! snapshots}`). `HF_ENDPOINT` replaces `https://huggingface.co`; `HF_TOKEN` (else the token
//! file `huggingface-cli login` writes) is sent for gated and private repositories. A model
//! whose files are all in the cache is used without asking the Hub; `HF_HUB_OFFLINE=1` never
//! asks it. Downloads resume from a partial `.part` file, show a progress bar on a terminal,
//! and are verified against the Hub's hash (sha256 for LFS files, the git blob hash for small
//! ones) before use; a corrupt download is deleted.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Repo, RepoType};
use thiserror::Error;

/// The files of a model directory besides its weights, fetched when the repository has them.
pub const OPTIONAL_FILES: &[&str] = &["tokenizer.json", "labels.txt"];
/// The single-file checkpoint and the index of a sharded one.
pub const WEIGHTS: &str = "model.safetensors";
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// What went wrong fetching a model from the Hub.
#[derive(Debug, Error)]
pub enum HubError {
    #[error("'{spec}' is not a Hub id (expected owner/name or owner/name@revision)")]
    BadId { spec: String },
    #[error("the Hub at {endpoint} has no model repository '{repo}' at revision '{revision}' (a private or gated repository needs a token: set HF_TOKEN)")]
    NotFound {
        endpoint: String,
        repo: String,
        revision: String,
    },
    #[error("the Hub at {endpoint} refused access to '{repo}' (HTTP {status}): gated and private repositories need a token with access (set HF_TOKEN, or run `huggingface-cli login`)")]
    Unauthorized {
        endpoint: String,
        repo: String,
        status: u16,
    },
    #[error("'{repo}'@{revision} on the Hub has no {file}")]
    MissingFile {
        repo: String,
        revision: String,
        file: String,
    },
    #[error("'{repo}' ships its weights only as a PyTorch pickle ({file}); spikescan reads safetensors. Convert it once: download {file} from the repository, run `python3 tools/convert.py {file} OUT_DIR --config {config}{set}`, then pass OUT_DIR as the model")]
    PickleOnly {
        repo: String,
        file: String,
        config: String,
        set: String,
    },
    #[error("'{repo}'@{revision} has no safetensors weights ({WEIGHTS} or {WEIGHTS_INDEX}); its files: {files}")]
    NoWeights {
        repo: String,
        revision: String,
        files: String,
    },
    #[error("HF_HUB_OFFLINE is set and '{repo}'@{revision} is not complete in the cache {cache}: {missing} missing (unset HF_HUB_OFFLINE to download it)")]
    Offline {
        repo: String,
        revision: String,
        cache: PathBuf,
        missing: String,
    },
    #[error("cannot fetch {what} of '{repo}' from {endpoint}: {reason} (with HF_HUB_OFFLINE=1 only files already in the cache are used)")]
    Network {
        endpoint: String,
        repo: String,
        what: String,
        reason: String,
    },
    #[error("the download of {file} of '{repo}' is corrupt ({algorithm} {found}, the Hub says {expected}); it was deleted: run again")]
    Corrupt {
        repo: String,
        file: String,
        algorithm: &'static str,
        expected: String,
        found: String,
    },
    #[error("the Hub cache at {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
    #[error("{0}")]
    Config(String),
}

/// A model repository on the Hub and the revision (branch, tag or commit) to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubId {
    pub repo: String,
    pub revision: String,
}

impl HubId {
    /// `owner/name` or `owner/name@revision` (revision `main` by default). Names are the
    /// Hub's: letters, digits, `-`, `_`, `.`, not starting with `.` or `-`, no `..`. Anything
    /// else (a path with more than one `/`, an absolute path) is not an id.
    pub fn parse(spec: &str) -> Option<Self> {
        let (repo, revision) = match spec.split_once('@') {
            Some((r, rev)) => (r, rev),
            None => (spec, "main"),
        };
        let (owner, name) = repo.split_once('/')?;
        let part = |p: &str| {
            !p.is_empty()
                && p.len() <= 96
                && !p.contains("..")
                && !p.starts_with(['.', '-'])
                && !p.ends_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        let rev_ok = !revision.is_empty()
            && revision.len() <= 256
            && !revision.contains("..")
            && !revision.starts_with(['/', '.'])
            && revision
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        (part(owner) && part(name) && rev_ok).then(|| Self {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }

    /// The repository's folder in the cache (`models--owner--name`).
    pub fn folder(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }
}

impl std::fmt::Display for HubId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.repo, self.revision)
    }
}

/// Where and how to fetch.
#[derive(Clone, Debug)]
pub struct HubOptions {
    /// The Hub's base URL (`HF_ENDPOINT`).
    pub endpoint: String,
    /// The cache (`HF_HUB_CACHE`; `HF_HOME/hub`).
    pub cache_dir: PathBuf,
    /// Sent as a bearer token (`HF_TOKEN`; the token file).
    pub token: Option<String>,
    /// Use only what is cached (`HF_HUB_OFFLINE`).
    pub offline: bool,
    /// Show a progress bar per file (a terminal on stderr).
    pub progress: bool,
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

impl HubOptions {
    /// The options Python's `huggingface_hub` would use in this environment.
    pub fn from_env() -> Result<Self, HubError> {
        use std::io::IsTerminal;
        let home = env("HOME")
            .or_else(|| env("USERPROFILE"))
            .map(PathBuf::from);
        let hf_home = env("HF_HOME").map(PathBuf::from).or_else(|| {
            env("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".cache")))
                .map(|c| c.join("huggingface"))
        });
        let cache_dir = env("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| hf_home.as_ref().map(|h| h.join("hub")))
            .ok_or_else(|| {
                HubError::Config(
                    "no Hub cache: set HF_HUB_CACHE or HF_HOME (HOME is not set either)".into(),
                )
            })?;
        let token_file = env("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .or_else(|| hf_home.as_ref().map(|h| h.join("token")));
        let token = env("HF_TOKEN").or_else(|| {
            token_file
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        let offline = env("HF_HUB_OFFLINE")
            .map(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                )
            })
            .unwrap_or(false);
        Ok(Self {
            endpoint: env("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".into())
                .trim_end_matches('/')
                .to_string(),
            cache_dir,
            token,
            offline,
            progress: std::io::stderr().is_terminal(),
        })
    }
}

/// The weight files a snapshot directory needs: `model.safetensors`, or the index and every
/// shard it names. Err: the index cannot be read.
fn shards_of(index: &Path) -> Result<Vec<String>, HubError> {
    let bad = |reason: String| HubError::Cache {
        path: index.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(index).map_err(|e| bad(e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| bad("no \"weight_map\" object".into()))?;
    let mut files = BTreeSet::new();
    for v in map.values() {
        let f = v
            .as_str()
            .filter(|f| Path::new(f).file_name().and_then(|n| n.to_str()) == Some(*f))
            .ok_or_else(|| bad(format!("{v} is not a plain file name")))?;
        files.insert(f.to_string());
    }
    Ok(files.into_iter().collect())
}

/// The files missing from a snapshot directory for a complete model (empty: complete).
fn missing_in(snapshot: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !snapshot.join("config.json").is_file() {
        missing.push("config.json".to_string());
    }
    if !snapshot.join(WEIGHTS).is_file() {
        let index = snapshot.join(WEIGHTS_INDEX);
        if !index.is_file() {
            missing.push(WEIGHTS.to_string());
        } else {
            match shards_of(&index) {
                Ok(files) => {
                    missing.extend(files.into_iter().filter(|f| !snapshot.join(f).is_file()))
                }
                Err(_) => missing.push(WEIGHTS_INDEX.to_string()),
            }
        }
    }
    missing
}

fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit())
}

/// The cached snapshot of `id` if it is complete; else what is missing.
pub fn cached(id: &HubId, cache_dir: &Path) -> Result<PathBuf, String> {
    let repo = cache_dir.join(id.folder());
    let commit = if is_commit(&id.revision) {
        id.revision.clone()
    } else {
        match std::fs::read_to_string(repo.join("refs").join(&id.revision)) {
            Ok(c) if is_commit(c.trim()) => c.trim().to_string(),
            _ => return Err("the whole repository".into()),
        }
    };
    let snapshot = repo.join("snapshots").join(commit);
    let missing = missing_in(&snapshot);
    if missing.is_empty() {
        Ok(snapshot)
    } else {
        Err(missing.join(", "))
    }
}

/// Fetches what a spikescan model directory needs from repository `id` — config.json, the
/// safetensors weights (one file or an index and its shards), and tokenizer.json and
/// labels.txt where the repository has them — and returns the snapshot directory that holds
/// them. A complete cached snapshot is returned without asking the Hub.
pub fn fetch_model(id: &HubId, opts: &HubOptions) -> Result<PathBuf, HubError> {
    let missing = match cached(id, &opts.cache_dir) {
        Ok(dir) => return Ok(dir),
        Err(missing) => missing,
    };
    if opts.offline {
        return Err(HubError::Offline {
            repo: id.repo.clone(),
            revision: id.revision.clone(),
            cache: opts.cache_dir.clone(),
            missing,
        });
    }
    let api = ApiBuilder::from_cache(hf_hub::Cache::new(opts.cache_dir.clone()))
        .with_endpoint(opts.endpoint.clone())
        .with_token(opts.token.clone())
        .with_progress(opts.progress)
        .with_retries(3)
        .build()
        .map_err(|e| HubError::Config(format!("the Hub client: {e}")))?;
    let repo = api.repo(Repo::with_revision(
        id.repo.clone(),
        RepoType::Model,
        id.revision.clone(),
    ));
    let info = repo
        .info()
        .map_err(|e| request_error(e, id, opts, "the file list"))?;
    if !is_commit(&info.sha) {
        return Err(network(
            id,
            opts,
            "the file list",
            format!("the Hub answered commit '{}'", info.sha),
        ));
    }
    let files: BTreeSet<String> = info.siblings.iter().map(|s| s.rfilename.clone()).collect();
    let snapshot = opts
        .cache_dir
        .join(id.folder())
        .join("snapshots")
        .join(&info.sha);
    let need = |file: &str| -> Result<(), HubError> {
        if !files.contains(file) {
            return Err(HubError::MissingFile {
                repo: id.repo.clone(),
                revision: id.revision.clone(),
                file: file.to_string(),
            });
        }
        download(&repo, id, opts, &snapshot, file)
    };
    need("config.json")?;
    if files.contains(WEIGHTS) {
        need(WEIGHTS)?;
    } else if files.contains(WEIGHTS_INDEX) {
        need(WEIGHTS_INDEX)?;
        for shard in shards_of(&snapshot.join(WEIGHTS_INDEX))? {
            need(&shard)?;
        }
    } else if let Some(pickle) = files.iter().find(|f| {
        [".bin", ".pth", ".pt", ".ckpt", ".pth.tar"]
            .iter()
            .any(|e| f.ends_with(e))
    }) {
        let config = snapshot.join("config.json");
        let mamba = std::fs::read_to_string(&config)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|c| {
                c.get("architecture").is_none()
                    && (c.get("model_type").and_then(|v| v.as_str()) == Some("mamba")
                        || c.get("ssm_cfg").is_some())
            });
        return Err(HubError::PickleOnly {
            repo: id.repo.clone(),
            file: pickle.clone(),
            config: config.display().to_string(),
            set: if mamba {
                " --set architecture=mamba".into()
            } else {
                String::new()
            },
        });
    } else {
        return Err(HubError::NoWeights {
            repo: id.repo.clone(),
            revision: id.revision.clone(),
            files: files.iter().cloned().collect::<Vec<_>>().join(", "),
        });
    }
    for file in OPTIONAL_FILES {
        if files.contains(*file) {
            need(file)?;
        }
    }
    Ok(snapshot)
}

fn network(id: &HubId, opts: &HubOptions, what: &str, reason: String) -> HubError {
    HubError::Network {
        endpoint: opts.endpoint.clone(),
        repo: id.repo.clone(),
        what: what.to_string(),
        reason,
    }
}

fn request_error(e: ApiError, id: &HubId, opts: &HubOptions, what: &str) -> HubError {
    if let ApiError::RequestError(r) = &e {
        if let ureq::Error::Status(status, _) = r.as_ref() {
            return match status {
                401 | 403 => HubError::Unauthorized {
                    endpoint: opts.endpoint.clone(),
                    repo: id.repo.clone(),
                    status: *status,
                },
                404 if what == "the file list" => HubError::NotFound {
                    endpoint: opts.endpoint.clone(),
                    repo: id.repo.clone(),
                    revision: id.revision.clone(),
                },
                404 => HubError::MissingFile {
                    repo: id.repo.clone(),
                    revision: id.revision.clone(),
                    file: what.to_string(),
                },
                s => network(id, opts, what, format!("HTTP {s}")),
            };
        }
    }
    network(id, opts, what, e.to_string())
}

/// Downloads `file` into `snapshot` unless it is there, and verifies it.
fn download(
    repo: &ApiRepo,
    id: &HubId,
    opts: &HubOptions,
    snapshot: &Path,
    file: &str,
) -> Result<(), HubError> {
    let target = snapshot.join(file);
    if target.is_file() {
        return Ok(());
    }
    let got = repo
        .download(file)
        .map_err(|e| request_error(e, id, opts, file))?;
    if got != target {
        // The branch moved between the file list and this download.
        return Err(network(
            id,
            opts,
            file,
            format!(
                "the repository changed during the download ({} instead of {})",
                got.display(),
                target.display()
            ),
        ));
    }
    verify(&got, id, file)
}

/// Checks a downloaded file against its blob name (the Hub's etag): a sha256 for LFS files,
/// the git blob sha1 for the others. A mismatch deletes the blob and the link to it.
fn verify(link: &Path, id: &HubId, file: &str) -> Result<(), HubError> {
    let cache_err = |reason: String| HubError::Cache {
        path: link.to_path_buf(),
        reason,
    };
    let blob = std::fs::canonicalize(link).map_err(|e| cache_err(e.to_string()))?;
    let etag = blob
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let len = std::fs::metadata(&blob)
        .map_err(|e| cache_err(e.to_string()))?
        .len();
    let (algorithm, found) = match etag.len() {
        64 => ("sha256", hash_file::<sha2::Sha256>(&blob, None)),
        40 => ("git sha1", hash_file::<sha1::Sha1>(&blob, Some(len))),
        // An etag of another form (another server) carries no hash to check.
        _ => return Ok(()),
    };
    let found = found.map_err(|e| cache_err(e.to_string()))?;
    if found == etag {
        return Ok(());
    }
    let _ = std::fs::remove_file(link);
    let _ = std::fs::remove_file(&blob);
    Err(HubError::Corrupt {
        repo: id.repo.clone(),
        file: file.to_string(),
        algorithm,
        expected: etag,
        found,
    })
}

/// Hex digest of a file; with `git_len`, of git's blob object (`blob <len>\0` + bytes).
fn hash_file<D: sha1::Digest>(path: &Path, git_len: Option<u64>) -> std::io::Result<String> {
    let mut h = D::new();
    if let Some(len) = git_len {
        h.update(format!("blob {len}\0").as_bytes());
    }
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_paths_do_not() {
        let id = HubId::parse("state-spaces/mamba-130m-hf").unwrap();
        assert_eq!(
            (id.repo.as_str(), id.revision.as_str()),
            ("state-spaces/mamba-130m-hf", "main")
        );
        assert_eq!(id.folder(), "models--state-spaces--mamba-130m-hf");
        let id = HubId::parse("tiiuae/falcon-mamba-7b@refs/pr/1").unwrap();
        assert_eq!(id.revision, "refs/pr/1");
        for not in [
            "models",
            "/abs/dir",
            "a/b/c",
            "./x",
            "../x/y",
            "a/..",
            "a/b@",
            "/a",
            "a/",
            "a b/c",
            "a/b@../../etc",
            "",
            "a/.b",
            "-a/b",
        ] {
            assert_eq!(HubId::parse(not), None, "{not}");
        }
    }

    #[test]
    fn a_git_blob_hash_is_gits() {
        let dir = std::env::temp_dir().join(format!("spikescan-hub-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        std::fs::write(&p, b"hello\n").unwrap();
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            hash_file::<sha1::Sha1>(&p, Some(6)).unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert_eq!(
            hash_file::<sha2::Sha256>(&p, None).unwrap(),
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
