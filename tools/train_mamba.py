"""Trains models/mamba-pydoc: a small Mamba language model on the text of Python's own
`pydoc_data.topics` (the help() topics that ship with CPython), with a byte-level BPE
tokenizer trained by `tokenizers` on the same text.

    python3 tools/train_bundled.py mamba

The model is trained with a compact PyTorch Mamba (mamba_simple's block: in_proj, causal
depthwise conv1d + SiLU, x_proj, softplus dt_proj, the selective scan as a loop over tokens,
SiLU gate, out_proj; RMSNorm pre-norm residual blocks) under Hugging Face's
MambaForCausalLM key names, because transformers' CPU fallback trains ~100x slower here. Before
saving, transformers' MambaForCausalLM loads the weights and must give the same logits. Saved
in Hugging Face format (config.json with model_type "mamba", tied embeddings); the last 5% of
the text is held out and the card reports its per-token loss as the engine also measures it.
"""
import torch.nn as nn
import json
import math
import os
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(__file__), "..", "models", "mamba-pydoc")
VOCAB = 1024
SEQ = 64
EVAL_WINDOWS = 24


def corpus():
    import pydoc_data.topics as t
    return "\n\n".join(t.topics[k].strip() for k in sorted(t.topics))


def tokenizer(text):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text], trainer)
    return tok


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Mixer(nn.Module):
    def __init__(self, d_model, d_state=16, expand=2, d_conv=4):
        super().__init__()
        d = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        self.d_state = d_state
        self.in_proj = nn.Linear(d_model, 2 * d, bias=False)
        self.conv1d = nn.Conv1d(d, d, d_conv, groups=d, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(d, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d, bias=True)
        self.out_proj = nn.Linear(d, d_model, bias=False)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d, 1))
        self.D = nn.Parameter(torch.ones(d))
        # mamba_simple's dt initialisation: softplus(bias) log-uniform in [1e-3, 0.1].
        dt = torch.exp(torch.rand(d) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)

    def forward(self, h):
        bsz, length, _ = h.shape
        x, z = self.in_proj(h).chunk(2, dim=-1)
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :length]).transpose(1, 2)  # [B, L, D]
        dt, b, c = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt))  # [B, L, D]
        a = -torch.exp(self.A_log)  # [D, N]
        da = torch.exp(dt.unsqueeze(-1) * a)  # [B, L, D, N]
        dbx = (dt * x).unsqueeze(-1) * b.unsqueeze(2)  # [B, L, D, N]
        state = torch.zeros(bsz, x.shape[-1], self.d_state)
        ys = []
        # unbind, not indexing: the backward of da[:, t] would materialise a full-size
        # gradient per token.
        for da_t, dbx_t, c_t in zip(da.unbind(1), dbx.unbind(1), c.unbind(1)):
            state = da_t * state + dbx_t
            ys.append((state * c_t.unsqueeze(1)).sum(-1))
        y = torch.stack(ys, dim=1) + x * self.D
        return self.out_proj(y * F.silu(z))


class Layer(nn.Module):
    def __init__(self, d_model):
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.mixer = Mixer(d_model)


class Backbone(nn.Module):
    def __init__(self, vocab, d_model, n_layer):
        super().__init__()
        self.embeddings = nn.Embedding(vocab, d_model)
        self.layers = nn.ModuleList([Layer(d_model) for _ in range(n_layer)])
        self.norm_f = RMSNorm(d_model)


class TinyMamba(nn.Module):
    """MambaForCausalLM's keys: backbone.embeddings, backbone.layers.i.{norm, mixer.*},
    backbone.norm_f; the head is tied to the embedding."""

    def __init__(self, vocab, d_model, n_layer):
        super().__init__()
        self.backbone = Backbone(vocab, d_model, n_layer)
        nn.init.normal_(self.backbone.embeddings.weight, std=0.02)

    def forward(self, ids):
        h = self.backbone.embeddings(ids)
        for layer in self.backbone.layers:
            h = h + layer.mixer(layer.norm(h))
        return self.backbone.norm_f(h) @ self.backbone.embeddings.weight.T


