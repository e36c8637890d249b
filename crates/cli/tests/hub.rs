//! Models by Hub id, against a Hub served by the test on 127.0.0.1 in the Hub's URL layout
//! (`/api/models/{repo}/revision/{rev}` and `/{repo}/resolve/{rev}/{file}`, with the
//! headers the Hub's client reads): a download into the cache, its reuse with the server
//! gone and with HF_HUB_OFFLINE=1, `spikescan generate --model owner/name` end to end, a
//! sharded checkpoint, a resumed download, a corrupt one, a missing file, a missing
//! repository, a gated one and one with only a PyTorch pickle.

mod common;
use common::spikescan;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::Digest;
use spikescan::loader::hub::{fetch_model, HubError, HubId, HubOptions};
use spikescan::models::{Model, ModelDir};
use spikescan::Device;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/mamba-pydoc");

#[derive(Clone, Default)]
struct Repo {
    commit: String,
    files: BTreeMap<String, Vec<u8>>,
    /// Files served with their last byte changed (the etag stays the true content's).
    corrupt: Vec<String>,
    /// A bearer token the repository requires.
    token: Option<String>,
    /// Its files answer with a relative redirect to this repository (a renamed one).
    renamed_to: Option<String>,
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Hub's etag: the sha256 for LFS files (weights), git's blob hash for the others.
fn etag(name: &str, data: &[u8]) -> String {
    if name.ends_with(".safetensors") || name.ends_with(".bin") {
        hex(&sha2::Sha256::digest(data))
    } else {
        let mut h = sha1::Sha1::new();
        h.update(format!("blob {}\0", data.len()).as_bytes());
        h.update(data);
        hex(&h.finalize())
    }
}

struct TestHub {
    endpoint: String,
    repos: Arc<Mutex<BTreeMap<String, Repo>>>,
    /// "GET path range" of every request.
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestHub {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let repos: Arc<Mutex<BTreeMap<String, Repo>>> = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, l, s) = (repos.clone(), log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let (r, l) = (r.clone(), l.clone());
                    std::thread::spawn(move || serve(conn, &r, &l));
                }
            }
        });
        Self {
            endpoint,
            repos,
            log,
            stop,
            thread: Some(thread),
        }
    }

    fn add(&self, name: &str, repo: Repo) {
        self.repos.lock().unwrap().insert(name.into(), repo);
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Stops listening: later requests are refused.
    fn shut(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.shut();
    }
}

fn respond(mut conn: TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

/// The Hub's answers, as huggingface.co gives them: the file list under /api; small files
/// from /resolve with their git blob hash as ETag; LFS files (weights) as a 302 to a CDN on
/// another host (`localhost` for `127.0.0.1`: the token must not follow) with X-Linked-Etag
/// and X-Linked-Size; a repository that does not exist is a 401 RepoNotFound; a gated one
/// lists its files but answers 401 GatedRepo for them without its token.
fn serve(conn: TcpStream, repos: &Mutex<BTreeMap<String, Repo>>, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let (mut range, mut auth, mut host) = (None, None, String::new());
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim().split_once(':') {
            match k.to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_string()),
                "authorization" => auth = Some(v.trim().to_string()),
                "host" => host = v.trim().to_string(),
                _ => {}
            }
        }
    }
    log.lock().unwrap().push(format!(
        "GET {path} host={host} auth={} {}",
        auth.is_some(),
        range.clone().unwrap_or_default()
    ));
    let repos = repos.lock().unwrap().clone();
    let error = |conn, status: &str, code: &str| {
        respond(conn, status, &[("X-Error-Code".into(), code.into())], b"")
    };
    let authorised = |repo: &Repo| {
        repo.token
            .as_ref()
            .is_none_or(|t| auth.as_deref() == Some(&format!("Bearer {t}")))
    };
    // The CDN: /cdn/<repo>/<file>, no token needed (its URLs are signed).
    if let Some(rest) = path.strip_prefix("/cdn/") {
        let parts: Vec<&str> = rest.splitn(3, '/').collect();
        let repo = repos.get(&format!("{}/{}", parts[0], parts[1])).unwrap();
        return send_file(conn, repo, parts[2], range.as_deref(), vec![]);
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        // owner/name/revision/rev
        let parts: Vec<&str> = rest.splitn(4, '/').collect();
        let repo = (parts.len() == 4 && parts[2] == "revision")
            .then(|| repos.get(&format!("{}/{}", parts[0], parts[1])))
            .flatten();
        match repo {
            None => error(conn, "401 Unauthorized", "RepoNotFound"),
            Some(r) if parts[3] == "main" || parts[3] == r.commit => {
                let siblings: Vec<_> = r
                    .files
                    .keys()
                    .map(|f| serde_json::json!({ "rfilename": f }))
                    .collect();
                let body = serde_json::json!({ "sha": r.commit, "siblings": siblings });
                respond(conn, "200 OK", &[], body.to_string().as_bytes());
            }
            Some(_) => error(conn, "404 Not Found", "RevisionNotFound"),
        }
        return;
    }
    // /owner/name/resolve/rev/file
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    let found = (parts.len() == 5 && parts[2] == "resolve")
        .then(|| repos.get(&format!("{}/{}", parts[0], parts[1])))
        .flatten();
    let Some(repo) = found else {
        return error(conn, "401 Unauthorized", "RepoNotFound");
    };
    if !authorised(repo) {
        return error(conn, "401 Unauthorized", "GatedRepo");
    }
    if let Some(target) = &repo.renamed_to {
        let loc = format!("/{target}/resolve/{}/{}", parts[3], parts[4]);
        return respond(
            conn,
            "307 Temporary Redirect",
            &[("Location".into(), loc)],
            b"",
        );
    }
    let Some(data) = repo.files.get(parts[4]) else {
        return error(conn, "404 Not Found", "EntryNotFound");
    };
    let commit = ("X-Repo-Commit".to_string(), repo.commit.clone());
    if parts[4].ends_with(".safetensors") {
        let port = host.rsplit(':').next().unwrap();
        let loc = format!(
            "http://localhost:{port}/cdn/{}/{}/{}",
            parts[0], parts[1], parts[4]
        );
        let headers = [
            ("Location".to_string(), loc),
            commit,
            (
                "X-Linked-Etag".into(),
                format!("\"{}\"", etag(parts[4], data)),
            ),
            ("X-Linked-Size".into(), data.len().to_string()),
        ];
        return respond(conn, "302 Found", &headers, b"");
    }
    let tag = ("ETag".to_string(), format!("\"{}\"", etag(parts[4], data)));
    send_file(conn, repo, parts[4], range.as_deref(), vec![commit, tag]);
}

