"""Writes official-layout .pth checkpoints of two fixtures, for the conversion tests:

- meta-spikeformer-exact-t1.pth: {"model": state dict with DataParallel's "module." prefix,
  "args": an argparse.Namespace, "epoch": 5}, as the official training scripts save;
- spikformer-cifar-exact-f16.pth: {"state_dict": ...} (timm's layout) with the conv and
  linear weights in float16 (exactly representable: the fixture's weights are k/32);
- spiking-lmuformer-small.pth: LMUFormer's layout, the "module."-prefixed state dict at the
  top level with its complex64 fft_H buffer.

    python3 tools/reference/make_pth.py
"""
import argparse
import collections
import os

import torch
from safetensors.torch import load_file

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")


def main():
    sd = load_file(os.path.join(ROOT, "meta-spikeformer-exact-t1", "model.safetensors"))
    model = collections.OrderedDict((f"module.{k}", v) for k, v in sorted(sd.items()))
    args = argparse.Namespace(model="metaspikformer_8_384", T=1, batch_size=24, lr=5e-4)
    torch.save({"model": model, "args": args, "epoch": 5}, os.path.join(ROOT, "meta-spikeformer-exact-t1.pth"))

    sd = load_file(os.path.join(ROOT, "spikformer-cifar-exact", "model.safetensors"))
    half = collections.OrderedDict()
    for k, v in sorted(sd.items()):
        weight = k.endswith(".weight") and v.dim() >= 2
        half[k] = v.half() if weight else v
        if weight:
            assert torch.equal(half[k].float(), v), k
    torch.save({"state_dict": half}, os.path.join(ROOT, "spikformer-cifar-exact-f16.pth"))

    # LMUFormer's training script saves the DataParallel model's state_dict at the top level,
    # buffers included (A, B, H and the complex64 fft_H).
    sd = load_file(os.path.join(ROOT, "spiking-lmuformer-small", "model.safetensors"))
    model = collections.OrderedDict((f"module.{k}", v) for k, v in sorted(sd.items()))
    assert any(v.dtype == torch.complex64 for v in model.values())
    torch.save(model, os.path.join(ROOT, "spiking-lmuformer-small.pth"))


if __name__ == "__main__":
    main()
