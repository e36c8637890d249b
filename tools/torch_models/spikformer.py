"""Spikformer (ZK-Zhou/spikformer) re-implemented, under the official key names.

Not a reference: test fixtures come from the official code itself (tools/reference/).
This re-implementation is kept for training the bundled models (tools/train_bundled.py) and
for the PyTorch side of the benchmarks (tools/bench_torch.py).

ImageNet variant (imagenet/model.py): 1x1 Conv1d q/k/v (no bias), Conv1d proj (bias),
Conv2d 1x1 MLP (bias), SPS max-pooling after every stage. CIFAR variant (cifar10/model.py):
Linear layers with bias and BN1d over channels, SPS pooling only after the last two stages.
Neurons are SpikingJelly's MultiStepLIFNode(tau=2, detach_reset=True) on the torch backend.
Activations stay [T, B, C, H, W] (or [T, B, C, N]) here; the CIFAR variant's [T, B, N, C]
layout in the official code is an equivalent transpose.
"""
import torch
import torch.nn as nn
from spikingjelly.clock_driven import functional
from spikingjelly.clock_driven.neuron import MultiStepLIFNode


def lif(v_threshold=1.0):
    return MultiStepLIFNode(tau=2.0, v_threshold=v_threshold, detach_reset=True, backend="torch")


class Taps:
    """Collects every LIF layer's output spikes by name, in forward order."""

    def __init__(self):
        self.spikes = {}
        self.streams = {}

    def put(self, name, x):
        self.spikes[name] = x.detach().clone()
        return x

    def stream(self, name, x):
        """Records a real-valued input of a unit (for teacher forcing)."""
        self.streams[name] = x.detach().clone()
        return x


class MLP(nn.Module):
    def __init__(self, dim, hidden, cifar):
        super().__init__()
        self.cifar = cifar
        if cifar:
            self.fc1_linear = nn.Linear(dim, hidden)
            self.fc2_linear = nn.Linear(hidden, dim)
            self.fc1_bn = nn.BatchNorm1d(hidden)
            self.fc2_bn = nn.BatchNorm1d(dim)
        else:
            self.fc1_conv = nn.Conv2d(dim, hidden, 1, 1)
            self.fc2_conv = nn.Conv2d(hidden, dim, 1, 1)
            self.fc1_bn = nn.BatchNorm2d(hidden)
            self.fc2_bn = nn.BatchNorm2d(dim)
        self.fc1_lif = lif()
        self.fc2_lif = lif()

    def _lin(self, layer, bn, x):
        # x: [T, B, C, N]
        T, B, C, N = x.shape
        if self.cifar:
            y = layer(x.flatten(0, 1).transpose(1, 2))  # [TB, N, C']
            y = bn(y.transpose(1, 2))  # [TB, C', N]
        else:
            y = layer(x.flatten(0, 1).unsqueeze(-1)).squeeze(-1)
            y = bn(y.unsqueeze(-1)).squeeze(-1)
        return y.reshape(T, B, -1, N)

    def forward(self, x, taps, prefix):
        h = taps.put(prefix + "fc1_lif", self.fc1_lif(self._lin(self.fc1_linear if self.cifar else self.fc1_conv, self.fc1_bn, x)))
        return taps.put(prefix + "fc2_lif", self.fc2_lif(self._lin(self.fc2_linear if self.cifar else self.fc2_conv, self.fc2_bn, h)))


