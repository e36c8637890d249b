"""Writes the Spikformer and Meta-SpikeFormer test fixtures into tests/fixtures/ by running the
official model code itself (committed fixtures; CI needs no Python):

    git clone <ZK-Zhou/spikformer> /tmp/spikformer
    git clone <BICLab/Spike-Driven-Transformer-V2> /tmp/sdt-v2
    git -C /tmp/sdt-v2 worktree add /tmp/sdt-v2-03cc73e 03cc73e   # the readout before d95ad13
    python3 tools/reference/make_fixtures.py --spikformer /tmp/spikformer --meta /tmp/sdt-v2 \\
        --meta-03cc73e /tmp/sdt-v2-03cc73e

The checkouts are never committed. `imagenet/model.py` / `cifar10/model.py` (Spikformer) and
`classification/models.py` (`Spiking_vit_MetaFormer`) are imported unchanged; spikingjelly's
LIF runs on its torch backend (see official.py). io.safetensors records the repository, file
and commit in its metadata.

Each fixture directory holds config.json and model.safetensors (the official state_dict) and
io.safetensors: `input` [B, C, H, W] f32, `logits` [B, classes] f32, `spikes.<layer>` (u8 0/1,
the official LIF node's output, named by its module) for every LIF layer, and per unit (each
downsampling layer and block) `stream.<unit>` (its real-valued input) and, for
Meta-SpikeFormer, `out.<unit>` (its output); `stream.readout` is the final stream the
classifier reads. cifar10/model.py's blocks keep tokens before channels ([T, B, N, C]); those
tensors are stored transposed, [T, B, C, N], as the imagenet model and the engine hold them.

Weights are random, and every BatchNorm is calibrated on the fixture's input so that each
LIF layer fires at a rate strictly between 0 and 1. "exact" fixtures put weights, BN
constants and inputs on short binary grids with running_var + eps == 1, so every f32
operation is exact whatever the summation order: their f32 and f64 runs agree exactly and an
engine must reproduce the logits to rounding and every spike. "realistic" fixtures use the
official initialisation: they are for per-layer agreement with teacher forcing.
"""
import argparse
import json
import os
import sys
from functools import partial

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
import official  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
EPS = 1e-5
RUNNING_VAR_EXACT = 1.0 - EPS  # f32(1 - 1e-5) + f32(1e-5) == 1.0 exactly
SPIKFORMER = "ZK-Zhou/spikformer"
META = "BICLab/Spike-Driven-Transformer-V2"
META_FILE = "classification/models.py"
META_UNITS = (["downsample1_1", "ConvBlock1_1.0", "downsample1_2", "ConvBlock1_2.0", "downsample2",
               "ConvBlock2_1.0", "ConvBlock2_2.0", "downsample3"] + [f"block3.{i}" for i in range(6)]
              + ["downsample4"] + [f"block4.{i}" for i in range(2)])


def grid(x, step):
    return torch.round(x / step) * step


def forward(model, x):
    """One official forward from fresh neuron states (spikingjelly's nodes keep their
    membranes between calls until reset, as the official evaluation loops do)."""
    from spikingjelly.clock_driven import functional

    functional.reset_net(model)
    with torch.no_grad():
        return model(x)


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
        x = official.input_of(model, bn, lambda: forward(model, img))
        x = x.transpose(0, 1).reshape(bn.num_features, -1).double()
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
            bn.weight.data = (spread * (0.8 + 0.4 * torch.rand(bn.num_features, generator=gen,
                                                                dtype=torch.float64))).float()
            bn.bias.data = target.float()
        bn.num_batches_tracked.fill_(100)


class Builder:
    """Constructs an official model from a fixture's config.json."""

    def __init__(self, module, cfg):
        self.module, self.cfg = module, cfg

    def __call__(self):
        c, m = self.cfg, self.module
        common = dict(img_size_h=c["img_size_h"], img_size_w=c["img_size_w"], patch_size=c["patch_size"],
                      in_channels=c["in_channels"], num_classes=c["num_classes"], num_heads=c["num_heads"],
                      mlp_ratios=c["mlp_ratios"], depths=c["depths"], sr_ratios=1, qkv_bias=False)
        if c["architecture"] == "meta_spikeformer":
            model = m.Spiking_vit_MetaFormer(embed_dim=c["embed_dim"], kd=c["kd"], **common)
            model.T = c["T"]  # as main_finetune.py: the constructor fixes T = 1
        elif c["variant"] == "cifar":
            model = m.Spikformer(embed_dims=c["embed_dims"], T=c["T"], **common)
        else:
            if c["T"] != 4:
                raise SystemExit("imagenet/model.py runs T = 4 only (fixed in its forward)")
            model = m.Spikformer(embed_dims=c["embed_dims"], norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                 **common)
        return model.eval()


