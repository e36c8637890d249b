"""The PyTorch side of `spikescan bench`: the same named kernel shapes and models, in the
PyTorch stack people use today (SpikingJelly neurons, the re-implemented models of
tools/torch_models/, transformers' Mamba), writing the same JSON lines so tools/compare.py can
print the ratio table.

    python3 tools/bench_torch.py --kernels --quick --json bench/out/torch-kernels.jsonl
    python3 tools/bench_torch.py --lmuformer lmuformer-gsc --mamba mamba-130m --json out.jsonl
    python3 tools/bench_torch.py --vision spikformer-8-384 --t 4 --image-batch 1 --json out.jsonl

Runs on CUDA when present (--device cuda; SpikingJelly's cupy backend if installed, else
torch), else on the CPU. Kernel times are the median of --reps runs after a warm-up
(torch.cuda.synchronize around each on a GPU); TF32 is off, as the targets ask.
"""
import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "torch_models"))


def device_info(dev):
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        return name, "cuda", f"torch {torch.__version__}, CUDA {torch.version.cuda}"
    return platform.processor() or platform.machine(), "cpu", f"torch {torch.__version__}, {torch.get_num_threads()} threads"


class Bench:
    def __init__(self, dev, reps, json_path=None):
        self.dev, self.reps, self.records = dev, max(3, reps), []
        self.adapter, self.backend, self.driver = device_info(dev)
        # Each record is written as soon as it is measured, so a run stopped by a time limit
        # keeps what it measured.
        self.json = None
        if json_path:
            os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
            self.json = open(json_path, "w")

    def sync(self):
        if self.dev.type == "cuda":
            torch.cuda.synchronize()

    def time(self, fn):
        """Median seconds of fn() after one warm-up."""
        with torch.no_grad():
            fn()
            self.sync()
            ts = []
            for _ in range(self.reps):
                t0 = time.perf_counter()
                fn()
                self.sync()
                ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    def put(self, suite, name, params, value, unit, lif=None):
        r = {"suite": suite, "name": name, "params": params, "value": value, "unit": unit,
             "adapter": self.adapter, "backend": self.backend, "driver": self.driver}
        if lif:
            r["lif_backend"] = lif
        self.records.append(r)
        if self.json:
            self.json.write(json.dumps(r, ensure_ascii=False) + "\n")
            self.json.flush()
        print(f"{name:<40} {params:<32} {value:>14.3f} {unit}", flush=True)

    def kernel(self, name, params, fn):
        self.put("kernel", name, params, self.time(fn) * 1e6, "µs")


def lif_multistep(x, v_th=1.0, tau=2.0):
    """SpikingJelly's MultiStepLIFNode (torch backend) when available, else the same loop."""
    try:
        from spikingjelly.clock_driven.neuron import MultiStepLIFNode
        node = MultiStepLIFNode(tau=tau, v_threshold=v_th, detach_reset=True,
                                backend="cupy" if x.is_cuda and _has_cupy() else "torch")
        return node(x)
    except ImportError:
        v, out = torch.zeros_like(x[0]), []
        for t in range(x.shape[0]):
            h = v + (x[t] - v) / tau
            s = (h >= v_th).float()
            v = h * (1 - s)
            out.append(s)
        return torch.stack(out)


_CUPY = None


def _has_cupy():
    """Whether SpikingJelly's cupy LIF runs here: tried once on a tiny input (any failure, an
    old cupy or an NVRTC error, means the torch backend)."""
    global _CUPY
    if _CUPY is None:
        _CUPY = False
        if torch.cuda.is_available():
            try:
                import cupy  # noqa: F401
                from spikingjelly.clock_driven.neuron import MultiStepLIFNode
                x = torch.rand(2, 1, 64, device="cuda") * 2
                node = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
                ref = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="torch")
                _CUPY = bool(torch.equal(node(x), ref(x)))
            except Exception as e:  # noqa: BLE001
                print(f"SpikingJelly's cupy backend does not run here ({type(e).__name__}: {e}); torch backend",
                      flush=True)
    return _CUPY


