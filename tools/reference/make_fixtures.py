"""Writes the Spikformer test fixtures into tests/fixtures/ (committed; CI needs no Python).

    python3 tools/reference/make_fixtures.py

Each fixture directory holds config.json and model.safetensors (a model directory, keys as
the official state_dict) and io.safetensors: `input` [B, C, H, W] f32, `logits` [B, classes]
f32, `spikes.<layer>` (u8 0/1, [T, B, C, ...]) for every LIF layer and, for Meta-SpikeFormer,
`stream.<unit>`: the real-valued input of each downsampling layer and block (teacher forcing).

Weights are random, and every BatchNorm is calibrated on the fixture's input so that each
LIF layer fires at a rate strictly between 0 and 1. "exact" fixtures put weights, BN
constants and inputs on short binary grids with running_var + eps == 1, so every f32
operation is exact whatever the summation order: their f32 and f64 runs agree exactly and an
engine must reproduce the logits to rounding. "realistic" fixtures use PyTorch's default
initialisation: they are for per-layer spike agreement with teacher forcing.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from meta_spikeformer import MetaSpikeFormer  # noqa: E402
from spikformer import Spikformer, Taps  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
EPS = 1e-5
RUNNING_VAR_EXACT = 1.0 - EPS  # f32(1 - 1e-5) + f32(1e-5) == 1.0 exactly


def grid(x, step):
    return torch.round(x / step) * step


def init_weights(model, exact, gen, meta=False):
    bn_params = {n + "." + k for n, m in model.named_modules()
                 if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for k in ("weight", "bias")}
    for name, p in model.named_parameters():
        if "norm" in name or name in bn_params:
            continue
        if exact and meta:
            p.data = torch.randint(-4, 5, p.shape, generator=gen).float() / 4
        elif exact:
            if name.endswith("weight"):
                p.data = torch.randint(-16, 17, p.shape, generator=gen).float() / 32
            else:
                p.data = torch.randint(-8, 9, p.shape, generator=gen).float() / 16


RESIDUAL_BRANCH_ENDS = ("Conv.bn2", ".bn2", "proj_conv.1", "fc2_bn")


def calibrate(model, img, exact, gen, meta=False):
    """Sets each BatchNorm, in forward order, so its output has mean ~U(0.4, 1.2) and std ~1
    (Meta-SpikeFormer's residual branches: mean 0, std 0.5, so the stream stays in range)."""
    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    if not meta:
        bns = [(n, m) for n, m in bns if "_bn" in n]
    for name, bn in bns:
        branch = meta and name.endswith(RESIDUAL_BRANCH_ENDS) and "encode" not in name
        seen = {}
        h = bn.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach()))
        with torch.no_grad():
            model(img)
        h.remove()
        x = seen["x"].transpose(0, 1).reshape(bn.num_features, -1).double()
        mean, std = x.mean(1), x.std(1).clamp_min(1e-3)
        target = 0.4 + 0.8 * torch.rand(bn.num_features, generator=gen, dtype=torch.float64)
        spread = torch.ones_like(std)
        if branch:
            target, spread = target * 0.0, spread * 0.5
        elif meta and name.endswith(("q_conv.1", "k_conv.1", "v_conv.1")):
            target = target * 0.5 + 1.2  # q, k, v fire often enough for q (kᵀ v) / 8 to reach 0.5
        elif meta and "encode_bn" in name:
            target = target * 2.0 + 0.2  # the residual stream's level: the final lif must fire
        if exact and meta:
            # Powers of two and quarter grids: no product ever needs more mantissa bits.
            bn.running_mean.data = grid(mean, 1 / 4).float()
            bn.running_var.data = torch.full_like(bn.running_var, RUNNING_VAR_EXACT)
            bn.weight.data = torch.exp2(torch.round(torch.log2(spread / std))).float()
            bn.bias.data = grid(target, 1 / 4).float()
        elif exact:
            bn.running_mean.data = grid(mean, 1 / 16).float()
            bn.running_var.data = torch.full_like(bn.running_var, RUNNING_VAR_EXACT)
            bn.weight.data = grid(1.0 / std, 1 / 64).clamp_min(1 / 64).float()
            bn.bias.data = grid(target, 1 / 16).float()
        else:
            bn.running_mean.data = mean.float()
            bn.running_var.data = (std * std).float()
            bn.weight.data = (spread / std * (0.8 + 0.4 * torch.rand(bn.num_features, generator=gen, dtype=torch.float64))).float()
            bn.running_var.data = (std * std).float()
            bn.weight.data = (bn.weight.data * std.float())  # BN divides by std itself
            bn.bias.data = target.float()
        bn.num_batches_tracked.fill_(100)


