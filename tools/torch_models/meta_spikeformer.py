"""Meta-SpikeFormer (BICLab/Spike-Driven-Transformer-V2, classification/models.py, class
Spiking_vit_MetaFormer) re-implemented, under the official key names.

Not a reference: test fixtures come from the official code itself (tools/reference/).
This re-implementation is kept for training the bundled models (tools/train_bundled.py) and
for the PyTorch side of the benchmarks (tools/bench_torch.py).

Differences from the official file are only in plumbing: SpikingJelly's torch backend
instead of cupy, a Taps object that records every LIF layer's output, and a reset of all
membranes at the start of each forward. The readout is the official one before commit
d95ad13 (e.g. 03cc73e): `head` takes the token mean before the final `lif`, `head_kd` takes
it after; with kd the eval output is their average. Today's official code feeds both heads
the spikes; a model trained with this file sets `"head_input": "membrane"` in config.json.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.clock_driven import functional
from spikingjelly.clock_driven.neuron import MultiStepLIFNode

from spikformer import Taps


def lif(v_threshold=1.0):
    return MultiStepLIFNode(tau=2.0, v_threshold=v_threshold, detach_reset=True, backend="torch")


class BNAndPadLayer(nn.Module):
    def __init__(self, pad_pixels, num_features):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features)
        self.pad_pixels = pad_pixels

    def forward(self, x):
        y = self.bn(x)
        p = self.pad_pixels
        pad = (self.bn.bias - self.bn.running_mean * self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)).view(1, -1, 1, 1)
        y = F.pad(y, [p] * 4)
        y[:, :, :p, :] = pad
        y[:, :, -p:, :] = pad
        y[:, :, :, :p] = pad
        y[:, :, :, -p:] = pad
        return y


class RepConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cin, 1, 1, 0, bias=False),
            BNAndPadLayer(1, cin),
            nn.Sequential(
                nn.Conv2d(cin, cin, 3, 1, 0, groups=cin, bias=False),
                nn.Conv2d(cin, cout, 1, 1, 0, bias=False),
                nn.BatchNorm2d(cout),
            ),
        )

    def forward(self, x):
        return self.body(x)


class SepConv(nn.Module):
    def __init__(self, dim):
        super().__init__()
        med = 2 * dim
        self.lif1 = lif()
        self.pwconv1 = nn.Conv2d(dim, med, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(med)
        self.lif2 = lif()
        self.dwconv = nn.Conv2d(med, med, 7, padding=3, groups=med, bias=False)
        self.pwconv2 = nn.Conv2d(med, dim, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim)

    def forward(self, x, taps, prefix):
        T, B, C, H, W = x.shape
        x = taps.put(prefix + "lif1", self.lif1(x))
        x = self.bn1(self.pwconv1(x.flatten(0, 1))).reshape(T, B, -1, H, W)
        x = taps.put(prefix + "lif2", self.lif2(x))
        x = self.dwconv(x.flatten(0, 1))
        return self.bn2(self.pwconv2(x)).reshape(T, B, -1, H, W)


class MS_ConvBlock(nn.Module):
    def __init__(self, dim, mlp_ratio):
        super().__init__()
        self.Conv = SepConv(dim)
        self.lif1 = lif()
        self.conv1 = nn.Conv2d(dim, dim * mlp_ratio, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(dim * mlp_ratio)
        self.lif2 = lif()
        self.conv2 = nn.Conv2d(dim * mlp_ratio, dim, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim)

    def forward(self, x, taps, prefix):
        T, B, C, H, W = x.shape
        x = self.Conv(x, taps, prefix + "Conv.") + x
        x_feat = x
        x = self.bn1(self.conv1(taps.put(prefix + "lif1", self.lif1(x)).flatten(0, 1))).reshape(T, B, -1, H, W)
        x = self.bn2(self.conv2(taps.put(prefix + "lif2", self.lif2(x)).flatten(0, 1))).reshape(T, B, C, H, W)
        return x_feat + x


class MS_MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1_conv = nn.Conv1d(dim, hidden, 1, 1)
        self.fc1_bn = nn.BatchNorm1d(hidden)
        self.fc1_lif = lif()
        self.fc2_conv = nn.Conv1d(hidden, dim, 1, 1)
        self.fc2_bn = nn.BatchNorm1d(dim)
        self.fc2_lif = lif()

    def forward(self, x, taps, prefix):
        T, B, C, H, W = x.shape
        x = taps.put(prefix + "fc1_lif", self.fc1_lif(x.flatten(3)))
        x = self.fc1_bn(self.fc1_conv(x.flatten(0, 1))).reshape(T, B, -1, H * W)
        x = taps.put(prefix + "fc2_lif", self.fc2_lif(x))
        return self.fc2_bn(self.fc2_conv(x.flatten(0, 1))).reshape(T, B, C, H, W)


class MS_Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.head_lif = lif()
        self.q_conv = nn.Sequential(RepConv(dim, dim), nn.BatchNorm2d(dim))
        self.k_conv = nn.Sequential(RepConv(dim, dim), nn.BatchNorm2d(dim))
        self.v_conv = nn.Sequential(RepConv(dim, dim), nn.BatchNorm2d(dim))
        self.q_lif, self.k_lif, self.v_lif = lif(), lif(), lif()
        self.attn_lif = lif(0.5)
        self.proj_conv = nn.Sequential(RepConv(dim, dim), nn.BatchNorm2d(dim))

    def forward(self, x, taps, prefix):
        T, B, C, H, W = x.shape
        N, d = H * W, C // self.heads
        x = taps.put(prefix + "head_lif", self.head_lif(x))
        heads = lambda s: s.flatten(3).reshape(T, B, self.heads, d, N).transpose(-1, -2)
        q = taps.put(prefix + "q_lif", self.q_lif(self.q_conv(x.flatten(0, 1)).reshape(T, B, C, H, W)))
        k = taps.put(prefix + "k_lif", self.k_lif(self.k_conv(x.flatten(0, 1)).reshape(T, B, C, H, W)))
        v = taps.put(prefix + "v_lif", self.v_lif(self.v_conv(x.flatten(0, 1)).reshape(T, B, C, H, W)))
        a = (heads(q) @ (heads(k).transpose(-2, -1) @ heads(v))) * 0.125
        a = a.transpose(-1, -2).reshape(T, B, C, N)
        a = taps.put(prefix + "attn_lif", self.attn_lif(a)).reshape(T, B, C, H, W)
        return self.proj_conv(a.flatten(0, 1)).reshape(T, B, C, H, W)


class MS_Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        self.attn = MS_Attention(dim, heads)
        self.mlp = MS_MLP(dim, int(dim * mlp_ratio))

    def forward(self, x, taps, prefix):
        x = x + self.attn(x, taps, prefix + "attn.")
        return x + self.mlp(x, taps, prefix + "mlp.")


class MS_DownSampling(nn.Module):
    def __init__(self, cin, cout, k, s, p, first):
        super().__init__()
        self.encode_conv = nn.Conv2d(cin, cout, k, s, p)
        self.encode_bn = nn.BatchNorm2d(cout)
        if not first:
            self.encode_lif = lif()

    def forward(self, x, taps, prefix):
        T, B = x.shape[:2]
        if hasattr(self, "encode_lif"):
            x = taps.put(prefix + "encode_lif", self.encode_lif(x))
        x = self.encode_conv(x.flatten(0, 1))
        return self.encode_bn(x).reshape(T, B, *x.shape[1:])


class MetaSpikeFormer(nn.Module):
    def __init__(self, T=1, kd=False, img_size_h=224, img_size_w=224, patch_size=16, in_channels=3,
                 num_classes=1000, embed_dim=(96, 192, 384, 480), num_heads=8, mlp_ratios=4, depths=8):
        super().__init__()
        e = embed_dim
        self.T, self.kd = T, kd
        self.downsample1_1 = MS_DownSampling(in_channels, e[0] // 2, 7, 2, 3, True)
        self.ConvBlock1_1 = nn.ModuleList([MS_ConvBlock(e[0] // 2, mlp_ratios)])
        self.downsample1_2 = MS_DownSampling(e[0] // 2, e[0], 3, 2, 1, False)
        self.ConvBlock1_2 = nn.ModuleList([MS_ConvBlock(e[0], mlp_ratios)])
        self.downsample2 = MS_DownSampling(e[0], e[1], 3, 2, 1, False)
        self.ConvBlock2_1 = nn.ModuleList([MS_ConvBlock(e[1], mlp_ratios)])
        self.ConvBlock2_2 = nn.ModuleList([MS_ConvBlock(e[1], mlp_ratios)])
        self.downsample3 = MS_DownSampling(e[1], e[2], 3, 2, 1, False)
        self.block3 = nn.ModuleList([MS_Block(e[2], num_heads, mlp_ratios) for _ in range(6)])
        self.downsample4 = MS_DownSampling(e[2], e[3], 3, 1, 1, False)
        self.block4 = nn.ModuleList([MS_Block(e[3], num_heads, mlp_ratios) for _ in range(2)])
        self.lif = lif()
        self.head = nn.Linear(e[3], num_classes)
        if kd:
            self.head_kd = nn.Linear(e[3], num_classes)

    def forward(self, img, taps=None):
        functional.reset_net(self)
        taps = taps or Taps()
        x = img.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        units = [("downsample1_1", self.downsample1_1), ("ConvBlock1_1.0", self.ConvBlock1_1[0]),
                 ("downsample1_2", self.downsample1_2), ("ConvBlock1_2.0", self.ConvBlock1_2[0]),
                 ("downsample2", self.downsample2), ("ConvBlock2_1.0", self.ConvBlock2_1[0]),
                 ("ConvBlock2_2.0", self.ConvBlock2_2[0]), ("downsample3", self.downsample3)]
        units += [(f"block3.{i}", b) for i, b in enumerate(self.block3)]
        units += [("downsample4", self.downsample4)]
        units += [(f"block4.{i}", b) for i, b in enumerate(self.block4)]
        for name, unit in units:
            if name != "downsample1_1":
                taps.stream(name, x)
            x = unit(x, taps, name + ".")
        taps.stream("readout", x)
        x = x.flatten(3).mean(3)
        x_lif = taps.put("lif", self.lif(x))
        out = self.head(x).mean(0)
        if self.kd:
            out = (out + self.head_kd(x_lif).mean(0)) / 2
        return out
