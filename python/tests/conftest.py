"""Shared helpers for the Python tests: the repository's paths, numpy-only safetensors
reading and writing, and the `spikescan` CLI (built with cargo when it is not there yet) to
compare against."""
import json
import os
import struct
import subprocess

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(ROOT, "models")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "U8": np.uint8, "F64": np.float64}


def read_safetensors(path):
    """Every tensor of a safetensors file (bf16 widened to f32), by name."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        raw = data[base + a:base + b]
        if t["dtype"] == "BF16":
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, _DTYPES[t["dtype"]])
        out[name] = arr.reshape(t["shape"])
    return out


def write_safetensors(path, tensors):
    """Writes {name: array} (f32 or i64) as safetensors."""
    names = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64", np.dtype(np.int32): "I32"}
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        b = arr.tobytes()
        header[name] = {"dtype": names[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sqrt(((a - b) ** 2).sum() / (b ** 2).sum()))


@pytest.fixture(scope="session")
def cli_bin():
    """The `spikescan` binary: $SPIKESCAN_CLI, else the workspace's debug build (built here
    when missing; a no-op after `cargo test --workspace`)."""
    path = os.environ.get("SPIKESCAN_CLI")
    if path:
        return path
    r = subprocess.run(["cargo", "build", "-q", "-p", "spikescan-cli"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, f"building the CLI failed:\n{r.stderr}"
    return os.path.join(ROOT, "target", "debug", "spikescan")


@pytest.fixture(scope="session")
def cli(cli_bin):
    """Runs the CLI: cli(*args, ok=True) -> (stdout, stderr); JSON lines parsed with .json."""

    def run(*args, ok=True):
        r = subprocess.run([cli_bin, "--quiet", *map(str, args)], capture_output=True,
                           text=True, cwd=ROOT)
        if ok:
            assert r.returncode == 0, f"spikescan {' '.join(map(str, args))}:\n{r.stderr}"
        else:
            assert r.returncode == 2, f"expected an error:\n{r.stdout}\n{r.stderr}"
        return r

    return run


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def device():
    import spikescan

    return spikescan.Device()
