//! tools/convert.py on official-layout checkpoints written by torch.save (fixtures from
//! tools/reference/make_pth.py): the converted model directories must give the reference
//! logits exactly. Needs python3 with numpy (tools/requirements-convert.txt), as CI installs.

use std::path::{Path, PathBuf};
use std::process::Command;

use spikescan::loader::Checkpoint;
use spikescan::models::Model;
use spikescan::{Device, DeviceOptions};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python(args: &[&str]) -> (bool, String) {
    let out = Command::new("python3").args(args).current_dir(root()).output().unwrap_or_else(|e| {
        panic!("python3 is needed for tools/convert.py ({e}); install it with numpy: pip install -r tools/requirements-convert.txt")
    });
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn convert_and_compare(pth: &str, fixture: &str, extra: &[&str]) {
    let out = std::env::temp_dir().join(format!(
        "spikescan-convert-{}-{fixture}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&out);
    let cfg = root()
        .join("tests/fixtures")
        .join(fixture)
        .join("config.json");
    let mut args = vec![
        "tools/convert.py",
        pth,
        out.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (ok, log) = python(&args);
    assert!(ok, "convert.py failed:\n{log}");
    let dev = Device::with_options(DeviceOptions::from_env()).unwrap();
    let dir = root().join("tests/fixtures").join(fixture);
    let io = Checkpoint::open(dir.join("io.safetensors")).unwrap();
    let x = dev
        .tensor_f32(&io.f32_any("input").unwrap(), io.shape("input").unwrap())
        .unwrap();
    let logits = |path: &Path| {
        let model = Model::load(&dev, path).unwrap();
        let mut rec = dev.recorder("convert");
        let y = model.forward(&mut rec, &x, None).unwrap();
        rec.submit().unwrap();
        dev.read_f32(&y).unwrap()
    };
    // The converted directory runs exactly as the fixture's own model directory.
    assert_eq!(logits(&out), logits(&dir), "{pth}: logits after conversion");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn an_official_meta_spikeformer_pth_converts_to_identical_logits() {
    // {"model": {"module.…": …}, "args": Namespace, "epoch": 5}
    convert_and_compare(
        "tests/fixtures/meta-spikeformer-exact-t1.pth",
        "meta-spikeformer-exact-t1",
        &[],
    );
}

#[test]
fn an_lmuformer_pth_with_complex_buffers_converts_to_identical_logits() {
    // The "module."-prefixed state dict at the top level, fft_H (complex64) included.
    convert_and_compare(
        "tests/fixtures/spiking-lmuformer-small.pth",
        "spiking-lmuformer-small",
        &[],
    );
}

#[test]
fn a_timm_state_dict_with_f16_weights_converts_to_identical_logits() {
    convert_and_compare(
        "tests/fixtures/spikformer-cifar-exact-f16.pth",
        "spikformer-cifar-exact",
        &[],
    );
    convert_and_compare(
        "tests/fixtures/spikformer-cifar-exact-f16.pth",
        "spikformer-cifar-exact",
        &["--dtype", "f32"],
    );
}

#[test]
fn convert_refuses_unsafe_pickles_and_bad_arguments() {
    let (ok, log) = python(&["tools/test_convert.py"]);
    assert!(ok && log.contains("OK"), "{log}");
    assert!(Path::new(&root().join("tools/convert.py")).exists());
}
