//! Model repositories from the Hugging Face Hub, by id (`owner/name[@revision]`), over the
//! Hub's HTTP API (`/api/models/{repo}/revision/{rev}`, `/{repo}/resolve/{commit}/{file}`),
//! with ureq. (The Hub's Rust client, hf-hub 0.4, was used first and dropped: it puts the
//! server's ETag and X-Repo-Commit into cache paths unchecked, sends the token on to CDN
//! redirects, re-downloads blobs already cached, and cannot finish a `.part` that is complete.)
//!
//! Files go into the Hub's standard cache, shared with Python tools: `HF_HUB_CACHE`, else
//! `HF_HOME/hub`, else `~/.cache/huggingface/hub` (`models--owner--name/{blobs, refs,
//! snapshots}`). `HF_ENDPOINT` replaces `https://huggingface.co`; `HF_TOKEN` (else the token
//! file `huggingface-cli login` writes) is sent for gated and private repositories. A model
//! whose files are all in the cache is used without asking the Hub; `HF_HUB_OFFLINE=1` never
//! asks it. Downloads resume from a partial `blobs/<etag>.part` file, show a progress bar on a
//! terminal, and are verified against the Hub's hash (sha256 for LFS files, the git blob
//! hash for small ones) before they are renamed into place; a corrupt download is deleted.
//! The layout is the Python client's: `blobs/<etag>`, `snapshots/<commit>/<file>` (relative
//! symlinks), `refs/<revision>`, `.no_exist/<commit>/<file>` for files the repository lacks.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The files of a model directory besides its weights, fetched when the repository has them.
pub const OPTIONAL_FILES: &[&str] = &["tokenizer.json", "labels.txt"];
/// The single-file checkpoint and the index of a sharded one.
pub const WEIGHTS: &str = "model.safetensors";
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// What went wrong fetching a model from the Hub.
#[derive(Debug, Error)]
pub enum HubError {
    #[error("the Hub at {endpoint} has no model repository '{repo}' at revision '{revision}' (a private or gated repository needs a token: set HF_TOKEN)")]
    NotFound {
        endpoint: String,
        repo: String,
        revision: String,
    },
    #[error("the Hub at {endpoint} refused access to '{repo}' (HTTP {status}: {detail}): private repositories need a valid token with access (set HF_TOKEN, or run `huggingface-cli login`)")]
    Unauthorized {
        endpoint: String,
        repo: String,
        status: u16,
        detail: String,
    },
    #[error("'{repo}' is a gated repository (HTTP {status}): {}", if *token { format!("accept its conditions at {endpoint}/{repo} with the account of your token") } else { format!("accept its conditions at {endpoint}/{repo}, then set HF_TOKEN to a token of that account") })]
    Gated {
        endpoint: String,
        repo: String,
        status: u16,
        token: bool,
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
    crate::index_shards(index).map_err(|e| HubError::Cache {
        path: index.to_path_buf(),
        reason: e.to_string(),
    })
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

/// The cached snapshot of `id` if its config and weights are complete (`Ok((dir, known))`,
/// `known`: every optional file is there or recorded as absent); else what is missing.
pub fn cached(id: &HubId, cache_dir: &Path) -> Result<(PathBuf, bool), String> {
    let repo = cache_dir.join(id.folder());
    let commit = if is_commit(&id.revision) {
        id.revision.clone()
    } else {
        match std::fs::read_to_string(repo.join("refs").join(&id.revision)) {
            Ok(c) if is_commit(c.trim()) => c.trim().to_string(),
            _ => return Err("the whole repository".into()),
        }
    };
    let snapshot = repo.join("snapshots").join(&commit);
    let missing = missing_in(&snapshot);
    if !missing.is_empty() {
        return Err(missing.join(", "));
    }
    // Python's convention: an empty `.no_exist/<commit>/<file>` records a file the
    // repository does not have.
    let absent = repo.join(".no_exist").join(&commit);
    let known = OPTIONAL_FILES
        .iter()
        .all(|f| snapshot.join(f).is_file() || absent.join(f).is_file());
    Ok((snapshot, known))
}

/// Fetches what a spikescan model directory needs from repository `id` — config.json, the
/// safetensors weights (one file or an index and its shards), and tokenizer.json and
/// labels.txt where the repository has them — and returns the snapshot directory that holds
/// them. A cached snapshot whose files are all known is returned without asking the Hub; one
/// with its config and weights is used when the Hub cannot be reached, or offline.
pub fn fetch_model(id: &HubId, opts: &HubOptions) -> Result<PathBuf, HubError> {
    let usable = match cached(id, &opts.cache_dir) {
        Ok((dir, true)) => return Ok(dir),
        Ok((dir, false)) => Ok(dir),
        Err(missing) => Err(missing),
    };
    if opts.offline {
        return usable.map_err(|missing| HubError::Offline {
            repo: id.repo.clone(),
            revision: id.revision.clone(),
            cache: opts.cache_dir.clone(),
            missing,
        });
    }
    match fetch_online(id, opts) {
        Err(HubError::Network { .. }) if usable.is_ok() => Ok(usable.unwrap_or_default()),
        r => r,
    }
}

/// The repository's file list and commit (`/api/models/{repo}/revision/{rev}`).
#[derive(serde::Deserialize)]
struct RepoInfo {
    sha: String,
    siblings: Vec<Sibling>,
}

#[derive(serde::Deserialize)]
struct Sibling {
    rfilename: String,
}

/// One HTTP client for a fetch: no automatic redirects (the token must not follow one to
/// another host), the environment's proxy unless the Hub is on loopback.
struct Client<'a> {
    agent: ureq::Agent,
    id: &'a HubId,
    opts: &'a HubOptions,
}

fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or_default()
}

