"""Writes the LMUFormer test fixtures into tests/fixtures/ (committed; CI needs no Python).

    python3 tools/reference/make_lmu_fixtures.py

`lmuformer-small` (lmu_rnn_conv1d) and `spiking-lmuformer-small` (slmu_rnn_ms_conv1d): a model
directory (config.json, model.safetensors with the official keys, fft_H included as complex64)
and io.safetensors: `input` [B, N, C] f32, `logits` [B, classes], `logits_all` [B, N, classes]
(the official test_mode 'all_seq'), `spikes.<layer>` (u8, [N, B, C]) for every LIF layer,
`stream.<unit>` (the real-valued input of each unit, [N, B, C], for teacher forcing) and
`memory.<cell>.u` [N, B] / `memory.<cell>.m` [N, B, M] (the LMU input and the FFT-computed
memory). Weights use PyTorch's default initialisation; every BatchNorm is calibrated on the
fixture's input so each LIF layer fires at a rate strictly between 0 and 1.

`audio`: a synthetic 16 kHz mono WAV and its Kaldi fbank from torchaudio
(`torchaudio.compliance.kaldi.fbank`, the LMUFormer data loader's settings), raw and as the
normalised, padded model input.
"""
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
from lmuformer import LMUFormer, Taps  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
MEAN, STD = -6.845978, 5.5654526  # the official gsc.yml dataset_mean / dataset_std


def calibrate(model, x, gen):
    """Sets each BatchNorm, in forward order, so its output has a per-channel mean in
    U(0.4, 1.2) and unit spread (residual-branch ends: mean 0, spread 0.5)."""
    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm1d)]
    for name, bn in bns:
        seen = {}
        h = bn.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach()))
        with torch.no_grad():
            model(x)
        h.remove()
        v = seen["x"].transpose(0, 1).reshape(bn.num_features, -1).double()
        mean, std = v.mean(1), v.std(1).clamp_min(1e-3)
        target = 0.4 + 0.8 * torch.rand(bn.num_features, generator=gen, dtype=torch.float64)
        spread = torch.ones_like(std)
        if name.endswith("attn.proj_bn"):  # feeds the residual stream, not a neuron
            target, spread = target * 0.0, spread * 0.5
        bn.running_mean.data = mean.float()
        bn.running_var.data = (std ** 2).float()
        bn.weight.data = spread.float()
        bn.bias.data = target.float()


def write_model(name, model, config, x, gen):
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    model.eval()
    if model.spiking:
        calibrate(model, x, gen)
    else:  # random running statistics so every BatchNorm does something
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                c = m.num_features
                m.running_mean.data = torch.rand(c, generator=gen) - 0.5
                m.running_var.data = 0.5 + torch.rand(c, generator=gen)
                m.weight.data = 0.5 + torch.rand(c, generator=gen)
                m.bias.data = torch.rand(c, generator=gen) - 0.5
    if not model.spiking:
        # u = ReLU(W_u x): centre W_u's output on its median so the memory sees a live input.
        for blk in model.block:
            seen = {}
            h = blk.attn.lmu.W_u.register_forward_hook(lambda m, a, o: seen.__setitem__("u", o.detach()))
            with torch.no_grad():
                model(x)
            h.remove()
            blk.attn.lmu.W_u.bias.data -= seen["u"].median()
    taps = Taps()
    with torch.no_grad():
        logits = model(x, taps)
        logits_all = model(x, all_seq=True).transpose(0, 1).contiguous()
    for k, v in taps.extra.items():
        if k.endswith(".u"):
            live = (v > 0).float().mean().item()
            print(f"  {name}: {k} positive on {live:.3f} of tokens")
            assert 0.2 < live < 0.9, f"{k}: the memory input is dead or saturated"
    rates = {k: v.float().mean().item() for k, v in taps.spikes.items()}
    for k, r in rates.items():
        print(f"  {name}: {k:<32} firing rate {r:.3f}")
        assert 0.0 < r < 1.0, f"{k} fires at {r}"
    # The running mean's last token is the clip's mean: both outputs agree there.
    assert torch.allclose(logits_all[:, -1], logits, atol=1e-5)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(d, "model.safetensors"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    io = {"input": x.contiguous(), "logits": logits.contiguous(), "logits_all": logits_all}
    for k, v in taps.spikes.items():
        io["spikes." + k] = v.to(torch.uint8).contiguous()
    for k, v in taps.streams.items():
        io["stream." + k] = v.contiguous()
    for k, v in taps.extra.items():
        io["memory." + k] = v.contiguous()
    save_file(io, os.path.join(d, "io.safetensors"))
    print(f"wrote {d}: logits {tuple(logits.shape)}, {len(taps.spikes)} LIF layers")


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
    save_file({"fbank": fb.contiguous(), "input": x.unsqueeze(0).contiguous()},
              os.path.join(d, "chirp.fbank.safetensors"))
    print(f"wrote {path}: fbank {tuple(fb.shape)}")


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    dims, mel, classes, n, b = 64, 32, 10, 128, 2
    x = (0.5 * torch.randn(b, n, mel, generator=gen) + 0.3).float()
    for name, spiking in (("lmuformer-small", False), ("spiking-lmuformer-small", True)):
        model = LMUFormer(in_channels=mel, embed_dims=dims, mlp_ratios=4, depths=1, num_classes=classes,
                          spiking=spiking)
        config = {"architecture": "spiking_lmuformer" if spiking else "lmuformer", "embed_dims": dims,
                  "num_heads": 4, "mlp_ratios": 4, "in_channels": mel, "num_classes": classes,
                  "depths": 1, "seq_len": n, "theta": 128}
        write_model(name, model, config, x, gen)
    write_audio()


if __name__ == "__main__":
    main()