def make(name, cfg, module, meta_source, lif_type, batch, exact, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    meta = cfg["architecture"] == "meta_spikeformer"
    build = Builder(module, cfg)
    model = build()
    init_weights(model, exact, gen, meta)
    shape = (batch, cfg["in_channels"], cfg["img_size_h"], cfg["img_size_w"])
    if exact:
        img = torch.randint(-8, 9, shape, generator=gen).float() / (4 if meta else 8)
    else:
        img = torch.randn(shape, generator=gen)
    calibrate(model, img, exact, gen, meta)
    units = META_UNITS if meta else [f"block.{i}" for i in range(cfg["depths"])]
    rec = official.Recorder(model, lif_type, units)
    logits = forward(model, img)
    rec.remove()
    rates = official.check_rates(name, rec.spikes)
    if exact:
        m64 = build().double()
        m64.load_state_dict(model.state_dict())
        for m in m64.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                # In f64, f32(1 - 1e-5) + 1e-5 is not 1: pick the eps that makes it so.
                m.eps = 1.0 - m.running_var[0].item()
        r64 = official.Recorder(m64, lif_type)
        l64 = forward(m64, img.double())
        rel = ((l64 - logits.double()).norm() / l64.norm()).item()
        assert rel < 1e-6, f"{name}: f32 and f64 logits differ ({rel})"
        assert all(torch.equal(r64.spikes[k].float(), rec.spikes[k]) for k in rec.spikes), \
            f"{name}: f32 and f64 spikes differ"
    out = os.path.join(ROOT, name)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "model.safetensors"))
    # cifar10/model.py keeps its blocks' tensors token-major, [T, B, N, C]; they are stored as
    # the imagenet model and the engine hold them, [T, B, C, N].
    tokens_last = (lambda k, v: v.transpose(-1, -2) if k.startswith("block") else v) \
        if cfg.get("variant") == "cifar" else (lambda k, v: v)
    io = {"input": img.contiguous(), "logits": logits.contiguous()}
    io.update({f"spikes.{k}": tokens_last(k, v).to(torch.uint8).contiguous() for k, v in rec.spikes.items()})
    for unit in units:
        if unit != "downsample1_1":  # its input is the image repeated T times
            io[f"stream.{unit}"] = tokens_last(unit, rec.inputs[unit]).float().contiguous()
        if meta:
            io[f"out.{unit}"] = rec.outputs[unit].float().contiguous()
    io["stream.readout"] = tokens_last(units[-1], rec.outputs[units[-1]]).float().clone(
        memory_format=torch.contiguous_format)
    save_file(io, os.path.join(out, "io.safetensors"), metadata=meta_source)
    print(f"{name}: {len(rec.spikes)} LIF layers, firing rates {min(rates.values()):.3f}..{max(rates.values()):.3f}, "
          f"logits norm {logits.norm():.3f} ({meta_source['source_repo']} {meta_source['source_commit'][:7]})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spikformer", required=True, help="git checkout of ZK-Zhou/spikformer")
    ap.add_argument("--meta", required=True, help="git checkout of BICLab/Spike-Driven-Transformer-V2 (its head)")
    ap.add_argument("--meta-03cc73e", required=True,
                    help="a checkout of the same repository at commit 03cc73e (the readout before d95ad13)")
    a = ap.parse_args()
    lif = official.force_torch_lif_backend()

    spik = {"architecture": "spikformer", "T": 4, "patch_size": 16, "in_channels": 3, "num_classes": 10,
            "embed_dims": 32, "num_heads": 2, "mlp_ratios": 4, "depths": 2}
    imagenet = dict(spik, variant="imagenet", img_size_h=64, img_size_w=64)
    cifar = dict(spik, variant="cifar", img_size_h=32, img_size_w=32, patch_size=4)
    for variant, cfgs in (("imagenet", [("spikformer-imagenet-exact", imagenet, True, 1),
                                        ("spikformer-imagenet-realistic", imagenet, False, 3)]),
                          ("cifar10", [("spikformer-cifar-exact", dict(cifar, T=1, embed_dims=48, num_heads=4), True, 2),
                                       ("spikformer-cifar-exact-t4", dict(cifar, embed_dims=60, num_heads=5), True, 7)])):
        rel = f"{variant}/model.py"
        module = official.import_official(a.spikformer, rel)
        src = official.source(SPIKFORMER, a.spikformer, rel)
        for name, cfg, exact, seed in cfgs:
            make(name, cfg, module, src, lif, 2, exact, seed)

    meta = {"architecture": "meta_spikeformer", "img_size_h": 64, "img_size_w": 64, "patch_size": 16,
            "in_channels": 3, "num_classes": 10, "mlp_ratios": 4, "depths": 8}
    narrow = dict(meta, embed_dim=[16, 32, 64, 80], num_heads=8)  # head dims 8 and 10
    wide = dict(meta, embed_dim=[24, 40, 56, 72], num_heads=4)  # head dims 14 and 18
    module = official.import_official(a.meta, META_FILE)
    src = official.source(META, a.meta, META_FILE)
    for name, cfg, exact, seed in (
            ("meta-spikeformer-exact-t1", dict(narrow, T=1, kd=False), True, 4),
            ("meta-spikeformer-exact-t4-kd", dict(narrow, T=4, kd=True), True, 5),
            ("meta-spikeformer-wide-exact-t1-kd", dict(wide, T=1, kd=True), True, 8),
            ("meta-spikeformer-wide-exact-t4", dict(wide, T=4, kd=False), True, 9),
            ("meta-spikeformer-realistic-t4", dict(narrow, T=4, kd=False), False, 6)):
        make(name, cfg, module, src, lif, 2, exact, seed)

    # The readout as it was before d95ad13: head reads the token mean, head_kd the spikes.
    old = official.source(META, a.meta_03cc73e, META_FILE)
    if not old["source_commit"].startswith("03cc73e"):
        raise SystemExit(f"--meta-03cc73e is at {old['source_commit'][:7]}, not 03cc73e")
    module = official.import_official(a.meta_03cc73e, META_FILE)
    make("meta-spikeformer-03cc73e-exact-t4-kd", dict(narrow, T=4, kd=True, head_input="membrane"), module, old, lif,
         2, True, 10)


if __name__ == "__main__":
    main()
