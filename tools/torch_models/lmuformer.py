"""LMUFormer and Spiking LMUFormer (zeyuliu1037/LMUFormer) re-implemented,
under the official key names (`lmu_rnn_conv1d` and `slmu_rnn_ms_conv1d` of src/lmu_rnn.py).

Not a reference: test fixtures come from the official code itself (tools/reference/).
This re-implementation is kept for training the bundled models (tools/train_bundled.py) and
for the PyTorch side of the benchmarks (tools/bench_torch.py).

Input [B, N frames, C mel], used as [B, C, N]. Neurons are SpikingJelly's MultiStepLIFNode
(tau 2, detach_reset, torch backend) whose time axis is the token axis: the official code
permutes [B, C, N] to [N, C, B] around every neuron. The LMU memory is computed as the
official code does, by FFT convolution with the impulse response H (`fft_H`); A, B, H and
fft_H are buffers in the state_dict. Per-layer spikes and unit inputs are recorded in a
`Taps` (token-major [N, B, C], the layout spikescan uses).
"""
import torch
import torch.nn as nn
from spikingjelly.clock_driven import functional
from spikingjelly.clock_driven.neuron import MultiStepLIFNode


def lif(v_threshold=1.0):
    return MultiStepLIFNode(tau=2.0, v_threshold=v_threshold, detach_reset=True, backend="torch")


class Taps:
    def __init__(self):
        self.spikes = {}
        self.streams = {}
        self.extra = {}


def nbc(x):
    """[B, C, N] -> [N, B, C]."""
    return x.permute(2, 0, 1).contiguous()


def neuron(node, x, taps, name):
    """A LIF over the token axis of x [B, C, N] (the official permute(2, 1, 0) dance)."""
    s = node(x.permute(2, 1, 0).contiguous()).permute(2, 1, 0).contiguous()
    if taps is not None:
        taps.spikes[name] = nbc(s).detach().clone()
    return s


def legendre_zoh(m, theta):
    """ZOH discretisation (dt = 1) of the LMU's Legendre state space, as scipy's
    cont2discrete(method="zoh"): expm of the augmented matrix, in float64."""
    q = torch.arange(m, dtype=torch.float64).reshape(-1, 1)
    r = (2 * q + 1) / theta
    i, j = torch.meshgrid(q[:, 0], q[:, 0], indexing="ij")
    a = r * torch.where(i < j, -1.0, (-1.0) ** (i - j + 1))
    b = r * ((-1.0) ** q)
    z = torch.zeros(m + 1, m + 1, dtype=torch.float64)
    z[:m, :m] = a
    z[:m, m:] = b
    e = torch.linalg.matrix_exp(z)
    return e[:m, :m].float(), e[:m, m:].float()


class LMUCell(nn.Module):
    """LMUFFTCell / SpikingLMUFFTCell."""

    def __init__(self, input_size, hidden_size, memory_size, seq_len=128, theta=128, spiking=False):
        super().__init__()
        self.spiking = spiking
        self.seq_len = seq_len
        self.W_u = nn.Linear(input_size, 1)
        self.W_h = nn.Linear(memory_size + input_size, hidden_size)
        a, b = legendre_zoh(memory_size, theta)
        self.register_buffer("A", a)
        self.register_buffer("B", b)
        h, a_i = [], torch.eye(memory_size)
        for _ in range(seq_len):  # float32 products, as the official impulse()
            h.append(a_i @ b)
            a_i = a @ a_i
        h = torch.cat(h, dim=-1)
        self.register_buffer("H", h)
        self.register_buffer("fft_H", torch.fft.rfft(h, n=2 * seq_len, dim=-1))
        if spiking:
            self.bn_u = nn.BatchNorm1d(1)
            self.f_u = lif()
            self.bn_m = nn.BatchNorm1d(memory_size)
            self.f_m = lif()
            self.bn_h = nn.BatchNorm1d(hidden_size)
            self.f_h = lif()

    def forward(self, x, taps=None, name=""):
        """x [B, N, C] -> h [B, N, hidden]."""
        _, n, _ = x.shape
        if self.spiking:
            u = neuron(self.f_u, self.bn_u(self.W_u(x).transpose(1, 2)), taps, name + ".f_u")  # [B, 1, N]
        else:
            u = torch.relu(self.W_u(x)).transpose(1, 2)  # [B, 1, N]
        fft_u = torch.fft.rfft(u, n=2 * n, dim=-1)
        m = torch.fft.irfft(fft_u * self.fft_H.unsqueeze(0), n=2 * n, dim=-1)[:, :, :n]  # [B, M, N]
        if taps is not None:
            taps.extra[name + ".u"] = nbc(u)[:, :, 0].detach().clone()
            taps.extra[name + ".m"] = nbc(m).detach().clone()
        if self.spiking:
            m = neuron(self.f_m, self.bn_m(m), taps, name + ".f_m")
        hin = torch.cat((m.transpose(1, 2), x), dim=-1)
        if self.spiking:
            h = neuron(self.f_h, self.bn_h(self.W_h(hin).transpose(1, 2)), taps, name + ".f_h")
            return h.transpose(1, 2)
        return torch.relu(self.W_h(hin))


