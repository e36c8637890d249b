"""Writes the LMUFormer test fixtures into tests/fixtures/ by running the official model code
itself (committed fixtures; CI needs no Python):

    git clone <zeyuliu1037/LMUFormer> /tmp/lmuformer
    python3 tools/reference/make_lmu_fixtures.py --lmuformer /tmp/lmuformer

The checkout is never committed. `src/lmu_rnn.py` (with its `blocks/` and `utilities/`) is
imported unchanged; `lmu_rnn_conv1d` and `slmu_rnn_ms_conv1d` are built from it, spikingjelly's
LIF on its torch backend (see official.py). io.safetensors records the repository, file and
commit in its metadata.

`lmuformer-small`, `lmuformer-small-d2` (lmu_rnn_conv1d) and `spiking-lmuformer-small`,
`spiking-lmuformer-small-d2` (slmu_rnn_ms_conv1d), two widths and depths each: a model
directory (config.json, model.safetensors with the official keys, fft_H included as
complex64) and io.safetensors: `input` [B, N, C] f32, `logits` [B, classes], `logits_all`
[B, N, classes] (the official test_mode 'all_seq'), `spikes.<layer>` (u8, [N, B, C]) for every
LIF layer (the official node's output, named by its module), `stream.<unit>` (the real-valued input of
each unit, [N, B, C]; `stream.head` is the last block's output, what the readout reads) and `memory.<cell>.u` [N, B] / `memory.<cell>.m` [N, B, M] (the
LMU input and the official FFT-computed memory). Weights use the official initialisation;
every BatchNorm is calibrated on the fixture's input so each LIF layer fires at a rate
strictly between 0 and 1. The official cell fixes seq_len = theta = 128, so clips are 128
frames. Widths are chosen so that N, B and every channel count differ: the official code
permutes its tensors in several orders, and each is brought to [N, B, C] by its sizes.

`audio`: a synthetic 16 kHz mono WAV and its Kaldi fbank from torchaudio
(`torchaudio.compliance.kaldi.fbank`, the LMUFormer data loader's settings), raw and as the
normalised, padded model input.
"""
import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import sys
import types
import wave

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
import official  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
MEAN, STD = -6.845978, 5.5654526  # the official gsc.yml dataset_mean / dataset_std
REPO, FILE = "zeyuliu1037/LMUFormer", "src/lmu_rnn.py"
N, B = 128, 2


def nbc(t):
    """An official tensor of one token-major layer ([B, C, N], [N, C, B], [B, N, C], ...) as
    [N, B, C], found by its sizes (N and B occur once each)."""
    dims = list(t.shape)
    assert len(dims) == 3 and dims.count(N) == 1 and dims.count(B) == 1, f"ambiguous layout {dims}"
    c = [i for i in range(3) if dims[i] not in (N, B)]
    c = c[0] if c else [i for i in range(3) if i not in (dims.index(N), dims.index(B))][0]
    return t.permute(dims.index(N), dims.index(B), c).contiguous()


def forward(model, x):
    from spikingjelly.clock_driven import functional

    functional.reset_net(model)
    with torch.no_grad():
        return model(x)


def calibrate(model, x, gen):
    """Sets each BatchNorm, in forward order, so its output has a per-channel mean in
    U(0.4, 1.2) and unit spread (residual-branch ends: mean 0, spread 0.5)."""
    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm1d)]
    for name, bn in bns:
        v = official.input_of(model, bn, lambda: forward(model, x))
        v = v.transpose(0, 1).reshape(bn.num_features, -1).double()
        mean, std = v.mean(1), v.std(1).clamp_min(1e-3)
        target = 0.4 + 0.8 * torch.rand(bn.num_features, generator=gen, dtype=torch.float64)
        spread = torch.ones_like(std)
        if name.endswith("attn.proj_bn"):  # feeds the residual stream, not a neuron
            target, spread = target * 0.0, spread * 0.5
        bn.running_mean.data = mean.float()
        bn.running_var.data = (std ** 2).float()
        bn.weight.data = spread.float()
        bn.bias.data = target.float()


