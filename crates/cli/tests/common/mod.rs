//! The `spikescan` binary run by the tests.

use std::process::Command;

/// Runs the binary with `args` and `env` on top of the test's environment, less what could
/// send a test Hub's requests elsewhere (proxies) or change how they are made (a token,
/// offline mode, another Hub home). Returns the exit code, stdout and stderr.
pub fn spikescan(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spikescan"));
    c.args(args);
    for k in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
        "HF_HOME",
    ] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("binary runs");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
