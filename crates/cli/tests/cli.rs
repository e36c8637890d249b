//! The `spikescan` binary end to end: `info`, `ops`, and errors for a missing adapter.

use std::process::Command;

fn spikescan(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spikescan"));
    c.args(args);
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

#[test]
fn info_prints_adapter_backend_driver_features_and_limits() {
    let (code, out, err) = spikescan(&["info", "--all"], &[]);
    assert_eq!(code, 0, "{err}");
    for field in [
        "adapter",
        "backend",
        "driver",
        "features",
        "max_storage_buffer_binding_size",
    ] {
        assert!(out.contains(field), "missing {field}:\n{out}");
    }
}

#[test]
fn ops_prints_a_support_matrix_and_passes() {
    let (code, out, err) = spikescan(&["ops", "--filter", "rms_norm"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("subgroups") && out.contains("rms_norm") && out.contains("ok"),
        "{out}"
    );
}

#[test]
fn an_adapter_that_does_not_exist_is_a_clear_error() {
    let (code, _, err) = spikescan(&["info"], &[("SPIKESCAN_ADAPTER", "no-such-gpu-42")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no-such-gpu-42") && err.contains("no GPU adapter"),
        "{err}"
    );
}

#[test]
fn no_adapter_on_a_backend_says_how_to_get_one() {
    // No DX12 or Metal on Linux: the adapter list is empty.
    let backend = if cfg!(target_os = "linux") {
        "dx12"
    } else {
        "gl"
    };
    let (code, _, err) = spikescan(&["info"], &[("SPIKESCAN_BACKEND", backend)]);
    if cfg!(target_os = "linux") {
        assert_eq!(code, 2);
        assert!(
            err.contains("no GPU adapter") && err.contains("mesa-vulkan-drivers"),
            "{err}"
        );
    }
    let (code, _, err) = spikescan(&["info"], &[("SPIKESCAN_BACKEND", "cuda")]);
    assert_eq!(code, 2);
    assert!(err.contains("cuda"), "{err}");
}