class Tokenizer(nn.Module):
    """LMUFormer's embedding: 4 x [Conv1d k3 (no bias), ReLU, Identity, BatchNorm1d], then
    x + rpe_conv(x)."""

    def __init__(self, in_channels, dim):
        super().__init__()
        chans = [in_channels, dim, dim, dim, dim]
        self.conv_layers = nn.Sequential(*[
            nn.Sequential(nn.Conv1d(chans[i], chans[i + 1], 3, 1, 1, bias=False), nn.ReLU(),
                          nn.Identity(), nn.BatchNorm1d(chans[i + 1]))
            for i in range(4)
        ])
        self.rpe_conv = nn.Conv1d(dim, dim, 3, 1, 1, bias=False)

    def forward(self, x, taps=None):
        x = self.conv_layers(x)
        return x + self.rpe_conv(x)


class Conv1d4EBMs(nn.Module):
    def __init__(self, in_channels, dim):
        super().__init__()
        self.proj_conv = nn.Conv1d(in_channels, dim, 3, 1, 1, bias=False)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = lif()
        for i in (1, 2, 3):
            setattr(self, f"proj_conv{i}", nn.Conv1d(dim, dim, 3, 1, 1, bias=False))
            setattr(self, f"proj_bn{i}", nn.BatchNorm1d(dim))
            setattr(self, f"proj_lif{i}", lif())
        self.rpe_conv = nn.Conv1d(dim, dim, 3, 1, 1, bias=False)

    def forward(self, x, taps=None):
        x = self.proj_conv(x)
        for i in ("", "1", "2"):
            s = neuron(getattr(self, f"proj_lif{i}"), getattr(self, f"proj_bn{i}")(x), taps,
                       f"patch_embed.proj_lif{i}")
            x = getattr(self, f"proj_conv{int(i or 0) + 1}")(s)
        r = neuron(self.proj_lif3, self.proj_bn3(x), taps, "patch_embed.proj_lif3")
        return x + self.rpe_conv(r)


class LMU(nn.Module):
    def __init__(self, dim, seq_len=128, theta=128):
        super().__init__()
        self.lmu = LMUCell(dim, dim, dim, seq_len, theta)
        self.proj_conv = nn.Conv1d(dim, dim, 1)
        self.proj_bn = nn.BatchNorm1d(dim)

    def forward(self, x, taps=None, name=""):
        h = self.lmu(x.transpose(1, 2), taps, name + ".lmu")
        return self.proj_bn(self.proj_conv(h.transpose(1, 2)))


class SLMUMs(nn.Module):
    def __init__(self, dim, seq_len=128, theta=128):
        super().__init__()
        self.lmu = LMUCell(dim, dim, 2 * dim, seq_len, theta, spiking=True)
        self.prev_bn = nn.BatchNorm1d(dim)
        self.prev_lif = lif(0.5)
        self.proj_conv = nn.Conv1d(dim, dim, 1)
        self.proj_bn = nn.BatchNorm1d(dim)

    def forward(self, x, taps=None, name=""):
        s = neuron(self.prev_lif, self.prev_bn(x), taps, name + ".prev_lif")
        h = self.lmu(s.transpose(1, 2), taps, name + ".lmu")
        return self.proj_bn(self.proj_conv(h.transpose(1, 2)))