def sj_backend(m):
    """Puts a model's MultiStepLIFNodes on SpikingJelly's cupy backend where it runs (what the
    official training scripts use on a GPU); returns the backend's name."""
    if not (next(m.parameters()).is_cuda and _has_cupy()):
        return "torch"
    for mod in m.modules():
        if type(mod).__name__ == "MultiStepLIFNode":
            mod.backend = "cupy"
    return "cupy"


def kernels(b, quick):
    dev = b.dev
    g = torch.Generator(device="cpu").manual_seed(42)

    def rnd(*shape):
        return (torch.rand(*shape, generator=g) * 2 - 1).to(dev)

    n = 1 << 22 if quick else 1 << 25
    x = rnd(n)
    b.kernel("copy (scale) — bandwidth ceiling", f"n={n}", lambda: x * 1.0)
    s = 512 if quick else 4096
    a, w = rnd(s, s), rnd(s, s)
    b.kernel("dense GEMM f32 — compute ceiling", f"{s}^3", lambda: a @ w.T)
    for t, c, nt in ((1, 384, 196), (4, 384, 196), (1, 512, 196), (4, 512, 196)):
        xl = rnd(t, 1, c, nt)
        bn = torch.nn.BatchNorm1d(c).to(dev).eval()
        b.kernel("lif+bn → bits", f"T={t} C={c} N={nt}",
                 lambda: lif_multistep(bn(xl.flatten(0, 1)).reshape(t, 1, c, nt)))
    nt = 196
    # Spike GEMM (fc1), SSA and SDSA at the 14x14-token stage of Spikformer-8-384 (C=384) and
    # Meta-SpikeFormer-8-512 (C=512), T = 1 and 4 (T=4, C=384 with --quick).
    for t, c in ([(4, 384)] if quick else [(1, 384), (4, 384), (1, 512), (4, 512)]):
        spikes = (torch.rand(t, c, nt, generator=g) < 0.2).float().to(dev)
        w1 = rnd(4 * c, c)
        b.kernel("spike GEMM (bits × f32)", f"T={t} K={c} N={nt} Cout={4 * c}", lambda: w1 @ spikes)
        q = spikes.reshape(t, 1, 8, c // 8, nt).transpose(-1, -2)  # [T, B, heads, N, d]

        def ssa():
            attn = q @ q.transpose(-2, -1)
            y = (attn @ q) * 0.125
            return lif_multistep(y.transpose(-1, -2).reshape(t, 1, c, nt), 0.5)
        b.kernel("SSA attention (q·kᵀv + LIF)", f"T={t} C={c} N={nt} heads=8", ssa)
        sp4 = spikes.reshape(t, 1, c, nt)

        def sdsa():
            kv = lif_multistep((sp4 * sp4).sum(-1, keepdim=True), 0.5)
            return sp4 * kv
        b.kernel("SDSA (popcount k·v, LIF, q AND)", f"T={t} C={c} N={nt}", sdsa)
    # 3x3 convolutions at Meta-SpikeFormer-8-512's stage 1 and 2 (C=64, 28x28 with --quick).
    for cc, hw in ([(64, 28)] if quick else [(128, 56), (256, 28)]):
        cx, cw = rnd(1, cc, hw, hw), rnd(cc, cc, 3, 3)
        b.kernel("conv2d 3x3 f32", f"C={cc} H=W={hw}", lambda: F.conv2d(cx, cw, padding=1))
        cs = (torch.rand(1, cc, hw, hw, generator=g) < 0.2).float().to(dev)
        b.kernel("spike conv2d 3x3 (bits × f32)", f"C={cc} H=W={hw}", lambda: F.conv2d(cs, cw, padding=1))
    # Mamba kernels at mamba-130m and mamba-1.4b widths, L = 1, 128, 2048, batch 1 and 8
    # (mamba-130m, L = 1 and 128 with --quick); the decode update at L = 1.
    ns = 16
    widths = [(768, 1536)] if quick else [(768, 1536), (2048, 4096)]
    lengths = [1, 128] if quick else [1, 128, 2048]
    shapes = [(bsz, length, dm, di) for dm, di in widths for length in lengths for bsz in (1, 8)]
    for bsz, length, dm, di in shapes:
        h, wn = rnd(bsz * length, dm), rnd(dm)
        b.kernel("RMSNorm", f"rows={bsz * length} d={dm}",
                 lambda: h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5) * wn)
        xz, cwt, cb = rnd(bsz, 2 * di, length), rnd(di, 1, 4), rnd(di)
        b.kernel("causal conv1d + SiLU", f"B={bsz} L={length} D={di}",
                 lambda: F.silu(F.conv1d(xz[:, :di], cwt, cb, padding=3, groups=di)[..., :length]))
        u, dt, z = rnd(bsz, di, length), rnd(bsz, di, length), rnd(bsz, di, length)
        bm, cm = rnd(bsz, ns, length), rnd(bsz, ns, length)
        am = -torch.arange(1, ns + 1, device=dev).float().repeat(di, 1)
        dsk, dtb = rnd(di), rnd(di) - 3

        def scan():
            # mamba_ssm's selective_scan_ref (the sequential reference, what runs without its
            # CUDA kernel), with exp(dA) and dB·u formed per step so long sequences fit.
            d = F.softplus(dt + dtb[:, None])
            st = torch.zeros(bsz, di, ns, device=dev)
            ys = []
            for i in range(length):
                di_ = d[:, :, i, None]
                st = torch.exp(di_ * am) * st + di_ * bm[:, None, :, i] * u[:, :, i, None]
                ys.append(torch.einsum("bdn,bn->bd", st, cm[:, :, i]))
            y = torch.stack(ys, dim=2) + u * dsk[:, None]
            return y * F.silu(z)
        b.kernel("selective scan", f"B={bsz} L={length} D={di} N={ns}", scan)
        if length == 1:
            bb = bsz
            st = rnd(bb, di, ns)
            # dt_proj inside, as spikescan's update: rank R = d_model / 16 (the official configs).
            rr = -(-dm // 16)
            du, dz, dbb, dcc = rnd(bb, di), rnd(bb, di), rnd(bb, ns), rnd(bb, ns)
            dxr, dwt = rnd(bb, rr), rnd(di, rr)

            def update():
                d = F.softplus(dxr @ dwt.t() + dtb)
                st.mul_(torch.exp(d[..., None] * am)).add_(d[..., None] * dbb[:, None] * du[..., None])
                return ((st * dcc[:, None]).sum(-1) + du * dsk) * F.silu(dz)
            b.kernel("decode state update", f"B={bb} D={di} N={ns} R={rr}", update)
    from lmuformer import legendre_zoh
    mm = 256 if quick else 512
    la, lb = legendre_zoh(mm, 128)
    la, lb = la.to(dev), lb.to(dev)
    hcols, ai = [], torch.eye(mm, device=dev)
    for _ in range(128):
        hcols.append(ai @ lb)
        ai = la @ ai
    hmat = torch.cat(hcols, -1)
    for ln, lbatch, chunk in ((128, 1 if quick else 8, 128), (512 if quick else 2048, 1, 32)):
        uu = rnd(lbatch, 1, ln)
        # The official parallel form: FFT convolution with the impulse response (extended
        # to the sequence length beyond 128 tokens, as the recurrence would give).
        hh = hmat if ln <= 128 else torch.cat([hmat, torch.zeros(mm, ln - 128, device=dev)], -1)
        fh = torch.fft.rfft(hh, n=2 * ln, dim=-1)
        name = "LMU memory (Toeplitz)" if chunk >= ln else "LMU memory, chunk-local part"
        b.kernel(name, f"N={ln} B={lbatch} M={mm} chunk={min(chunk, ln)}",
                 lambda: torch.fft.irfft(torch.fft.rfft(uu, n=2 * ln, dim=-1) * fh, n=2 * ln, dim=-1)[..., :ln])
    for ss in (1, 8):
        mst, us = rnd(ss, mm), rnd(ss, 1)
        b.kernel("LMU memory step (streaming GEMV)", f"S={ss} M={mm}", lambda: mst @ la.T + us @ lb.T)


def lmuformer(b, name, batches):
    from lmuformer import LMUFormer
    spiking = name.startswith("spiking")
    torch.manual_seed(0)
    m = LMUFormer(in_channels=128, embed_dims=256, mlp_ratios=4, depths=1, num_classes=35,
                  spiking=spiking).to(b.dev).eval()
    be = sj_backend(m) if spiking else "—"
    for bb in batches:
        x = torch.rand(bb, 128, 128, device=b.dev) - 0.3
        secs = b.time(lambda: m(x))
        b.put("model", f"{name} whole clip", f"B={bb} N=128", bb / secs, "clips/s", lif=be)


def mamba_model(b, name):
    from transformers import MambaConfig, MambaForCausalLM
    d, n = {"mamba-130m": (768, 24), "mamba-370m": (1024, 48), "mamba-790m": (1536, 48),
            "mamba-1.4b": (2048, 48)}[name]
    cfg = MambaConfig(vocab_size=50280, hidden_size=d, num_hidden_layers=n, state_size=16, expand=2,
                      conv_kernel=4, tie_word_embeddings=True)
    return MambaForCausalLM(cfg).to(b.dev).eval()


def mamba(b, name, m, batch, prompt_len, steps):
    ids = torch.randint(0, 50000, (batch, prompt_len), device=b.dev)
    secs = b.time(lambda: m(ids))
    b.put("model", f"{name} prompt", f"B={batch} L={prompt_len}", batch * prompt_len / secs, "tokens/s")
    with torch.no_grad():
        t0 = time.perf_counter()
        m.generate(ids, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
        b.sync()
        total = time.perf_counter() - t0
        t0 = time.perf_counter()
        m.generate(ids, max_new_tokens=1, min_new_tokens=1, do_sample=False)
        b.sync()
        prefill = time.perf_counter() - t0
    b.put("model", f"{name} decode", f"B={batch}", batch * (steps - 1) / max(total - prefill, 1e-9), "tokens/s")


def vision(b, name, t, batches):
    torch.manual_seed(0)
    if name.startswith("spikformer"):
        from spikformer import Spikformer
        e = int(name.split("-")[2])
        m = Spikformer(variant="imagenet", T=t, embed_dims=e, num_heads=8, mlp_ratios=4, depths=8)
    else:
        from meta_spikeformer import MetaSpikeFormer
        e = {"384": (96, 192, 384, 480), "512": (128, 256, 512, 640), "768": (192, 384, 768, 960)}[name.split("-")[3]]
        m = MetaSpikeFormer(T=t, embed_dim=e, num_heads=8, mlp_ratios=4, depths=8)
    m = m.to(b.dev).eval()
    be = sj_backend(m)
    for bb in batches:
        x = torch.randn(bb, 3, 224, 224, device=b.dev)
        secs = b.time(lambda: m(x))
        b.put("model", f"{name} images/s", f"B={bb} T={t} 224px", bb / secs, "images/s", lif=be)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--lmuformer", action="append", default=[])
    ap.add_argument("--clip-batch", type=int, action="append")
    ap.add_argument("--mamba", action="append", default=[])
    ap.add_argument("--batch", type=int, action="append")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--decode-steps", type=int, default=16)
    ap.add_argument("--vision", action="append", default=[])
    ap.add_argument("--t", type=int, action="append")
    ap.add_argument("--image-batch", type=int, action="append")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    b = Bench(torch.device(a.device), a.reps, a.json)
    print(f"PyTorch on {b.adapter} ({b.backend}, {b.driver})")
    if a.kernels:
        kernels(b, a.quick)
    for name in a.lmuformer:
        lmuformer(b, name, a.clip_batch or [1, 32])
    for name in a.mamba:
        m = mamba_model(b, name)
        for bsz in a.batch or [1]:
            mamba(b, name, m, bsz, a.prompt_len, a.decode_steps)
        del m
    for name in a.vision:
        for t in a.t or [4]:
            vision(b, name, t, a.image_batch or [1])
    if b.json:
        b.json.close()
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