def main(steps=int(os.environ.get("MAMBA_STEPS", "1000"))):
    from transformers import MambaConfig, MambaForCausalLM
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    text = corpus()
    tok = tokenizer(text)
    ids = torch.tensor(tok.encode(text).ids, dtype=torch.long)
    split = int(len(ids) * 0.95)
    train_ids, held = ids[:split], ids[split:]
    print(f"mamba-pydoc: {len(text)} characters, {len(ids)} tokens (vocab {tok.get_vocab_size()})")
    cfg = MambaConfig(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=4, state_size=16, expand=2,
                      conv_kernel=4, use_bias=False, use_conv_bias=True, tie_word_embeddings=True)
    model = TinyMamba(VOCAB, cfg.hidden_size, cfg.num_hidden_layers)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(1)
    batch = 16
    t0 = time.time()
    model.train()
    for step in range(steps):
        starts = torch.randint(0, len(train_ids) - SEQ - 1, (batch,), generator=gen)
        x = torch.stack([train_ids[s:s + SEQ + 1] for s in starts])
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  step {step:>5}/{steps}  loss {loss.item():.3f}  ({time.time() - t0:.0f} s)", flush=True)
    secs = time.time() - t0
    model.eval()
    # Held-out loss over consecutive windows of SEQ tokens (the engine measures the same).
    # The first EVAL_WINDOWS windows of the held-out text (a quick check for the demo).
    windows = held[: (len(held) - 1) // SEQ * SEQ + 1]
    n = min((len(windows) - 1) // SEQ, EVAL_WINDOWS)
    x = torch.stack([windows[i * SEQ:(i + 1) * SEQ] for i in range(n)])
    y = torch.stack([windows[i * SEQ + 1:(i + 1) * SEQ + 1] for i in range(n)])
    with torch.no_grad():
        nll = F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1)).item()
        # transformers' MambaForCausalLM with these weights must agree (the saved format).
        hf = MambaForCausalLM(cfg).eval()
        missing, unexpected = hf.load_state_dict(model.state_dict(), strict=False)
        assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
        probe = x[:2, :16]
        ref = hf(probe).logits
        diff = ((ref - model(probe)).norm() / ref.norm()).item()
        assert diff < 1e-4, f"TinyMamba and transformers disagree: {diff}"
        print(f"transformers' MambaForCausalLM agrees: relative L2 {diff:.2e}")
        seq = torch.tensor([tok.encode("The with statement").ids])
        for _ in range(40):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    text_out = tok.decode(seq[0].tolist())
    print(f"mamba-pydoc: held-out loss {nll:.4f} (perplexity {math.exp(nll):.1f}); greedy: {text_out!r}")
    os.makedirs(ROOT, exist_ok=True)
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(sd, os.path.join(ROOT, "model.safetensors"))
    config = {"model_type": "mamba", "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
              "vocab_size": cfg.vocab_size, "state_size": cfg.state_size, "expand": cfg.expand,
              "conv_kernel": cfg.conv_kernel, "time_step_rank": cfg.time_step_rank, "use_bias": cfg.use_bias,
              "use_conv_bias": cfg.use_conv_bias, "layer_norm_epsilon": cfg.layer_norm_epsilon,
              "tie_word_embeddings": True}
    with open(os.path.join(ROOT, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    tok.save(os.path.join(ROOT, "tokenizer.json"))
    save_file({"input_ids": x.contiguous(), "labels": y.contiguous()}, os.path.join(ROOT, "heldout.safetensors"))
    with open(os.path.join(ROOT, "README.md"), "w") as f:
        f.write(f"""# mamba-pydoc: a small Mamba language model of Python's help topics

- Architecture: Mamba (Hugging Face MambaForCausalLM layout), 4 layers, d_model 128, d_state 16,
  expand 2, tied embeddings, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters.
- Tokenizer: byte-level BPE, vocabulary {VOCAB}, trained with `tokenizers` on the same text
  (`tokenizer.json`).
- Trained on: the `pydoc_data.topics` module that ships with CPython {'.'.join(map(str, __import__('sys').version_info[:3]))}
  ({len(text)} characters, {len(ids)} tokens); the last 5% of the tokens are held out.
- How: AdamW, one-cycle lr 3e-3, {steps} steps of 16 windows of {SEQ} tokens ({secs:.0f} s on this
  project's 2-core CPU machine).
- Held-out loss (PyTorch): **{nll:.4f} nats/token** (perplexity {math.exp(nll):.1f}) over
  the first {n} windows of {SEQ} held-out tokens (`heldout.safetensors`: `input_ids`, `labels`); `spikescan demo`
  measures the same through the engine.
- Greedy continuation of "The with statement" (PyTorch): `{text_out!r}`
- Reproduce: `python3 tools/train_bundled.py mamba` (torch, transformers and tokenizers from
  tools/requirements.txt).
""")
    print(f"wrote {ROOT} ({secs:.0f} s)")


if __name__ == "__main__":
    main()