fn send_file(
    conn: TcpStream,
    repo: &Repo,
    name: &str,
    range: Option<&str>,
    mut headers: Vec<(String, String)>,
) {
    let mut body = repo.files[name].clone();
    if repo.corrupt.iter().any(|c| c == name) {
        *body.last_mut().unwrap() ^= 0x55;
    }
    let total = body.len();
    match range.and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap();
            let a: usize = a.parse().unwrap();
            if a >= total {
                return respond(conn, "416 Range Not Satisfiable", &[], b"");
            }
            let b: usize = if b.is_empty() {
                total - 1
            } else {
                b.parse::<usize>().unwrap().min(total - 1)
            };
            headers.push(("Content-Range".into(), format!("bytes {a}-{b}/{total}")));
            respond(conn, "206 Partial Content", &headers, &body[a..=b]);
        }
        None => respond(conn, "200 OK", &headers, &body),
    }
}

fn model_files() -> BTreeMap<String, Vec<u8>> {
    [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
    ]
    .iter()
    .map(|f| {
        (
            f.to_string(),
            std::fs::read(Path::new(MODEL).join(f)).unwrap(),
        )
    })
    .collect()
}

fn commit(n: u8) -> String {
    format!("{n:02x}").repeat(20)
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("spikescan-hub-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn options(hub: &TestHub, cache: &Path) -> HubOptions {
    HubOptions {
        endpoint: hub.endpoint.clone(),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline: false,
        progress: false,
    }
}

fn id(s: &str) -> HubId {
    HubId::parse(s).unwrap()
}

#[test]
fn a_model_downloads_into_the_hub_cache_and_is_then_used_without_the_hub() {
    let mut hub = TestHub::start();
    hub.add(
        "spikescan-test/mamba-pydoc",
        Repo {
            commit: commit(1),
            files: model_files(),
            ..Repo::default()
        },
    );
    let cache = temp("download");
    let opts = options(&hub, &cache);
    let dir = fetch_model(&id("spikescan-test/mamba-pydoc"), &opts).unwrap();
    let repo = cache.join("models--spikescan-test--mamba-pydoc");
    assert_eq!(dir, repo.join("snapshots").join(commit(1)));
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        commit(1)
    );
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert_eq!(
            std::fs::read(dir.join(f)).unwrap(),
            std::fs::read(Path::new(MODEL).join(f)).unwrap(),
            "{f}"
        );
        // Snapshot files link to content-addressed blobs, as the Python client lays them out.
        let blob = std::fs::canonicalize(dir.join(f)).unwrap();
        assert_eq!(
            blob.parent().unwrap(),
            repo.join("blobs").canonicalize().unwrap()
        );
    }
    assert!(
        !dir.join("README.md").exists(),
        "only the files a model needs"
    );
    // labels.txt is recorded as absent, as the Python client records it.
    assert!(repo
        .join(".no_exist")
        .join(commit(1))
        .join("labels.txt")
        .is_file());
    // Weights fetched from the CDN host without the token; nothing left half-written.
    let asked = hub.requests();
    assert!(
        asked
            .iter()
            .any(|r| r.contains("/cdn/") && r.contains("host=localhost")),
        "{asked:#?}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(repo.join("blobs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A snapshot that lost a file the repository has fetches just that file.
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let before = hub.requests().len();
    fetch_model(&id("spikescan-test/mamba-pydoc"), &opts).unwrap();
    let again = &hub.requests()[before..];
    assert!(dir.join("tokenizer.json").is_file());
    assert!(
        again
            .iter()
            .all(|r| r.contains("/api/") || r.contains("tokenizer.json")),
        "{again:#?}"
    );
    let asked = hub.requests().len();
    // Cached: the Hub is not asked again, and works with it gone, and offline.
    assert_eq!(
        fetch_model(&id("spikescan-test/mamba-pydoc"), &opts).unwrap(),
        dir
    );
    assert_eq!(hub.requests().len(), asked);
    hub.shut();
    assert_eq!(
        fetch_model(&id("spikescan-test/mamba-pydoc"), &opts).unwrap(),
        dir
    );
    let offline = HubOptions {
        offline: true,
        ..opts.clone()
    };
    assert_eq!(
        fetch_model(
            &id(&format!("spikescan-test/mamba-pydoc@{}", commit(1))),
            &offline
        )
        .unwrap(),
        dir
    );
    let e = fetch_model(&id("spikescan-test/other"), &offline).unwrap_err();
    assert!(matches!(e, HubError::Offline { .. }), "{e}");
    assert!(e.to_string().contains("HF_HUB_OFFLINE"), "{e}");
    // The server is gone and the model is not cached: a network error that names the Hub.
    let e = fetch_model(&id("spikescan-test/other"), &opts).unwrap_err();
    assert!(matches!(e, HubError::Network { .. }), "{e}");
    assert!(e.to_string().contains(&hub.endpoint), "{e}");
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn generate_runs_a_model_by_hub_id_end_to_end() {
    let mut hub = TestHub::start();
    hub.add(
        "spikescan-test/mamba-pydoc",
        Repo {
            commit: commit(2),
            files: model_files(),
            ..Repo::default()
        },
    );
    let cache = temp("cli");
    let cache_s = cache.to_str().unwrap();
    let args = |m: &str| {
        vec![
            "generate".to_string(),
            "--model".into(),
            m.into(),
            "--prompt".into(),
            "Returns the".into(),
            "--max-new-tokens".into(),
            "6".into(),
        ]
    };
    let run = |m: &str, env: &[(&str, &str)]| {
        let a = args(m);
        spikescan(&a.iter().map(String::as_str).collect::<Vec<_>>(), env)
    };
    let (code, local, err) = run(MODEL, &[]);
    assert_eq!(code, 0, "{err}");
    let endpoint = hub.endpoint.clone();
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HUB_CACHE", cache_s),
    ];
    let (code, out, err) = run("spikescan-test/mamba-pydoc", &env);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out, local,
        "the same text from the Hub as from the directory"
    );
    hub.shut();
    let (code, out, err) = run("spikescan-test/mamba-pydoc", &env);
    assert_eq!(code, 0, "cached, with the Hub gone: {err}");
    assert_eq!(out, local);
    let offline = [env[0], env[1], ("HF_HUB_OFFLINE", "1")];
    let (code, out, _) = run("spikescan-test/mamba-pydoc", &offline);
    assert_eq!((code, out), (0, local));
    let (code, _, err) = run("spikescan-test/not-cached", &offline);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("HF_HUB_OFFLINE") && err.contains("spikescan-test/not-cached"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&cache);
}