def run(model, img, streams=None):
    taps = Taps()
    with torch.no_grad():
        logits = model(img, taps)
    if streams is not None:
        streams.update(taps.streams)
    return logits, taps.spikes


def make(name, cfg, batch, exact, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    meta = cfg["architecture"] == "meta_spikeformer"
    Model = MetaSpikeFormer if meta else Spikformer
    model_cfg = {k: v for k, v in cfg.items() if k != "architecture"}
    model = Model(**model_cfg).eval()
    init_weights(model, exact, gen, meta)
    shape = (batch, cfg["in_channels"], cfg["img_size_h"], cfg["img_size_w"])
    if exact:
        img = torch.randint(-8, 9, shape, generator=gen).float() / (4 if meta else 8)
    else:
        img = torch.randn(shape, generator=gen)
    calibrate(model, img, exact, gen, meta)
    streams = {}
    logits, spikes = run(model, img, streams)
    rates = {k: v.float().mean().item() for k, v in spikes.items()}
    bad = {k: r for k, r in rates.items() if not 0.0 < r < 1.0}
    if bad:
        raise SystemExit(f"{name}: LIF layers that never or always fire: {bad}")
    if exact:
        m64 = Model(**model_cfg).double().eval()
        m64.load_state_dict(model.state_dict())
        for m in m64.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                # In f64, f32(1 - 1e-5) + 1e-5 is not 1: pick the eps that makes it so.
                m.eps = 1.0 - m.running_var[0].item()
        l64, s64 = run(m64, img.double())
        rel = ((l64 - logits.double()).norm() / l64.norm()).item()
        assert rel < 1e-6, f"{name}: f32 and f64 logits differ ({rel})"
        assert all(torch.equal(s64[k].float(), spikes[k]) for k in spikes), f"{name}: f32 and f64 spikes differ"
    out = os.path.join(ROOT, name)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "model.safetensors"))
    io = {"input": img.contiguous(), "logits": logits.contiguous()}
    io.update({f"spikes.{k}": v.to(torch.uint8).contiguous() for k, v in spikes.items()})
    io.update({f"stream.{k}": v.float().contiguous() for k, v in streams.items()})
    save_file(io, os.path.join(out, "io.safetensors"))
    print(f"{name}: {len(spikes)} LIF layers, firing rates {min(rates.values()):.3f}..{max(rates.values()):.3f}")


def main():
    base = {"architecture": "spikformer", "T": 4, "patch_size": 16, "in_channels": 3, "num_classes": 10,
            "embed_dims": 32, "num_heads": 2, "mlp_ratios": 4, "depths": 2}
    imagenet = dict(base, variant="imagenet", img_size_h=64, img_size_w=64)
    cifar = dict(base, variant="cifar", img_size_h=32, img_size_w=32, patch_size=4)
    make("spikformer-imagenet-exact", imagenet, 2, True, 1)
    make("spikformer-cifar-exact", cifar, 2, True, 2)
    make("spikformer-imagenet-realistic", imagenet, 2, False, 3)
    meta = {"architecture": "meta_spikeformer", "img_size_h": 64, "img_size_w": 64, "patch_size": 16,
            "in_channels": 3, "num_classes": 10, "embed_dim": [16, 32, 32, 48], "num_heads": 2,
            "mlp_ratios": 4, "depths": 8}
    make("meta-spikeformer-exact-t1", dict(meta, T=1, kd=False), 2, True, 4)
    make("meta-spikeformer-exact-t4-kd", dict(meta, T=4, kd=True), 2, True, 5)
    make("meta-spikeformer-realistic-t4", dict(meta, T=4, kd=False), 2, False, 6)


if __name__ == "__main__":
    main()