impl<'a> Client<'a> {
    fn new(id: &'a HubId, opts: &'a HubOptions) -> Self {
        let h = host(&opts.endpoint);
        let loopback =
            h.starts_with("127.") || h.starts_with("localhost") || h.starts_with("[::1]");
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .try_proxy_from_env(!loopback)
            .timeout_connect(std::time::Duration::from_secs(30))
            .timeout_read(std::time::Duration::from_secs(120))
            .user_agent(concat!("spikescan/", env!("CARGO_PKG_VERSION")))
            .build();
        Self { agent, id, opts }
    }

    /// GET `url` (the token only to the Hub's own host).
    fn get(&self, url: &str, range: Option<&str>, what: &str) -> Result<ureq::Response, HubError> {
        let mut req = self.agent.get(url);
        if let Some(t) = &self.opts.token {
            if host(url) == host(&self.opts.endpoint) {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
        }
        if let Some(r) = range {
            req = req.set("Range", r);
        }
        req.call().map_err(|e| self.error(e, what))
    }

    fn error(&self, e: ureq::Error, what: &str) -> HubError {
        let (id, opts) = (self.id, self.opts);
        let ureq::Error::Status(status, resp) = e else {
            return network(id, opts, what, e.to_string());
        };
        // The Hub says what is wrong in X-Error-Code: a repository that does not exist is a
        // 401 RepoNotFound without a token; a gated one a 401/403 GatedRepo on its files.
        let code = resp.header("x-error-code").unwrap_or_default().to_string();
        let message = resp
            .header("x-error-message")
            .unwrap_or_default()
            .to_string();
        match (code.as_str(), status) {
            ("RepoNotFound", _) | ("", 404) if what == FILE_LIST => HubError::NotFound {
                endpoint: opts.endpoint.clone(),
                repo: id.repo.clone(),
                revision: id.revision.clone(),
            },
            ("RevisionNotFound", _) => HubError::NotFound {
                endpoint: opts.endpoint.clone(),
                repo: id.repo.clone(),
                revision: id.revision.clone(),
            },
            ("EntryNotFound", _) | ("", 404) => HubError::MissingFile {
                repo: id.repo.clone(),
                revision: id.revision.clone(),
                file: what.to_string(),
            },
            ("GatedRepo", _) => HubError::Gated {
                endpoint: opts.endpoint.clone(),
                repo: id.repo.clone(),
                status,
                token: opts.token.is_some(),
            },
            (_, 401 | 403) => HubError::Unauthorized {
                endpoint: opts.endpoint.clone(),
                repo: id.repo.clone(),
                status,
                detail: if message.is_empty() { code } else { message },
            },
            (_, s) => network(
                id,
                opts,
                what,
                format!("HTTP {s} {code} {message}").trim().to_string(),
            ),
        }
    }

    fn info(&self) -> Result<RepoInfo, HubError> {
        let rev = self.id.revision.replace('/', "%2F");
        let url = format!(
            "{}/api/models/{}/revision/{rev}",
            self.opts.endpoint, self.id.repo
        );
        let resp = self.get(&url, None, FILE_LIST)?;
        let info: RepoInfo = resp.into_json().map_err(|e| {
            network(
                self.id,
                self.opts,
                FILE_LIST,
                format!("not the Hub's JSON: {e}"),
            )
        })?;
        if !is_commit(&info.sha) {
            return Err(network(
                self.id,
                self.opts,
                FILE_LIST,
                format!("commit '{}' is not a hash", info.sha),
            ));
        }
        Ok(info)
    }

    /// Where `file` of `commit` is served from, its hash and size: the Hub answers the file
    /// itself (small files: ETag, the git blob hash) or redirects to a CDN (LFS files:
    /// X-Linked-Etag, the sha256, and X-Linked-Size); relative redirects (a renamed
    /// repository) are followed.
    fn locate(&self, commit: &str, file: &str) -> Result<(String, String, u64), HubError> {
        let mut url = format!(
            "{}/{}/resolve/{commit}/{file}",
            self.opts.endpoint, self.id.repo
        );
        let bad = |why: String| network(self.id, self.opts, file, why);
        for _ in 0..8 {
            let resp = self.get(&url, Some("bytes=0-0"), file)?;
            let header = |k: &str| resp.header(k).map(|v| v.trim().to_string());
            let linked = header("x-linked-etag");
            let etag = linked.clone().or_else(|| header("etag"));
            let size = header("x-linked-size")
                .or_else(|| {
                    header("content-range").and_then(|r| r.rsplit('/').next().map(str::to_string))
                })
                .or_else(|| header("content-length"));
            if (300..400).contains(&resp.status()) {
                let loc = header("location")
                    .ok_or_else(|| bad("a redirect without a Location".into()))?;
                let next = if loc.starts_with('/') {
                    let base = self
                        .opts
                        .endpoint
                        .split_once("://")
                        .map(|(s, _)| s)
                        .unwrap_or("https");
                    format!("{base}://{}{loc}", host(&self.opts.endpoint))
                } else if loc.starts_with("http://") || loc.starts_with("https://") {
                    loc
                } else {
                    return Err(bad(format!("a redirect to '{loc}'")));
                };
                if let (Some(e), Some(n)) = (linked, size.clone()) {
                    // An LFS file: the Hub gave its hash and size; the CDN serves it.
                    return Ok((
                        next,
                        clean_etag(&e).ok_or_else(|| bad(format!("etag {e}")))?,
                        parse_size(&n, &bad)?,
                    ));
                }
                url = next;
                continue;
            }
            let e = etag.ok_or_else(|| bad("no ETag".into()))?;
            let etag = clean_etag(&e)
                .ok_or_else(|| bad(format!("the etag {e} is not a sha256 or git hash")))?;
            let n = size.ok_or_else(|| bad("no size (Content-Range)".into()))?;
            return Ok((url, etag, parse_size(&n, &bad)?));
        }
        Err(bad("too many redirects".into()))
    }

    /// Downloads `file` into `blobs/<etag>` (resuming `blobs/<etag>.part`), verifies it
    /// before it is renamed into place, and links it into the snapshot.
    fn download(&self, commit: &str, file: &str) -> Result<(), HubError> {
        let repo = self.opts.cache_dir.join(self.id.folder());
        let link = repo.join("snapshots").join(commit).join(file);
        if link.is_file() {
            return Ok(());
        }
        let (url, etag, size) = self.locate(commit, file)?;
        let blobs = repo.join("blobs");
        let blob = blobs.join(&etag);
        let io = |p: &Path, e: std::io::Error| HubError::Cache {
            path: p.to_path_buf(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&blobs).map_err(|e| io(&blobs, e))?;
        // One download of a blob at a time (another process may be fetching it).
        let lock_path = blobs.join(format!("{etag}.lock"));
        let lock = std::fs::File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
        let mut waited = false;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    if !waited && self.opts.progress {
                        eprintln!("waiting for another download of {file}");
                    }
                    waited = true;
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path, e)),
            }
        }
        if !blob.is_file() {
            self.fetch_blob(&url, &blobs, &etag, size, file)?;
        }
        drop(lock);
        let _ = std::fs::remove_file(&lock_path);
        let dir = link.parent().unwrap_or(&repo);
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        // A dangling link (its blob deleted) is replaced.
        let _ = std::fs::remove_file(&link);
        link_blob(&etag, &blob, &link).map_err(|e| io(&link, e))
    }

    fn fetch_blob(
        &self,
        url: &str,
        blobs: &Path,
        etag: &str,
        size: u64,
        file: &str,
    ) -> Result<(), HubError> {
        let part = blobs.join(format!("{etag}.part"));
        let io = |e: std::io::Error| HubError::Cache {
            path: part.clone(),
            reason: e.to_string(),
        };
        let mut have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if have > size {
            have = 0;
        }
        if have < size {
            let resp = self.get(url, Some(&format!("bytes={have}-")), file)?;
            // A server that ignores Range sends the whole file.
            if resp.status() != 206 {
                have = 0;
            }
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(have == 0)
                .append(have > 0)
                .open(&part)
                .map_err(io)?;
            let bar = self.opts.progress.then(|| {
                let b = indicatif::ProgressBar::new(size);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b.set_message(file.to_string());
                b.set_position(have);
                b
            });
            let mut reader = resp.into_reader().take(size - have);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = reader.read(&mut buf).map_err(|e| {
                    network(
                        self.id,
                        self.opts,
                        file,
                        format!("{e} (run again to resume)"),
                    )
                })?;
                if n == 0 {
                    break;
                }
                std::io::Write::write_all(&mut out, &buf[..n]).map_err(io)?;
                if let Some(b) = &bar {
                    b.inc(n as u64);
                }
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
        }
        let got = std::fs::metadata(&part).map_err(io)?.len();
        if got != size {
            return Err(network(
                self.id,
                self.opts,
                file,
                format!("the transfer stopped at {got} of {size} bytes (run again to resume)"),
            ));
        }
        let (algorithm, found) = if etag.len() == 64 {
            ("sha256", hash_file::<sha2::Sha256>(&part, None))
        } else {
            ("git sha1", hash_file::<sha1::Sha1>(&part, Some(size)))
        };
        let found = found.map_err(io)?;
        if found != etag {
            let _ = std::fs::remove_file(&part);
            return Err(HubError::Corrupt {
                repo: self.id.repo.clone(),
                file: file.to_string(),
                algorithm,
                expected: etag.to_string(),
                found,
            });
        }
        std::fs::rename(&part, blobs.join(etag)).map_err(io)
    }
}