/// The bundled model's tensors split over two shards with an index, as the Hub stores large
/// checkpoints.
fn sharded_files() -> BTreeMap<String, Vec<u8>> {
    let ck =
        spikescan::loader::Checkpoint::open(Path::new(MODEL).join("model.safetensors")).unwrap();
    let keys: Vec<String> = ck.keys().map(str::to_string).collect();
    let dir = temp("shards");
    let mut files = model_files();
    files.remove("model.safetensors");
    let mut map = serde_json::Map::new();
    for (i, part) in keys.chunks(keys.len().div_ceil(2)).enumerate() {
        let name = format!("model-{:05}-of-00002.safetensors", i + 1);
        let tensors: Vec<_> = part
            .iter()
            .map(|k| {
                (
                    k.clone(),
                    ck.shape(k).unwrap().to_vec(),
                    ck.f32_any(k).unwrap(),
                )
            })
            .collect();
        spikescan::loader::save_f32(dir.join(&name), &tensors).unwrap();
        files.insert(name.clone(), std::fs::read(dir.join(&name)).unwrap());
        for k in part {
            map.insert(k.clone(), name.clone().into());
        }
    }
    let index = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": map });
    files.insert(
        "model.safetensors.index.json".into(),
        index.to_string().into_bytes(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    files
}

fn prompt_logits(dev: &Device, md: &ModelDir) -> Vec<f32> {
    let Model::Mamba(m) = Model::from_dir(dev, md).unwrap() else {
        panic!("not a Mamba model")
    };
    m.logits(dev, &[5, 17, 300, 2, 999, 41], 1).unwrap()
}

#[test]
fn a_sharded_checkpoint_downloads_and_gives_the_single_files_logits() {
    let hub = TestHub::start();
    hub.add(
        "spikescan-test/sharded",
        Repo {
            commit: commit(3),
            files: sharded_files(),
            ..Repo::default()
        },
    );
    let cache = temp("sharded");
    let dir = fetch_model(&id("spikescan-test/sharded"), &options(&hub, &cache)).unwrap();
    let sharded = ModelDir::open_dir(&dir).unwrap();
    assert_eq!(sharded.checkpoint.shard_count(), 2);
    let single = ModelDir::open_dir(MODEL).unwrap();
    let dev = Device::new().unwrap();
    let (a, b) = (prompt_logits(&dev, &sharded), prompt_logits(&dev, &single));
    assert!(a.iter().all(|v| v.is_finite()));
    assert_eq!(a, b, "bit-identical logits from the shards");
    // A shard the index names but the repository lacks.
    let mut files = sharded_files();
    files.remove("model-00002-of-00002.safetensors");
    hub.add(
        "spikescan-test/lost-shard",
        Repo {
            commit: commit(4),
            files,
            ..Repo::default()
        },
    );
    let e = fetch_model(&id("spikescan-test/lost-shard"), &options(&hub, &cache)).unwrap_err();
    assert!(
        e.to_string()
            .contains("has no model-00002-of-00002.safetensors"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn a_partial_download_resumes_where_it_stopped() {
    let hub = TestHub::start();
    let files = model_files();
    let weights = files["model.safetensors"].clone();
    hub.add(
        "spikescan-test/resume",
        Repo {
            commit: commit(5),
            files,
            ..Repo::default()
        },
    );
    let cache = temp("resume");
    let blobs = cache.join("models--spikescan-test--resume/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let half = weights.len() / 2;
    let part = blobs.join(format!("{}.part", etag("model.safetensors", &weights)));
    std::fs::write(&part, &weights[..half]).unwrap();
    // With the progress bar (drawn only where stderr is a terminal).
    let opts = HubOptions {
        progress: true,
        ..options(&hub, &cache)
    };
    let dir = fetch_model(&id("spikescan-test/resume"), &opts).unwrap();
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        weights
    );
    let asked = hub.requests();
    assert!(
        asked
            .iter()
            .any(|r| r.contains("model.safetensors") && r.ends_with(&format!("bytes={half}-"))),
        "{asked:#?}"
    );
    assert!(!part.exists());
    // A .part that holds the whole file (a crash before its rename) is verified and used.
    hub.add(
        "spikescan-test/resume-full",
        Repo {
            commit: commit(10),
            files: model_files(),
            ..Repo::default()
        },
    );
    let blobs = cache.join("models--spikescan-test--resume-full/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(
        blobs.join(format!("{}.part", etag("model.safetensors", &weights))),
        &weights,
    )
    .unwrap();
    let before = hub.requests().len();
    let dir = fetch_model(&id("spikescan-test/resume-full"), &opts).unwrap();
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        weights
    );
    let again = &hub.requests()[before..];
    assert!(!again.iter().any(|r| r.contains("/cdn/")), "{again:#?}");
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn a_corrupt_download_is_deleted_and_reported() {
    let hub = TestHub::start();
    let repo = Repo {
        commit: commit(6),
        files: model_files(),
        corrupt: vec!["model.safetensors".into()],
        ..Repo::default()
    };
    hub.add("spikescan-test/corrupt", repo.clone());
    let cache = temp("corrupt");
    let opts = options(&hub, &cache);
    let e = fetch_model(&id("spikescan-test/corrupt"), &opts).unwrap_err();
    assert!(matches!(e, HubError::Corrupt { .. }), "{e}");
    assert!(
        e.to_string().contains("model.safetensors") && e.to_string().contains("sha256"),
        "{e}"
    );
    let snapshot = cache
        .join("models--spikescan-test--corrupt/snapshots")
        .join(commit(6));
    assert!(!snapshot.join("model.safetensors").exists());
    let blobs = cache.join("models--spikescan-test--corrupt/blobs");
    let names: Vec<_> = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.to_string_lossy().ends_with(".part")),
        "{names:?}"
    );
    // Once the Hub serves the right bytes, the next run succeeds.
    hub.add(
        "spikescan-test/corrupt",
        Repo {
            corrupt: vec![],
            ..repo
        },
    );
    let dir = fetch_model(&id("spikescan-test/corrupt"), &opts).unwrap();
    assert!(ModelDir::open_dir(&dir).is_ok());
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn missing_repositories_files_and_tokens_and_pickles_are_clear_errors() {
    let hub = TestHub::start();
    let cache = temp("errors");
    let opts = options(&hub, &cache);
    let e = fetch_model(&id("spikescan-test/nothing"), &opts).unwrap_err();
    assert!(matches!(e, HubError::NotFound { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("no model repository 'spikescan-test/nothing'"),
        "{e}"
    );
    let mut files = model_files();
    files.remove("config.json");
    hub.add(
        "spikescan-test/no-config",
        Repo {
            commit: commit(7),
            files,
            ..Repo::default()
        },
    );
    let e = fetch_model(&id("spikescan-test/no-config"), &opts).unwrap_err();
    assert!(e.to_string().contains("has no config.json"), "{e}");
    let mut files = model_files();
    let weights = files.remove("model.safetensors").unwrap();
    files.insert("pytorch_model.bin".into(), weights);
    hub.add(
        "spikescan-test/pickle",
        Repo {
            commit: commit(8),
            files,
            ..Repo::default()
        },
    );
    let e = fetch_model(&id("spikescan-test/pickle"), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pytorch_model.bin")
            && e.contains("tools/convert.py")
            && e.contains("--set architecture=mamba"),
        "{e}"
    );
    hub.add(
        "spikescan-test/gated",
        Repo {
            commit: commit(9),
            files: model_files(),
            token: Some("hf_secret".into()),
            ..Repo::default()
        },
    );
    let e = fetch_model(&id("spikescan-test/gated"), &opts).unwrap_err();
    assert!(matches!(e, HubError::Gated { status: 401, .. }), "{e}");
    assert!(
        e.to_string().contains("HF_TOKEN") && e.to_string().contains("conditions"),
        "{e}"
    );
    let with_token = HubOptions {
        token: Some("hf_secret".into()),
        ..opts.clone()
    };
    let before = hub.requests().len();
    assert!(fetch_model(&id("spikescan-test/gated"), &with_token).is_ok());
    // The token goes to the Hub, never to the CDN it redirects to.
    let sent = &hub.requests()[before..];
    assert!(
        sent.iter()
            .any(|r| r.contains("host=127.0.0.1") && r.contains("auth=true")),
        "{sent:#?}"
    );
    assert!(
        sent.iter()
            .all(|r| !r.contains("host=localhost") || r.contains("auth=false")),
        "{sent:#?}"
    );
    // A renamed repository: its files answer with a relative redirect, which is followed.
    hub.add(
        "spikescan-test/renamed",
        Repo {
            commit: commit(11),
            files: model_files(),
            renamed_to: Some("spikescan-test/renamed-to".into()),
            ..Repo::default()
        },
    );
    hub.add(
        "spikescan-test/renamed-to",
        Repo {
            commit: commit(11),
            files: model_files(),
            ..Repo::default()
        },
    );
    assert!(fetch_model(&id("spikescan-test/renamed"), &opts).is_ok());
    let e = fetch_model(
        &id(&format!("spikescan-test/renamed@{}", commit(12))),
        &opts,
    )
    .unwrap_err();
    assert!(matches!(e, HubError::NotFound { .. }), "{e}");
    // Through the CLI: an id that names no repository.
    let (code, _, err) = spikescan(
        &[
            "generate",
            "--model",
            "spikescan-test/nothing",
            "--prompt-ids",
            "1",
        ],
        &[
            ("HF_ENDPOINT", &hub.endpoint),
            ("HF_HUB_CACHE", cache.to_str().unwrap()),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("there is no model directory spikescan-test/nothing, and the Hub at")
            && err.contains("no model repository 'spikescan-test/nothing'"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&cache);
}
