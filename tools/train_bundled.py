"""Trains the small models bundled in models/ on data that ships with scikit-learn and Python.

    python3 tools/train_bundled.py vision [NAME]  # spikformer-digits, meta-spikeformer-digits
    python3 tools/train_bundled.py lmu      # lmuformer-digits, spiking-lmuformer-digits
    python3 tools/train_bundled.py mamba    # mamba-pydoc (a byte-level BPE LM on pydoc_data)

Digits: scikit-learn's bundled 8x8 handwritten digits (1,797 images, `load_digits`), split
80/20 with `train_test_split(test_size=0.2, random_state=0, stratify=y)`; the 360 held-out
images are the test set shipped with each model. Images are scaled to 0..255, upscaled by
pixel replication, and fed as RGB with the ImageNet mean/std (what `spikescan run` does to a
PNG); the LMUFormers read the 16x16 image row by row: 16 frames of 16 features in [-1, 1].
The models are re-implementations of the official architectures in tools/torch_models/
(SpikingJelly neurons, surrogate gradients), trained with Adam on CPU.
Every model directory gets config.json, model.safetensors (official key names), labels.txt,
a held-out set, and a README.md model card with the measured accuracy.
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "torch_models"))

ROOT = os.path.join(os.path.dirname(__file__), "..", "models")
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    img8 = np.round(d.images * 255.0 / 16.0).astype(np.uint8)
    return train_test_split(img8, d.target, test_size=0.2, random_state=0, stratify=d.target)


def upscale(img8, factor):
    return np.kron(img8, np.ones((1, factor, factor), dtype=np.uint8))


def as_rgb(img8):
    x = torch.from_numpy(img8).float().div(255.0).unsqueeze(1).repeat(1, 3, 1, 1)
    return (x - MEAN) / STD


def as_rows(img8):
    """[N, 16, 16] u8 -> [N, frames=16, features=16] in [-1, 1]."""
    return torch.from_numpy(img8).float().div(127.5).sub(1.0)


def train(model, x, y, epochs, lr, batch=64, seed=0, frozen_bn=False, **fwd):
    torch.set_flush_denormal(True)  # denormals in surrogate gradients slow the CPU badly
    """Adam with cosine decay. `frozen_bn` trains with every BatchNorm in eval mode (a learned
    affine on fixed statistics): Meta-SpikeFormer at 32x32 has 2x2 maps in its attention
    stages, where batch statistics of sparse spikes blow its gradients up (~1e4 per block)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    t0 = time.time()
    for epoch in range(epochs):
        model.train(not frozen_bn)
        order = torch.randperm(len(x), generator=gen)
        total, skipped = 0.0, 0
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            loss = F.cross_entropy(model(x[idx], **fwd), y[idx])
            opt.zero_grad()
            loss.backward()
            if frozen_bn:
                # Deep spiking stacks can produce non-finite surrogate gradients: skip such a
                # step, and clip the rest.
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                if not torch.isfinite(norm):
                    skipped += 1
                    continue
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        print(f"  epoch {epoch + 1:>3}/{epochs}  loss {total / len(x):.4f}  ({time.time() - t0:.0f} s)"
              + (f", {skipped} steps skipped (non-finite gradients)" if skipped else ""), flush=True)
    model.eval()
    return time.time() - t0


def calibrate_bn(model, x):
    """Data-dependent initialisation for training with frozen BatchNorms: in forward order,
    each BatchNorm's running statistics are set to those of its input on `x`, so every
    normalised activation starts near N(0, 1) (and LIF layers fire)."""
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    for bn in bns:
        seen = {}
        h = bn.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach()))
        with torch.no_grad():
            model(x)
        h.remove()
        v = seen["x"].transpose(0, 1).reshape(bn.num_features, -1)
        bn.running_mean.copy_(v.mean(1))
        bn.running_var.copy_(v.var(1).clamp_min(0.05))


def accuracy(model, x, y, **fwd):
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 128], **fwd).argmax(1) for i in range(0, len(x), 128)])
    correct = int((pred == y).sum())
    return correct, len(y)


def card(d, title, arch, data, how, correct, total, secs, command, extra=""):
    with open(os.path.join(d, "README.md"), "w") as f:
        f.write(f"""# {title}

- Architecture: {arch}
- Trained on: {data}
- How: {how} ({secs:.0f} s on this project's 2-core CPU machine)
- Held-out accuracy (PyTorch, eval mode): **{correct}/{total} = {100 * correct / total:.2f}%**
  on the held-out set in this directory; `spikescan demo` measures the same through the engine.
- Reproduce: `{command}` (torch, spikingjelly and scikit-learn from tools/requirements.txt)
{extra}""")