const FILE_LIST: &str = "the file list";

/// An etag as a blob name: a sha256 (64 hex) or git sha1 (40 hex), without quotes or `W/`.
fn clean_etag(e: &str) -> Option<String> {
    let e = e
        .trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_ascii_lowercase();
    ((e.len() == 64 || e.len() == 40) && e.chars().all(|c| c.is_ascii_hexdigit())).then_some(e)
}

fn parse_size(n: &str, bad: &dyn Fn(String) -> HubError) -> Result<u64, HubError> {
    n.trim().parse().map_err(|_| bad(format!("size '{n}'")))
}

/// Links a snapshot file to its blob as the Python client does (a relative symlink; a copy
/// where symlinks are not allowed).
fn link_blob(etag: &str, blob: &Path, link: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let _ = blob;
        std::os::unix::fs::symlink(Path::new("../../blobs").join(etag), link)
    }
    #[cfg(not(unix))]
    {
        let _ = etag;
        std::fs::copy(blob, link).map(|_| ())
    }
}

/// Writes `refs/<revision>` = `commit` (atomically).
fn write_ref(repo: &Path, revision: &str, commit: &str) -> std::io::Result<()> {
    let r = repo.join("refs").join(revision);
    if let Some(d) = r.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = r.with_extension("tmp-spikescan");
    std::fs::write(&tmp, commit)?;
    std::fs::rename(&tmp, &r)
}

