//! Output conventions shared by every subcommand: `--quiet` silences notes and progress on
//! stderr, `--json` turns stdout into JSON (one object per line), progress shows on a
//! terminal only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

static QUIET: AtomicBool = AtomicBool::new(false);
static JSON: AtomicBool = AtomicBool::new(false);

pub fn set(quiet: bool, json: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
    JSON.store(json, Ordering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// A note on stderr (dropped with --quiet).
pub fn note(msg: impl AsRef<str>) {
    if !quiet() {
        eprintln!("{}", msg.as_ref());
    }
}

/// One JSON object on stdout.
pub fn emit(v: serde_json::Value) {
    println!("{v}");
}

/// A spinner with a message while something slow runs (hidden off a terminal or with
/// --quiet); finish it with [`done`].
pub fn spinner(msg: impl Into<String>) -> ProgressBar {
    if quiet() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(msg.into());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// A bar over `n` steps (benchmarks).
pub fn bar(n: u64, msg: impl Into<String>) -> ProgressBar {
    if quiet() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(n);
    pb.set_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(msg.into());
    pb
}

pub fn done(pb: ProgressBar) {
    pb.finish_and_clear();
}

static STRICT: AtomicBool = AtomicBool::new(false);
static WEIGHTS: std::sync::Mutex<spikescan::models::WeightDtype> =
    std::sync::Mutex::new(spikescan::models::WeightDtype::Auto);

/// `--dtype`: how models keep their matrices.
pub fn set_weights(w: spikescan::models::WeightDtype) {
    *WEIGHTS.lock().unwrap_or_else(|e| e.into_inner()) = w;
}

pub fn weights() -> spikescan::models::WeightDtype {
    *WEIGHTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens a model directory or Hub id, its matrices kept as `--dtype` says.
pub fn open_model(
    spec: &std::path::Path,
) -> Result<spikescan::models::ModelDir, spikescan::models::ModelError> {
    Ok(spikescan::models::ModelDir::open(spec)?.with_weights(weights()))
}

/// `--strict`: NaN/Inf in weights or inputs are errors instead of warnings.
pub fn set_strict(on: bool) {
    STRICT.store(on, Ordering::Relaxed);
}

pub fn strict() -> bool {
    STRICT.load(Ordering::Relaxed)
}

/// A warning on stderr (dropped with --quiet; with --json, also a JSON record on stdout).
pub fn warn(msg: impl AsRef<str>) {
    if json() {
        emit(serde_json::json!({ "warning": msg.as_ref() }));
    }
    if !quiet() {
        eprintln!("spikescan: warning: {}", msg.as_ref());
    }
}

/// NaN or ±Inf found in `what`: a warning naming it, or with --strict an error.
fn nonfinite(what: String) -> anyhow::Result<()> {
    if strict() {
        anyhow::bail!("{what} (refused by --strict)");
    }
    warn(format!(
        "{what}; they propagate through the model (spiking layers turn NaN into no spike): \
         --strict makes this an error"
    ));
    Ok(())
}

/// Reports the weights of a loaded model that hold NaN or ±Inf (every tensor is checked as
/// it is read).
pub fn check_weights(md: &spikescan::models::ModelDir) -> anyhow::Result<()> {
    let bad = md.checkpoint.nonfinite_tensors();
    if bad.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = bad
        .iter()
        .take(8)
        .map(|(k, b, t)| format!("'{k}' ({b} of {t} values)"))
        .collect();
    let more = if bad.len() > 8 {
        format!(" and {} more", bad.len() - 8)
    } else {
        String::new()
    };
    nonfinite(format!(
        "{}: NaN or Inf in {} weight tensor(s): {}{more}",
        md.checkpoint.path().display(),
        bad.len(),
        list.join(", ")
    ))
}

/// Reports NaN or ±Inf in an input tensor (`what` names it: the file and the tensor).
pub fn check_input(data: &[f32], what: &str) -> anyhow::Result<()> {
    let bad = spikescan::loader::count_nonfinite(data);
    if bad == 0 {
        return Ok(());
    }
    nonfinite(format!(
        "{what}: {bad} of {} values are NaN or Inf",
        data.len()
    ))
}

/// Checks an output path before any work, so a run never computes for nothing.
pub fn check_output(path: Option<&std::path::Path>) -> anyhow::Result<()> {
    if let Some(p) = path {
        spikescan::loader::check_writable(p)?;
    }
    Ok(())
}