def save_dir(name, model, config, labels):
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(sd, os.path.join(d, "model.safetensors"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    if labels:
        with open(os.path.join(d, "labels.txt"), "w") as f:
            f.write("\n".join(labels) + "\n")
    return d


def vision(only=None):
    from meta_spikeformer import MetaSpikeFormer
    from PIL import Image
    from spikformer import Spikformer
    xtr, xte, ytr, yte = digits()
    ytr_t, yte_t = torch.from_numpy(ytr).long(), torch.from_numpy(yte).long()
    labels = [str(i) for i in range(10)]
    runs = [
        ("spikformer-digits", 2, {"architecture": "spikformer", "variant": "cifar", "T": 2, "img_size_h": 16,
                                  "img_size_w": 16, "patch_size": 4, "in_channels": 3, "num_classes": 10,
                                  "embed_dims": 64, "num_heads": 4, "mlp_ratios": 4, "depths": 1}, 30),
        ("meta-spikeformer-digits", 4, {"architecture": "meta_spikeformer", "T": 1, "kd": False, "img_size_h": 32,
                                        "img_size_w": 32, "patch_size": 16, "in_channels": 3, "num_classes": 10,
                                        "embed_dim": [16, 32, 48, 64], "num_heads": 4, "mlp_ratios": 4,
                                        "depths": 8, "head_input": "membrane"}, 40),
    ]
    for name, factor, cfg, epochs in runs:
        if only and name != only:
            continue
        torch.manual_seed(0)
        meta = cfg["architecture"] == "meta_spikeformer"
        Model = MetaSpikeFormer if meta else Spikformer
        model = Model(**{k: v for k, v in cfg.items() if k not in ("architecture", "head_input")})
        tr8, te8 = upscale(xtr, factor), upscale(xte, factor)
        print(f"{name}: training on {len(tr8)} images of {tr8.shape[1]}x{tr8.shape[2]}")
        if meta:
            # Frozen, data-initialised BatchNorms (see train()): calibrated on 128 images.
            calibrate_bn(model, as_rgb(tr8[:128]))
        secs = train(model, as_rgb(tr8), ytr_t, epochs, 2e-3, frozen_bn=meta)
        correct, total = accuracy(model, as_rgb(te8), yte_t)
        print(f"{name}: held-out accuracy {correct}/{total}")
        d = save_dir(name, model, cfg, labels)
        save_file({"images": torch.from_numpy(te8).contiguous(), "labels": yte_t.contiguous()},
                  os.path.join(d, "heldout.safetensors"))
        ex = os.path.join(d, "examples")
        os.makedirs(ex, exist_ok=True)
        for i in range(5):
            Image.fromarray(np.repeat(te8[i][:, :, None], 3, axis=2)).save(os.path.join(ex, f"{i}-label-{yte[i]}.png"))
        arch = ("Spikformer (ZK-Zhou/spikformer, CIFAR variant), T=2, 1 block, embed 64, 4 heads" if not meta else
                "Meta-SpikeFormer (Spike-driven Transformer V2), T=1, embed [16, 32, 48, 64], 8 heads→4")
        card(d, f"{name}: handwritten digits", arch,
             f"scikit-learn's 8x8 digits upscaled {factor}x to {tr8.shape[1]}x{tr8.shape[2]} RGB, "
             f"{len(tr8)} training / {total} held-out images (stratified split, random_state=0)",
             f"Adam, lr 2e-3 with cosine decay, {epochs} epochs, batch 64, surrogate gradients" +
             (("; BatchNorms frozen at statistics measured on 128 training images (variance floor 0.05): "
               "batch statistics of the 2x2 attention maps made the gradients overflow") if meta else ""),
             correct, total, secs, "python3 tools/train_bundled.py vision",
             "- Inputs: `heldout.safetensors` (`images` u8 [N, H, W], `labels` i64 [N]) and PNG examples in\n"
             "  `examples/` (`spikescan run --model models/" + name + " --input models/" + name +
             "/examples/0-label-" + str(yte[0]) + ".png`).\n")


def lmu():
    from lmuformer import LMUFormer
    xtr, xte, ytr, yte = digits()
    ytr_t, yte_t = torch.from_numpy(ytr).long(), torch.from_numpy(yte).long()
    tr, te = as_rows(upscale(xtr, 2)), as_rows(upscale(xte, 2))
    labels = [str(i) for i in range(10)]
    for name, spiking, epochs in (("lmuformer-digits", False, 40), ("spiking-lmuformer-digits", True, 40)):
        torch.manual_seed(0)
        cfg = {"architecture": "spiking_lmuformer" if spiking else "lmuformer", "embed_dims": 32, "num_heads": 4,
               "mlp_ratios": 4, "in_channels": 16, "num_classes": 10, "depths": 1, "seq_len": 16, "theta": 16}
        model = LMUFormer(in_channels=16, embed_dims=32, mlp_ratios=4, depths=1, num_classes=10, spiking=spiking,
                          seq_len=16, theta=16)
        print(f"{name}: training on {len(tr)} sequences of 16 frames x 16 features")
        secs = train(model, tr, ytr_t, epochs, 3e-3)
        correct, total = accuracy(model, te, yte_t)
        print(f"{name}: held-out accuracy {correct}/{total}")
        d = save_dir(name, model, cfg, labels)
        save_file({"input": te.contiguous(), "labels": yte_t.contiguous()}, os.path.join(d, "heldout.safetensors"))
        arch = ("Spiking LMUFormer (slmu_rnn_ms_conv1d)" if spiking else "LMUFormer (lmu_rnn_conv1d)") + \
            ", 1 block, embed 32, LMU memory " + ("64" if spiking else "32") + ", θ = 16"
        card(d, f"{name}: digits read row by row", arch,
             "scikit-learn's 8x8 digits upscaled 2x, each 16x16 image read as 16 frames of 16 features "
             f"in [-1, 1]; {len(tr)} training / {total} held-out sequences (stratified split, random_state=0)",
             f"Adam, lr 3e-3 with cosine decay, {epochs} epochs, batch 64" +
             (", surrogate gradients" if spiking else ""),
             correct, total, secs, "python3 tools/train_bundled.py lmu",
             "- Inputs: `heldout.safetensors` (`input` f32 [N, 16 frames, 16], `labels` i64 [N]);\n"
             f"  `spikescan stream --model models/{name} --input FILE` streams one [1, 16, 16] clip.\n")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "vision":
        vision(sys.argv[2] if len(sys.argv) > 2 else None)
    elif what == "lmu":
        lmu()
    elif what == "mamba":
        import train_mamba
        train_mamba.main()
    else:
        raise SystemExit(__doc__)
