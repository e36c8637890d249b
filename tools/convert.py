#!/usr/bin/env python3
"""Converts an official PyTorch checkpoint (.pth, .pth.tar, .bin) into a spikescan model
directory: model.safetensors (the state dict, keys unchanged but for a `module.` prefix) and
config.json (from a preset, a config file, and --set overrides).

    python3 tools/convert.py CHECKPOINT OUT_DIR --preset meta-spikeformer-8-512 [--set T=4 --set kd=true]
    python3 tools/convert.py CHECKPOINT OUT_DIR --config my_config.json

Needs only Python and numpy: the checkpoint is read with a restricted unpickler that
accepts plain state dicts (tensors, dicts, lists, numbers, strings, and the argparse
Namespace the official training scripts save) and refuses anything else, because unpickling
arbitrary objects can run arbitrary code. --allow-unsafe-pickle hands the file to
torch.load(weights_only=False) instead (torch required; only for files you trust).

Weights are found under "model", "state_dict" or "module", or at the top level. f32, f16
and bf16 tensors are kept as they are (spikescan converts f16/bf16 to f32 at load);
--dtype f32 converts everything to f32 here. Tied (shared) tensors are written once per key.
Exit status: 0 on success, 2 on a bad checkpoint or arguments.
"""
import argparse
import io
import json
import os
import pickle
import struct
import sys
import zipfile

import numpy as np

PRESETS = {
    "spikformer-8-384": {"architecture": "spikformer", "variant": "imagenet", "T": 4, "img_size_h": 224, "img_size_w": 224,
                         "patch_size": 16, "in_channels": 3, "num_classes": 1000, "embed_dims": 384, "num_heads": 8,
                         "mlp_ratios": 4, "depths": 8},
    "spikformer-8-512": {"architecture": "spikformer", "variant": "imagenet", "T": 4, "img_size_h": 224, "img_size_w": 224,
                         "patch_size": 16, "in_channels": 3, "num_classes": 1000, "embed_dims": 512, "num_heads": 8,
                         "mlp_ratios": 4, "depths": 8},
    "spikformer-8-768": {"architecture": "spikformer", "variant": "imagenet", "T": 4, "img_size_h": 224, "img_size_w": 224,
                         "patch_size": 16, "in_channels": 3, "num_classes": 1000, "embed_dims": 768, "num_heads": 8,
                         "mlp_ratios": 4, "depths": 8},
    "spikformer-4-384-cifar10": {"architecture": "spikformer", "variant": "cifar", "T": 4, "img_size_h": 32, "img_size_w": 32,
                                 "patch_size": 4, "in_channels": 3, "num_classes": 10, "embed_dims": 384, "num_heads": 12,
                                 "mlp_ratios": 4, "depths": 4},
}
for _name, _e in [("meta-spikeformer-8-384", [96, 192, 384, 480]), ("meta-spikeformer-8-512", [128, 256, 512, 640]),
                  ("meta-spikeformer-8-768", [192, 384, 768, 960])]:
    PRESETS[_name] = {"architecture": "meta_spikeformer", "T": 1, "kd": False, "img_size_h": 224, "img_size_w": 224,
                      "patch_size": 16, "in_channels": 3, "num_classes": 1000, "embed_dim": _e, "num_heads": 8,
                      "mlp_ratios": 4, "depths": 8}

for _name, _arch in [("lmuformer-gsc", "lmuformer"), ("spiking-lmuformer-gsc", "spiking_lmuformer")]:
    PRESETS[_name] = {"architecture": _arch, "embed_dims": 256, "num_heads": 16, "mlp_ratios": 4, "in_channels": 128,
                      "num_classes": 35, "depths": 1, "seq_len": 128, "theta": 128}
for _name, (_d, _n) in [("mamba-130m", (768, 24)), ("mamba-370m", (1024, 48)), ("mamba-790m", (1536, 48)),
                        ("mamba-1.4b", (2048, 48))]:
    PRESETS[_name] = {"d_model": _d, "n_layer": _n, "vocab_size": 50277, "ssm_cfg": {}, "rms_norm": True,
                      "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8,
                      "tie_embeddings": True}

# torch storage class name -> numpy dtype ("bfloat16" is kept as raw uint16 bits).
STORAGES = {
    "FloatStorage": np.float32, "HalfStorage": np.float16, "BFloat16Storage": "bfloat16", "DoubleStorage": np.float64,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_, "ComplexFloatStorage": np.complex64,
}


class ConvertError(Exception):
    pass


class BF16:
    """A bfloat16 array held as its raw uint16 bits."""

    def __init__(self, bits):
        self.bits = bits


class Namespace:
    """Stands in for argparse.Namespace: keeps the attributes, runs nothing."""

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {})


def _rebuild_tensor_v2(storage, offset, size, stride, *_):
    bf16 = isinstance(storage, BF16)
    data = storage.bits if bf16 else storage
    if len(size) == 0:
        arr = data[offset:offset + 1].reshape(())
    else:
        item = data.itemsize
        arr = np.lib.stride_tricks.as_strided(data[offset:], shape=tuple(size), strides=tuple(s * item for s in stride))
    arr = np.ascontiguousarray(arr)
    return BF16(arr) if bf16 else arr


def _rebuild_parameter(data, *_):
    return data


