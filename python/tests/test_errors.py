"""Bad inputs raise the right `spikescan.Error` subclass with the message the CLI prints for
the same problem (the CLI prefixes "spikescan: "); nothing crashes the interpreter."""
import json
import os
import shutil

import numpy as np
import pytest

import spikescan
from conftest import FIXTURES, MODELS, write_safetensors

DIGITS = os.path.join(MODELS, "spikformer-digits")
MAMBA = os.path.join(MODELS, "mamba-pydoc")


def cli_message(cli, *args, env=None):
    r = cli(*args, ok=False)
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("spikescan: "), r.stderr
    return line[len("spikescan: "):]


def test_a_missing_model_directory(cli):
    with pytest.raises(spikescan.ModelNotFoundError) as e:
        spikescan.load("/no/such/dir")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, spikescan.Error)
    assert str(e.value) == cli_message(cli, "run", "--model", "/no/such/dir", "--input", "x.safetensors")
    assert "/no/such/dir" in str(e.value) and "does not exist" in str(e.value)


@pytest.mark.parametrize("config,words", [
    ("{}", ["config.json", "architecture"]),
    ("{not json", ["config.json", "not valid JSON"]),
    ('{"architecture": "resnet"}', ["unknown architecture 'resnet'", "spikformer"]),
    ('{"architecture": "spikformer", "variant": "cifar"}', ["config.json", "missing"]),
])
def test_a_bad_config(cli, tmp_path, config, words):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(config)
    shutil.copy(os.path.join(DIGITS, "model.safetensors"), d / "model.safetensors")
    with pytest.raises(spikescan.ConfigError) as e:
        spikescan.load(d)
    msg = str(e.value)
    for w in words:
        assert w in msg, msg
    assert msg == cli_message(cli, "run", "--model", d, "--input", "x.safetensors")


