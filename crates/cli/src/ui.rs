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