class SafeUnpickler(pickle.Unpickler):
    ALLOWED = {
        ("collections", "OrderedDict"): __import__("collections").OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("argparse", "Namespace"): Namespace,
    }

    def __init__(self, f, archive, prefix):
        super().__init__(f)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        if module == "torch" and name in STORAGES:
            return name
        raise ConvertError(
            f"the checkpoint pickles {module}.{name}, which is not part of a plain state dict; "
            "refusing to unpickle it (it could run code). If you trust the file, pass --allow-unsafe-pickle")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise ConvertError(f"unexpected persistent id {pid!r}")
        _, kind, key, _location, _numel = pid
        kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
        if kind not in STORAGES:
            raise ConvertError(f"unsupported storage type {kind}")
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        dtype = STORAGES[kind]
        if dtype == "bfloat16":
            return BF16(np.frombuffer(raw, dtype=np.uint16))
        return np.frombuffer(raw, dtype=dtype)


def load_checkpoint(path, allow_unsafe):
    if allow_unsafe:
        import torch  # noqa: only for trusted files

        obj = torch.load(path, map_location="cpu", weights_only=False)
        return _from_torch(obj)
    if not zipfile.is_zipfile(path):
        raise ConvertError(f"{path} is not a zip-format torch checkpoint (torch.save since 1.6); re-save it with a "
                           "recent torch, or pass --allow-unsafe-pickle to read it with torch.load")
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ConvertError(f"{path}: expected one data.pkl in the archive, found {len(pkl)}")
        prefix = pkl[0][: -len("/data.pkl")]
        return SafeUnpickler(io.BytesIO(z.read(pkl[0])), z, prefix).load()


def _from_torch(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            return BF16(t.view(torch.int16).numpy().view(np.uint16))
        return t.numpy()
    if isinstance(obj, dict):
        return {k: _from_torch(v) for k, v in obj.items()}
    return obj


def is_array(v):
    return isinstance(v, (np.ndarray, BF16))


def find_state_dict(obj, path):
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "module"):
            if isinstance(obj.get(key), dict) and any(is_array(v) for v in obj[key].values()):
                return obj[key]
        if any(is_array(v) for v in obj.values()):
            return obj
    raise ConvertError(f"{path}: no state dict found (looked under 'model', 'state_dict', 'module' and the top level)")


def strip_prefix(sd, path):
    out = {}
    for k, v in sd.items():
        if not is_array(v):
            continue
        key = k
        while key.startswith("module."):
            key = key[len("module."):]
        if key in out:
            raise ConvertError(f"{path}: '{k}' and another key both become '{key}' without the 'module.' prefix")
        out[key] = v
    return out


SAFETENSORS_DTYPE = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64",
                     np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16",
                     np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL",
                     np.dtype(np.complex64): "C64"}


def progress(i, n, what, quiet):
    """A one-line progress bar on stderr when it is a terminal."""
    if quiet or not sys.stderr.isatty() or n == 0:
        return
    done = int(30 * i / n)
    end = "\n" if i == n else ""
    print(f"\r[{'#' * done}{'.' * (30 - done)}] {i}/{n} {what}", end=end, file=sys.stderr, flush=True)


def write_safetensors(path, tensors, force_f32, quiet=False):
    header, blobs, offset = {}, [], 0
    names = sorted(tensors)
    for i, name in enumerate(names):
        progress(i + 1, len(names), "tensors", quiet)
        v = tensors[name]
        if isinstance(v, BF16):
            arr, dt = (v.bits.astype(np.uint32) << 16).view(np.float32), "F32"
            if not force_f32:
                arr, dt = v.bits, "BF16"
        else:
            arr = v.astype(np.float32) if force_f32 and v.dtype.kind == "f" else v
            dt = SAFETENSORS_DTYPE.get(arr.dtype)
            if dt is None:
                raise ConvertError(f"tensor '{name}' has unsupported dtype {arr.dtype}")
        data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def parse_value(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out_dir")
    ap.add_argument("--preset", choices=sorted(PRESETS), help="config.json from a named preset")
    ap.add_argument("--config", help="config.json to copy (instead of, or on top of, a preset)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (JSON value)")
    ap.add_argument("--dtype", choices=["keep", "f32"], default="keep")
    ap.add_argument("--allow-unsafe-pickle", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="no progress or summary (errors still print)")
    args = ap.parse_args(argv)
    try:
        cfg = dict(PRESETS[args.preset]) if args.preset else {}
        if args.config:
            with open(args.config) as f:
                cfg.update(json.load(f))
        for kv in args.set:
            if "=" not in kv:
                raise ConvertError(f"--set {kv!r}: expected KEY=VALUE")
            k, v = kv.split("=", 1)
            cfg[k] = parse_value(v)
        if "architecture" not in cfg:
            raise ConvertError("no architecture: pass --preset NAME or --config FILE (presets: " + ", ".join(sorted(PRESETS)) + ")")
        if not os.path.exists(args.checkpoint):
            raise ConvertError(f"{args.checkpoint} does not exist")
        sd = strip_prefix(find_state_dict(load_checkpoint(args.checkpoint, args.allow_unsafe_pickle), args.checkpoint),
                          args.checkpoint)
        os.makedirs(args.out_dir, exist_ok=True)
        write_safetensors(os.path.join(args.out_dir, "model.safetensors"), sd, args.dtype == "f32", args.quiet)
        with open(os.path.join(args.out_dir, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        if not args.quiet:
            print(f"wrote {len(sd)} tensors and config.json ({cfg['architecture']}) to {args.out_dir}")
        return 0
    except (ConvertError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, OSError) as e:
        print(f"convert: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