def test_a_missing_checkpoint(cli, tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    shutil.copy(os.path.join(DIGITS, "config.json"), d / "config.json")
    with pytest.raises(spikescan.CheckpointError) as e:
        spikescan.load(d)
    assert "model.safetensors" in str(e.value)
    assert str(e.value) == cli_message(cli, "run", "--model", d, "--input", "x.safetensors")


def test_wrong_input_shapes(cli, tmp_path):
    m = spikescan.load(DIGITS)
    x = np.zeros((1, 1, 16, 16), np.float32)
    with pytest.raises(spikescan.InputError) as e:
        m(x)
    assert isinstance(e.value, ValueError)
    write_safetensors(tmp_path / "x.safetensors", {"input": x})
    assert str(e.value) == cli_message(cli, "run", "--model", DIGITS, "--input", tmp_path / "x.safetensors")
    assert "[B, 3, H, W]" in str(e.value)
    with pytest.raises(spikescan.InputError):
        m(np.zeros((3, 16, 16), np.float32))
    with pytest.raises(spikescan.InputError):
        m.classify(np.zeros((16, 16, 4), np.uint8))
    lmu = spikescan.load(os.path.join(MODELS, "lmuformer-digits"))
    with pytest.raises(spikescan.InputError):
        lmu(np.zeros((1, 16, 7), np.float32))
    s = lmu.stream()
    with pytest.raises(spikescan.InputError) as e:
        s.push(np.zeros(5, np.float32))
    assert "frame" in str(e.value)


def test_wrong_dtypes():
    m = spikescan.load(DIGITS)
    with pytest.raises(spikescan.DTypeError) as e:
        m(np.zeros((1, 3, 16, 16), np.float64))
    assert isinstance(e.value, TypeError) and "float32" in str(e.value)
    with pytest.raises(spikescan.DTypeError):
        m([[0.0]])
    lm = spikescan.load(MAMBA)
    with pytest.raises(spikescan.DTypeError) as e:
        lm(np.zeros((1, 4), np.float32))
    assert "integer" in str(e.value)
    with pytest.raises(spikescan.InputError):
        spikescan.load(DIGITS, dtype="f8")
    with pytest.raises(spikescan.InputError):
        spikescan.load(DIGITS, dtype=np.int8)
    assert spikescan.load(DIGITS, dtype="f32").architecture == "spikformer"
    assert spikescan.load(DIGITS, dtype=np.float32).architecture == "spikformer"


def test_token_ids_out_of_range(cli, tmp_path):
    lm = spikescan.load(MAMBA)
    ids = np.array([[1, 2, 5000]], np.int64)
    with pytest.raises(spikescan.InputError) as e:
        lm(ids)
    write_safetensors(tmp_path / "ids.safetensors", {"input_ids": ids})
    assert str(e.value) == cli_message(cli, "run", "--model", MAMBA, "--input", tmp_path / "ids.safetensors")
    assert "token id 5000 is out of range" in str(e.value)
    with pytest.raises(spikescan.InputError) as e:
        lm.generate([1, 2, 5000])
    assert str(e.value) == cli_message(cli, "generate", "--model", MAMBA, "--prompt-ids", "1,2,5000")
    with pytest.raises(spikescan.InputError) as e:
        lm(np.array([[1, -1]]))
    assert "token id -1 is out of range" in str(e.value)
    with pytest.raises(spikescan.InputError):
        lm.generate([])
    with pytest.raises(spikescan.InputError):
        lm(np.zeros((2, 3, 4), np.int64))


def test_wrong_calls_for_the_architecture(cli):
    m = spikescan.load(DIGITS)
    for call in (lambda: m.generate("hi"), lambda: m.state(1), lambda: m.stream(),
                 lambda: m(np.zeros((1, 3, 16, 16), np.float32), all_seq=True)):
        with pytest.raises(spikescan.InputError):
            call()
    lm = spikescan.load(os.path.join(FIXTURES, "mamba-ssm-untied"))
    with pytest.raises(spikescan.InputError) as e:
        lm.generate("no tokenizer here")
    assert "tokenizer.json" in str(e.value)
    with pytest.raises(spikescan.InputError):
        lm.classify(np.zeros((1, 3, 16, 16), np.float32))


def test_missing_and_undecodable_input_files(cli, tmp_path):
    m = spikescan.load(DIGITS)
    missing = str(tmp_path / "none.safetensors")
    with pytest.raises(spikescan.InputError) as e:
        m.classify(missing)
    assert str(e.value) == cli_message(cli, "run", "--model", DIGITS, "--input", missing)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(spikescan.InputError) as e:
        m.classify(str(bad))
    assert str(e.value) == cli_message(cli, "run", "--model", DIGITS, "--input", bad)
    assert "cannot decode" in str(e.value)


def test_a_device_that_does_not_exist(cli_bin):
    import subprocess

    with pytest.raises(spikescan.DeviceError) as e:
        spikescan.Device(backend="cuda")
    r = subprocess.run([cli_bin, "info"], capture_output=True, text=True,
                       env={**os.environ, "SPIKESCAN_BACKEND": "cuda"})
    assert r.returncode == 2
    assert r.stderr.strip() == "spikescan: " + str(e.value)
    with pytest.raises(spikescan.DeviceError) as e:
        spikescan.Device(adapter="no-such-gpu-42")
    assert "no-such-gpu-42" in str(e.value) and "no GPU adapter" in str(e.value)


def test_a_pth_needs_a_preset_or_config_and_a_bad_one_is_a_checkpoint_error(tmp_path):
    pth = os.path.join(FIXTURES, "spiking-lmuformer-small.pth")
    with pytest.raises(spikescan.ConfigError):
        spikescan.load(pth)
    with pytest.raises(spikescan.ModelNotFoundError):
        spikescan.load(str(tmp_path / "none.pth"), preset="lmuformer-gsc")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a zip")
    with pytest.raises(spikescan.CheckpointError):
        spikescan.load(str(bad), preset="lmuformer-gsc")


def test_a_model_by_hub_id_from_the_cache_and_an_uncached_one_offline(monkeypatch, tmp_path):
    """`spikescan.load("owner/name")` reads the Hub's cache layout (what a download leaves;
    the downloads themselves are tested against a local Hub in crates/cli/tests/hub.rs)."""
    commit = "ab" * 20
    repo = tmp_path / "models--spikescan-test--mamba-pydoc"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in ["config.json", "model.safetensors", "tokenizer.json"]:
        shutil.copy(os.path.join(MAMBA, f), snap / f)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    by_id = spikescan.load("spikescan-test/mamba-pydoc")
    local = spikescan.load(MAMBA)
    assert by_id.architecture == "mamba"
    a, b = by_id.generate("def ", max_new_tokens=4), local.generate("def ", max_new_tokens=4)
    assert list(a) == list(b) and a.tokens == b.tokens
    with pytest.raises(spikescan.ModelNotFoundError) as e:
        spikescan.load("spikescan-test/not-cached")
    assert "HF_HUB_OFFLINE" in str(e.value) and "spikescan-test/not-cached" in str(e.value)


def test_nan_in_weights_or_inputs_warns_naming_the_tensor(tmp_path):
    import warnings
    from conftest import read_safetensors
    # The bundled classifier with a NaN and an Inf in its head.
    d = tmp_path / "poisoned"
    d.mkdir()
    shutil.copy(os.path.join(DIGITS, "config.json"), d / "config.json")
    tensors = {k: np.array(v, np.float32) for k, v in
               read_safetensors(os.path.join(DIGITS, "model.safetensors")).items()
               if v.dtype.kind == "f"}
    key = next(k for k in tensors if k.endswith("head.weight"))
    tensors[key].flat[0] = np.nan
    tensors[key].flat[1] = np.inf
    write_safetensors(d / "model.safetensors", tensors)
    with pytest.warns(RuntimeWarning, match=key) as w:
        spikescan.load(str(d))
    assert "2 of" in str(w[0].message)
    # A NaN in an input array, on the clean model; no warning for a clean input.
    m = spikescan.load(DIGITS)
    x = np.zeros((1, 3, 16, 16), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m(x)
    x[0, 0, 0, 0] = np.nan
    with pytest.warns(RuntimeWarning, match="1 of 768 values are NaN or Inf"):
        m(x)
    # The CLI's --strict: warnings as errors.
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(RuntimeWarning):
            m.classify(x)


def test_f16_weights_are_within_1e_2_of_f32():
    """dtype="f16" keeps the matrices in f16 (an InputError naming shader-f16 on an adapter
    without it): the dense LMUFormer's logits stay within 1e-2 relative L2 of its f32 run
    (spiking models flip the few spikes that sat at the threshold: tests/bundled.rs)."""
    lmu = os.path.join(MODELS, "lmuformer-digits")
    want_model = spikescan.load(lmu, dtype="f32")
    x = np.random.default_rng(3).uniform(-1, 1, (2, 16, 16)).astype(np.float32)
    try:
        half = spikescan.load(lmu, dtype=np.float16)
    except spikescan.InputError as e:
        assert "shader-f16" in str(e)
        return
    want, got = want_model(x), half(x)
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert 0 < rel < 1e-2, rel