def write_model(name, module, src, lif, spiking, config, x, gen):
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    build = module.slmu_rnn_ms_conv1d if spiking else module.lmu_rnn_conv1d
    kw = dict(img_size_h=N, img_size_w=config["in_channels"], in_channels=config["in_channels"],
              embed_dims=config["embed_dims"], num_heads=config["num_heads"], mlp_ratios=config["mlp_ratios"],
              depths=config["depths"], num_classes=config["num_classes"])
    model = build(**kw).eval()
    if spiking:
        calibrate(model, x, gen)
    else:  # random running statistics so every BatchNorm does something
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                c = m.num_features
                m.running_mean.data = torch.rand(c, generator=gen) - 0.5
                m.running_var.data = 0.5 + torch.rand(c, generator=gen)
                m.weight.data = 0.5 + torch.rand(c, generator=gen)
                m.bias.data = torch.rand(c, generator=gen) - 0.5
        # u = ReLU(W_u x): centre W_u's output on its median so the memory sees a live input.
        for blk in model.block:
            seen = {}
            h = blk.attn.lmu.W_u.register_forward_hook(lambda m, a, o: seen.__setitem__("u", o.detach()))
            forward(model, x)
            h.remove()
            blk.attn.lmu.W_u.bias.data -= seen["u"].median()
    depth = config["depths"]
    units = ["patch_embed"] + [f"block.{i}.{p}" for i in range(depth) for p in ("attn", "mlp")]
    rec = official.Recorder(model, lif, units + [f"block.{depth - 1}"])
    memory = {}
    for i, blk in enumerate(model.block):
        cell, key = blk.attn.lmu, f"block.{i}.attn.lmu"
        rec.handles.append(cell.f_u.register_forward_hook(
            lambda m, a, o, key=key: memory.__setitem__(key + ".u", nbc(o.detach())[:, :, 0].contiguous())))
        if spiking:  # the memory is what bn_m normalises
            rec.handles.append(cell.bn_m.register_forward_pre_hook(
                lambda m, a, key=key: memory.__setitem__(key + ".m", nbc(a[0].detach()))))
        else:  # W_h reads [m; x]
            mm = cell.memory_size
            rec.handles.append(cell.W_h.register_forward_pre_hook(
                lambda m, a, key=key, mm=mm: memory.__setitem__(key + ".m", nbc(a[0][..., :mm].detach()))))
    logits = forward(model, x)
    rec.remove()
    model.test_mode = "all_seq"
    logits_all = forward(model, x).transpose(0, 1).contiguous()
    model.test_mode = "normal"
    for k, v in memory.items():
        if k.endswith(".u"):
            live = (v > 0).float().mean().item()
            print(f"  {name}: {k} positive on {live:.3f} of tokens")
            assert 0.2 < live < 0.9, f"{k}: the memory input is dead or saturated"
    rates = official.check_rates(name, rec.spikes)
    for k, r in rates.items():
        print(f"  {name}: {k:<32} firing rate {r:.3f}")
    # The running mean's last token is the clip's mean: both outputs agree there.
    assert torch.allclose(logits_all[:, -1], logits, atol=1e-5)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(d, "model.safetensors"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    io = {"input": x.contiguous(), "logits": logits.contiguous(), "logits_all": logits_all}
    for k, v in rec.spikes.items():
        io["spikes." + k] = nbc(v).to(torch.uint8)
    for u in units[1:]:
        io["stream." + u] = nbc(rec.inputs[u].float())
    io["stream.head"] = nbc(rec.outputs[f"block.{depth - 1}"].float())
    for k, v in memory.items():
        io["memory." + k] = v.float().contiguous()
    save_file(io, os.path.join(d, "io.safetensors"), metadata=src)
    print(f"wrote {d}: logits {tuple(logits.shape)}, {len(rec.spikes)} LIF layers "
          f"({src['source_repo']} {src['source_commit'][:7]})")


def kaldi_module():
    """torchaudio.compliance.kaldi. Its package refuses to import when its CUDA build differs
    from torch's (see shared/FACTS.md); the fbank code itself is plain torch, so it is loaded
    straight from the installed file in that case."""
    try:
        import torchaudio.compliance.kaldi as kaldi
        return kaldi
    except (ImportError, RuntimeError, OSError):
        spec = importlib.util.find_spec("torchaudio")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("torchaudio is needed for the fbank fixture: pip install --no-deps torchaudio")
        path = os.path.join(list(spec.submodule_search_locations)[0], "compliance", "kaldi.py")
        sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
        mspec = importlib.util.spec_from_file_location("kaldi_fbank", path)
        mod = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(mod)
        return mod


def synthetic_wav(seconds=1.0, sr=16000, seed=5):
    """A chirp, two tones with an envelope and a little noise, as 16-bit PCM."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    chirp = np.sin(2 * math.pi * (200 * t + 1800 * t * t))
    tones = 0.5 * np.sin(2 * math.pi * 440 * t) * np.exp(-3 * t) + 0.3 * np.sin(2 * math.pi * 3100 * t) * (t > 0.5)
    y = 0.4 * chirp + tones + 0.02 * rng.standard_normal(t.shape) + 0.05  # a DC offset too
    return np.clip(np.round(y / np.abs(y).max() * 0.8 * 32767), -32768, 32767).astype(np.int16)


def write_audio():
    d = os.path.join(ROOT, "audio")
    os.makedirs(d, exist_ok=True)
    pcm = synthetic_wav()
    path = os.path.join(d, "chirp.wav")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    kaldi = kaldi_module()
    wav = torch.from_numpy(pcm.astype(np.float32) / 32768.0).unsqueeze(0)
    wav = wav - wav.mean()  # as the LMUFormer data loader
    fb = kaldi.fbank(wav, htk_compat=True, sample_frequency=16000, use_energy=False,
                     window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    x = torch.nn.functional.pad(fb, (0, 0, 0, 128 - fb.shape[0])) if fb.shape[0] < 128 else fb[:128]
    x = (x - MEAN) / (STD * 2)
    version = getattr(kaldi, "__version__", None) or importlib.metadata.version("torchaudio")
    save_file({"fbank": fb.contiguous(), "input": x.unsqueeze(0).contiguous()},
              os.path.join(d, "chirp.fbank.safetensors"),
              metadata={"source_repo": "pytorch/audio", "source_file": "src/torchaudio/compliance/kaldi.py",
                        "source_commit": f"torchaudio {version} (PyPI)"})
    print(f"wrote {path}: fbank {tuple(fb.shape)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lmuformer", required=True, help="git checkout of zeyuliu1037/LMUFormer")
    a = ap.parse_args()
    lif = official.force_torch_lif_backend()
    module = official.import_official(a.lmuformer, FILE, search_path="src")
    src = official.source(REPO, a.lmuformer, FILE)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    mel, classes = 24, 10
    x = (0.5 * torch.randn(B, N, mel, generator=gen) + 0.3).float()
    for name, spiking, dims, heads, depth in (("lmuformer-small", False, 40, 4, 1),
                                              ("lmuformer-small-d2", False, 36, 3, 2),
                                              ("spiking-lmuformer-small", True, 48, 4, 1),
                                              ("spiking-lmuformer-small-d2", True, 44, 4, 2)):
        config = {"architecture": "spiking_lmuformer" if spiking else "lmuformer", "embed_dims": dims,
                  "num_heads": heads, "mlp_ratios": 4, "in_channels": mel, "num_classes": classes,
                  "depths": depth, "seq_len": N, "theta": 128}
        write_model(name, module, src, lif, spiking, config, x, gen)
    write_audio()


if __name__ == "__main__":
    main()
