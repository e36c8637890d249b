"""Every bundled model (models/) gives through Python exactly what the `spikescan` CLI gives:
the same top classes, logits, per-layer stats, streamed frames and generated tokens, bit for
bit."""
import glob
import os
import wave

import numpy as np
import pytest

import spikescan
from conftest import MODELS, json_lines, read_safetensors, write_safetensors

VISION = ["spikformer-digits", "meta-spikeformer-digits"]
AUDIO = ["lmuformer-digits", "spiking-lmuformer-digits"]


def f32(v):
    return np.float32(v)


def assert_same_top(got, want):
    assert [(g["class"], g["label"]) for g in got] == [(w["class"], w["label"]) for w in want]
    assert [f32(g["logit"]) for g in got] == [f32(w["logit"]) for w in want]


def assert_same_stats(st, lines, spiking=True):
    *layers, total = lines
    assert len(st["layers"]) == len(layers)
    assert (len(layers) > 0) == spiking
    for g, w in zip(st["layers"], layers):
        assert (g["layer"], g["firing_rate"], g["sops"]) == (w["layer"], w["firing_rate"], w["sops"])
    assert st["first_layer_macs"] == total["first_layer_macs"]
    assert st["sops"] == total["sops"]
    assert st["energy_mj"] == total["energy_mj"] > 0


@pytest.mark.parametrize("name", VISION)
def test_vision_examples_classify_and_stats_as_the_cli(name, cli, tmp_path):
    d = os.path.join(MODELS, name)
    m = spikescan.load(d)
    pngs = sorted(glob.glob(os.path.join(d, "examples", "*.png")))
    assert pngs
    for png in pngs:
        lines = json_lines(cli("--json", "run", "--model", d, "--input", png, "--stats").stdout)
        assert lines[0]["sample"] == 0
        assert_same_top(m.classify(png, top_k=5), lines[0]["top"])
        st = m.stats(png)
        assert_same_stats(st, lines[1:])
        out = tmp_path / "y.safetensors"
        cli("run", "--model", d, "--input", png, "--output", out)
        want = read_safetensors(out)["logits"]
        assert st["logits"].dtype == np.float32 and st["logits"].shape == want.shape
        assert np.array_equal(st["logits"], want)
        # The example's file name holds its label; the bundled model gets it right.
        label = os.path.basename(png).split("-label-")[1].split(".")[0]
        assert m.classify(png, top_k=1)[0]["label"] == label


@pytest.mark.parametrize("name", VISION)
def test_vision_batch_logits_equal_the_cli(name, cli, tmp_path):
    d = os.path.join(MODELS, name)
    m = spikescan.load(d)
    c, h, w = m.input_shape
    x = np.random.default_rng(7).standard_normal((3, c, h, w)).astype(np.float32)
    write_safetensors(tmp_path / "x.safetensors", {"input": x})
    cli("run", "--model", d, "--input", tmp_path / "x.safetensors", "--output", tmp_path / "y.safetensors")
    want = read_safetensors(tmp_path / "y.safetensors")["logits"]
    got = m(x)
    assert got.shape == (3, m.num_classes)
    assert np.array_equal(got, want)
    # A non-contiguous view of the same batch is copied once and gives the same logits.
    xt = np.ascontiguousarray(np.swapaxes(x, 2, 3)).swapaxes(2, 3)
    assert not xt.flags.c_contiguous
    assert np.array_equal(m(xt), want)
    # A uint8 RGB image is preprocessed as a PNG of it is.
    rgb = (np.arange(h * w * 3) % 251).astype(np.uint8).reshape(h, w, 3)
    import zlib, struct

    raw = b"".join(b"\x00" + rgb[r].tobytes() for r in range(h))
    chunk = lambda t, b: struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    (tmp_path / "rgb.png").write_bytes(png)
    lines = json_lines(cli("--json", "run", "--model", d, "--input", tmp_path / "rgb.png").stdout)
    assert_same_top(m.classify(rgb), lines[0]["top"])
    assert_same_top(m.classify(str(tmp_path / "rgb.png")), lines[0]["top"])


def heldout_clips(name, n):
    x = read_safetensors(os.path.join(MODELS, name, "heldout.safetensors"))["input"]
    return np.ascontiguousarray(x[:n], np.float32)