class ConvFFN(nn.Module):
    """LMUFormer's MLP: fc1 -> bn -> GELU -> fc2 -> bn -> ReLU (1x1 convs with bias)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1_conv = nn.Conv1d(dim, hidden, 1)
        self.fc1_bn = nn.BatchNorm1d(hidden)
        self.fc2_conv = nn.Conv1d(hidden, dim, 1)
        self.fc2_bn = nn.BatchNorm1d(dim)

    def forward(self, x, taps=None, name=""):
        x = nn.functional.gelu(self.fc1_bn(self.fc1_conv(x)))
        return torch.relu(self.fc2_bn(self.fc2_conv(x)))


class ConvFFNMs(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1_bn = nn.BatchNorm1d(dim)
        self.fc1_lif = lif()
        self.fc1_conv = nn.Conv1d(dim, hidden, 1)
        self.fc2_bn = nn.BatchNorm1d(hidden)
        self.fc2_lif = lif()
        self.fc2_conv = nn.Conv1d(hidden, dim, 1)

    def forward(self, x, taps=None, name=""):
        x = self.fc1_conv(neuron(self.fc1_lif, self.fc1_bn(x), taps, name + ".fc1_lif"))
        return self.fc2_conv(neuron(self.fc2_lif, self.fc2_bn(x), taps, name + ".fc2_lif"))


class Block(nn.Module):
    def __init__(self, dim, mlp_ratio, spiking, seq_len=128, theta=128):
        super().__init__()
        self.attn = SLMUMs(dim, seq_len, theta) if spiking else LMU(dim, seq_len, theta)
        hidden = int(dim * mlp_ratio)
        self.mlp = ConvFFNMs(dim, hidden) if spiking else ConvFFN(dim, hidden)

    def forward(self, x, taps=None, name=""):
        if taps is not None:
            taps.streams[name + ".attn"] = nbc(x).detach().clone()
        x = x + self.attn(x, taps, name + ".attn")
        if taps is not None:
            taps.streams[name + ".mlp"] = nbc(x).detach().clone()
        return x + self.mlp(x, taps, name + ".mlp")


class LMUFormer(nn.Module):
    """`spiking=False`: lmu_rnn_conv1d; `spiking=True`: slmu_rnn_ms_conv1d."""

    def __init__(self, in_channels=128, embed_dims=256, mlp_ratios=4, depths=1, num_classes=35,
                 spiking=False, seq_len=128, theta=128):
        super().__init__()
        self.spiking = spiking
        self.patch_embed = Conv1d4EBMs(in_channels, embed_dims) if spiking else Tokenizer(in_channels, embed_dims)
        self.block = nn.ModuleList([Block(embed_dims, mlp_ratios, spiking, seq_len, theta) for _ in range(depths)])
        if spiking:
            self.head_bn = nn.BatchNorm1d(embed_dims)
            self.head_lif = lif()
        self.head = nn.Linear(embed_dims, num_classes)

    def features(self, x, taps=None):
        """x [B, N, C] -> [B, C, N] before the head's normalisation."""
        x = self.patch_embed(x.permute(0, 2, 1).contiguous(), taps)
        for i, blk in enumerate(self.block):
            x = blk(x, taps, f"block.{i}")
        if taps is not None:
            taps.streams["head"] = nbc(x).detach().clone()
        if self.spiking:
            x = neuron(self.head_lif, self.head_bn(x), taps, "head_lif")
        return x

    def forward(self, x, taps=None, all_seq=False):
        functional.reset_net(self)  # SpikingJelly neurons keep their membranes between calls
        x = self.features(x, taps)
        if all_seq:  # the official test_mode == 'all_seq': running mean over tokens, [N, B, classes]
            x = x.permute(2, 0, 1).contiguous()
            x = torch.cumsum(x, dim=0)
            x = x / torch.arange(1, x.shape[0] + 1).view(-1, 1, 1).float()
            return self.head(x)
        return self.head(x.permute(0, 2, 1).contiguous()).mean(dim=1)