class SSA(nn.Module):
    def __init__(self, dim, heads, cifar):
        super().__init__()
        self.heads, self.cifar, self.scale = heads, cifar, 0.125
        for n in ("q", "k", "v"):
            if cifar:
                setattr(self, f"{n}_linear", nn.Linear(dim, dim))
            else:
                setattr(self, f"{n}_conv", nn.Conv1d(dim, dim, 1, 1, bias=False))
            setattr(self, f"{n}_bn", nn.BatchNorm1d(dim))
            setattr(self, f"{n}_lif", lif())
        self.attn_lif = lif(0.5)
        if cifar:
            self.proj_linear = nn.Linear(dim, dim)
        else:
            self.proj_conv = nn.Conv1d(dim, dim, 1, 1)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = lif()

    def _lin(self, name, x):
        T, B, C, N = x.shape
        if self.cifar:
            y = getattr(self, name + "_linear")(x.flatten(0, 1).transpose(1, 2)).transpose(1, 2)
        else:
            y = getattr(self, name + "_conv")(x.flatten(0, 1))
        return getattr(self, name + "_bn")(y).reshape(T, B, C, N)

    def forward(self, x, taps, prefix):
        T, B, C, N = x.shape
        d = C // self.heads
        heads = lambda s: s.reshape(T, B, self.heads, d, N).transpose(-1, -2)  # [T,B,h,N,d]
        q = taps.put(prefix + "q_lif", self.q_lif(self._lin("q", x)))
        k = taps.put(prefix + "k_lif", self.k_lif(self._lin("k", x)))
        v = taps.put(prefix + "v_lif", self.v_lif(self._lin("v", x)))
        qh, kh, vh = heads(q), heads(k), heads(v)
        if self.cifar:
            a = ((qh @ kh.transpose(-2, -1)) * self.scale) @ vh
        else:
            a = (qh @ (kh.transpose(-2, -1) @ vh)) * self.scale
        a = a.transpose(-1, -2).reshape(T, B, C, N)
        a = taps.put(prefix + "attn_lif", self.attn_lif(a))
        return taps.put(prefix + "proj_lif", self.proj_lif(self._lin("proj", a)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, cifar):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)  # present in checkpoints, unused
        self.attn = SSA(dim, heads, cifar)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), cifar)

    def forward(self, x, taps, prefix):
        x = x + self.attn(x, taps, prefix + "attn.")
        return x + self.mlp(x, taps, prefix + "mlp.")


class SPS(nn.Module):
    def __init__(self, in_channels, dim, cifar):
        super().__init__()
        chans = [in_channels, dim // 8, dim // 4, dim // 2, dim]
        self.pools = [False, False, True, True] if cifar else [True, True, True, True]
        for i in range(4):
            sfx = "" if i == 0 else str(i)
            setattr(self, f"proj_conv{sfx}", nn.Conv2d(chans[i], chans[i + 1], 3, 1, 1, bias=False))
            setattr(self, f"proj_bn{sfx}", nn.BatchNorm2d(chans[i + 1]))
            setattr(self, f"proj_lif{sfx}", lif())
        self.rpe_conv = nn.Conv2d(dim, dim, 3, 1, 1, bias=False)
        self.rpe_bn = nn.BatchNorm2d(dim)
        self.rpe_lif = lif()
        self.pool = nn.MaxPool2d(3, 2, 1)

    def forward(self, x, taps):
        T, B = x.shape[:2]
        for i in range(4):
            sfx = "" if i == 0 else str(i)
            y = getattr(self, f"proj_bn{sfx}")(getattr(self, f"proj_conv{sfx}")(x.flatten(0, 1)))
            y = taps.put(f"patch_embed.proj_lif{sfx}", getattr(self, f"proj_lif{sfx}")(y.reshape(T, B, *y.shape[1:])))
            if self.pools[i]:
                y = self.pool(y.flatten(0, 1))
                y = y.reshape(T, B, *y.shape[1:])
            x = y
        x_feat = x
        y = self.rpe_bn(self.rpe_conv(x.flatten(0, 1)))
        y = taps.put("patch_embed.rpe_lif", self.rpe_lif(y.reshape(T, B, *y.shape[1:])))
        return y + x_feat


class Spikformer(nn.Module):
    def __init__(self, variant="imagenet", T=4, img_size_h=224, img_size_w=224, patch_size=16, in_channels=3,
                 num_classes=1000, embed_dims=384, num_heads=8, mlp_ratios=4, depths=8):
        super().__init__()
        cifar = variant == "cifar"
        self.T = T
        self.patch_embed = SPS(in_channels, embed_dims, cifar)
        self.block = nn.ModuleList([Block(embed_dims, num_heads, mlp_ratios, cifar) for _ in range(depths)])
        self.head = nn.Linear(embed_dims, num_classes)

    def forward(self, img, taps=None):
        # Membranes start at 0 for every sample (the official loops call reset_net per batch).
        functional.reset_net(self)
        taps = taps or Taps()
        x = img.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        x = self.patch_embed(x, taps)
        x = x.flatten(3)  # [T, B, C, N]
        for i, blk in enumerate(self.block):
            x = blk(x, taps, f"block.{i}.")
        return self.head(x.mean(3).mean(0))