fn fetch_online(id: &HubId, opts: &HubOptions) -> Result<PathBuf, HubError> {
    let client = Client::new(id, opts);
    let info = client.info()?;
    let files: BTreeSet<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let commit = info.sha;
    let repo = opts.cache_dir.join(id.folder());
    let snapshot = repo.join("snapshots").join(&commit);
    let need = |file: &str| -> Result<(), HubError> {
        if !files.contains(file) {
            return Err(HubError::MissingFile {
                repo: id.repo.clone(),
                revision: id.revision.clone(),
                file: file.to_string(),
            });
        }
        client.download(&commit, file)
    };
    need("config.json")?;
    if files.contains(WEIGHTS) {
        need(WEIGHTS)?;
    } else if files.contains(WEIGHTS_INDEX) {
        need(WEIGHTS_INDEX)?;
        for shard in shards_of(&snapshot.join(WEIGHTS_INDEX))? {
            need(&shard)?;
        }
    } else if let Some(pickle) = crate::pickle_weights(files.iter().map(String::as_str)) {
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
            file: pickle.to_string(),
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
    let cache_err = |p: PathBuf, e: std::io::Error| HubError::Cache {
        path: p,
        reason: e.to_string(),
    };
    for file in OPTIONAL_FILES {
        if files.contains(*file) {
            need(file)?;
        } else {
            let marker = repo.join(".no_exist").join(&commit).join(file);
            if let Some(d) = marker.parent() {
                std::fs::create_dir_all(d).map_err(|e| cache_err(d.to_path_buf(), e))?;
            }
            std::fs::write(&marker, b"").map_err(|e| cache_err(marker.clone(), e))?;
        }
    }
    if !is_commit(&id.revision) {
        write_ref(&repo, &id.revision, &commit).map_err(|e| cache_err(repo.join("refs"), e))?;
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
