"""spikescan: spiking transformers (Spikformer, Meta-SpikeFormer), LMUFormer (plain and
spiking) and Mamba from official checkpoints, on any Vulkan, Metal or DX12 GPU through wgpu.

    import spikescan
    m = spikescan.load("models/spikformer-digits")
    m.classify("models/spikformer-digits/examples/0-label-7.png")

`load` takes a model directory (model.safetensors + config.json, as the `spikescan` command
line does) or an official `.pth` checkpoint with `preset=` (converted by tools/convert.py).
"""
import os
import subprocess
import sys
import tempfile

from . import errors
from .errors import (
    CheckpointError,
    ConfigError,
    DeviceError,
    DTypeError,
    Error,
    InputError,
    HubError,
    InternalError,
    ModelNotFoundError,
)
from ._spikescan import (
    ARCHITECTURES,
    LOOKAHEAD,
    Device,
    Generation,
    MambaState,
    Model,
    Stream,
    StreamSnapshot,
    __version__,
    adapters,
    _convert_source,
    _load,
)

__all__ = [
    "ARCHITECTURES", "LOOKAHEAD", "Device", "Generation", "MambaState", "Model", "Stream", "StreamSnapshot",
    "adapters", "load", "convert", "errors", "Error", "ModelNotFoundError", "ConfigError",
    "CheckpointError", "HubError", "InputError", "DTypeError", "DeviceError", "InternalError", "__version__",
]

_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pth.tar", ".bin")


def convert(checkpoint, out_dir, preset=None, config=None, set=None, dtype="keep",
            allow_unsafe_pickle=False):
    """Converts an official PyTorch checkpoint into a model directory `out_dir` with
    tools/convert.py (numpy only; a restricted unpickler refuses anything but plain state
    dicts unless `allow_unsafe_pickle`). `set` overrides config fields: {"T": 4}."""
    import json

    args = [os.fspath(checkpoint), os.fspath(out_dir), "--quiet", "--dtype", dtype]
    if preset is not None:
        args += ["--preset", preset]
    if config is not None:
        args += ["--config", os.fspath(config)]
    for k, v in (set or {}).items():
        args += ["--set", f"{k}={json.dumps(v)}"]
    if allow_unsafe_pickle:
        args.append("--allow-unsafe-pickle")
    r = subprocess.run([sys.executable, "-c", _convert_source(), *args],
                       capture_output=True, text=True)
    if r.returncode != 0:
        msg = r.stderr.strip().splitlines()
        msg = msg[-1] if msg else f"tools/convert.py exited with status {r.returncode}"
        if msg.startswith("convert: "):
            msg = msg[len("convert: "):]
        raise CheckpointError(msg)
    return os.fspath(out_dir)


def _check_dtype(dtype):
    """The weight dtype as the Rust loader names it: "auto", "f32" or "f16"."""
    if dtype is None or dtype == "auto":
        return "auto"
    if dtype in ("f32", "float32"):
        return "f32"
    if dtype in ("f16", "float16"):
        return "f16"
    try:
        import numpy as np

        if np.dtype(dtype) == np.float32:
            return "f32"
        if np.dtype(dtype) == np.float16:
            return "f16"
    except TypeError:
        pass
    raise InputError(f"dtype={dtype!r}: the weights run on the GPU as f32 or f16; give dtype=None "
                     "(f16 for an f16 or bf16 checkpoint where the adapter has shader-f16, "
                     "else f32), 'f32' or 'f16'")


def load(path, device=None, dtype=None, preset=None, config=None, set=None, out_dir=None,
         allow_unsafe_pickle=False):
    """Loads a model of any architecture: a model directory (model.safetensors or a sharded
    index + config.json, or a directory named after a preset); a Hugging Face Hub id
    `owner/name[@revision]` where no such directory exists (fetched into the Hub cache as
    `spikescan generate --model` does; HF_ENDPOINT, HF_TOKEN, HF_HOME / HF_HUB_CACHE and
    HF_HUB_OFFLINE are honoured); or an official checkpoint (.pth, .pt, .pth.tar,
    .bin) with `preset=` or `config=` (a config.json; `set=` overrides fields), converted into `out_dir` (a temporary
    directory when None). `device` is a `spikescan.Device` (the default adapter when None);
    `dtype` says how the matrices (GEMM and convolution weights) are kept on the GPU: None
    (f16 for an f16 or bf16 checkpoint where the adapter has shader-f16, else f32: outputs
    match PyTorch's), "f32" or "f16" (numpy dtypes too); products accumulate in f32 either
    way, and every other weight stays f32."""
    dtype = _check_dtype(dtype)
    p = os.fspath(path)
    if p.endswith(_CHECKPOINT_SUFFIXES) and not os.path.isdir(p):
        if not os.path.exists(p):
            raise ModelNotFoundError(f"checkpoint {p} does not exist")
        if preset is None and config is None:
            raise ConfigError(f"{p}: a PyTorch checkpoint needs preset= (e.g. "
                              "preset='spikformer-8-384') or config= to say its architecture")
        opts = dict(preset=preset, config=config, set=set,
                    allow_unsafe_pickle=allow_unsafe_pickle)
        if out_dir is not None:
            convert(p, out_dir, **opts)
            return _load(out_dir, device, dtype)
        with tempfile.TemporaryDirectory(prefix="spikescan-") as tmp:
            convert(p, tmp, **opts)
            return _load(tmp, device, dtype)
    if preset is not None or config is not None or set is not None:
        raise ConfigError(f"{p}: preset=, config= and set= apply to a .pth checkpoint; a "
                          "model directory has its config.json")
    return _load(p, device, dtype)