@pytest.mark.parametrize("name", AUDIO)
def test_lmuformer_logits_all_seq_and_stats_equal_the_cli(name, cli, tmp_path):
    d = os.path.join(MODELS, name)
    m = spikescan.load(d)
    x = heldout_clips(name, 4)
    xs = tmp_path / "x.safetensors"
    write_safetensors(xs, {"input": x})
    cli("run", "--model", d, "--input", xs, "--output", tmp_path / "y.safetensors")
    cli("run", "--model", d, "--input", xs, "--all-seq", "--output", tmp_path / "all.safetensors")
    want = read_safetensors(tmp_path / "y.safetensors")["logits"]
    want_all = read_safetensors(tmp_path / "all.safetensors")["logits"]
    assert np.array_equal(m(x), want)
    got_all = m(x, all_seq=True)
    assert got_all.shape == (4, x.shape[1], m.num_classes)
    assert np.array_equal(got_all, want_all)
    lines = json_lines(cli("--json", "run", "--model", d, "--input", xs, "--stats").stdout)
    tops = [l for l in lines if "clip" in l]
    assert len(tops) == 4
    got = m.classify(x)
    assert len(got) == 4
    for g, w in zip(got, tops):
        assert_same_top(g, w["top"])
    st = m.stats(x)
    assert np.array_equal(st["logits"], want)
    assert_same_stats(st, lines[4:], spiking=name.startswith("spiking"))


def write_wav(path, seconds=1.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    s = 0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-3 * t) + 0.05 * np.sin(2 * np.pi * 1900 * t)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((s * 32767).astype("<i2").tobytes())


@pytest.mark.parametrize("name", AUDIO)
def test_lmuformer_stream_and_wav_equal_the_cli(name, cli, tmp_path):
    d = os.path.join(MODELS, name)
    m = spikescan.load(d)
    wav = tmp_path / "clip.wav"
    write_wav(wav)
    lines = json_lines(cli("--json", "run", "--model", d, "--input", wav).stdout)
    assert_same_top(m.classify(str(wav)), lines[0]["top"])
    # Stream a held-out clip frame by frame, as `spikescan stream` does.
    x = heldout_clips(name, 1)
    xs = tmp_path / "x.safetensors"
    write_safetensors(xs, {"input": x})
    frames = json_lines(cli("--json", "stream", "--model", d, "--input", xs).stdout)
    final = frames.pop()
    s = m.stream()
    rows = []
    for t in range(x.shape[1]):
        out = s.push(x[0, t])
        assert (out is None) == (t < spikescan.LOOKAHEAD)
        if out is not None:
            rows.append(out[0])
    rows += [r[0] for r in s.finish()]
    assert len(rows) == len(frames) == x.shape[1] == final["frames"]
    labels = m.labels
    for row, w in zip(rows, frames):
        j = int(np.argmax(row))
        assert (j, labels[j], f32(row[j])) == (w["top1"], w["label"], f32(w["logit"]))
    assert int(np.argmax(rows[-1])) == final["final"]
    # Every streamed frame equals the whole clip's all_seq prediction of it (to rounding).
    whole = m(x, all_seq=True)[0]
    assert np.allclose(np.stack(rows), whole, rtol=1e-4, atol=1e-4)


def test_mamba_generation_logits_equal_the_cli(cli, tmp_path):
    d = os.path.join(MODELS, "mamba-pydoc")
    m = spikescan.load(d)
    prompt = "The with statement"
    want = json_lines(cli("--json", "generate", "--model", d, "--prompt", prompt,
                          "--max-new-tokens", 24).stdout)[0]
    g = m.generate(prompt, max_new_tokens=24)
    pieces = list(g)
    assert len(pieces) == 24 and all(isinstance(p, str) for p in pieces)
    assert g.tokens == want["tokens"]
    assert "".join(pieces) == want["generated_text"] == g.text
    # Sampling from token ids: the same seed, the same tokens.
    ids = read_safetensors(os.path.join(d, "heldout.safetensors"))["input_ids"]
    p = [int(t) for t in ids[0, :8]]
    want = json_lines(cli("--json", "generate", "--model", d, "--prompt-ids", ",".join(map(str, p)),
                          "--max-new-tokens", 16, "--temperature", 0.8, "--top-k", 40,
                          "--top-p", 0.95, "--seed", 3).stdout)[0]["tokens"]
    got = list(m.generate(np.array(p), 16, temperature=0.8, top_k=40, top_p=0.95, seed=3))
    assert all(isinstance(t, int) for t in got)
    assert p + got == want
    assert got != list(m.generate(p, 16, temperature=0.8, top_k=40, top_p=0.95, seed=4))
    # Prompt logits [B, L, vocab], bit for bit.
    x = np.ascontiguousarray(ids[:2, :16])
    write_safetensors(tmp_path / "ids.safetensors", {"input_ids": x})
    cli("run", "--model", d, "--input", tmp_path / "ids.safetensors", "--output", tmp_path / "y.safetensors")
    want = read_safetensors(tmp_path / "y.safetensors")["logits"]
    got = m(x)
    assert got.shape == want.shape == (2, 16, want.shape[2])
    assert np.array_equal(got, want)
    assert np.array_equal(m(x.astype(np.int32)), want)
