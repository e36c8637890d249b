"""Writes the Mamba fixtures into tests/fixtures/ from transformers' MambaForCausalLM (its
pure-PyTorch path) with small random configurations:

- mamba-hf-tied/: Hugging Face format (config.json with model_type "mamba", key
  backbone.embeddings.weight), lm_head tied to the embedding, plus a character-level
  tokenizer.json;
- mamba-ssm-untied/: mamba_ssm format (config.json with d_model / n_layer / ssm_cfg and
  pad_vocab_size_multiple, key backbone.embedding.weight) with its own lm_head.weight,
  stored in bf16 (converted to f32 at load).

io.safetensors: `input_ids` (i64 [2, 12]), `logits` (f32 [2, 12, vocab]), and `greedy`
(i64 [1, 12 + 8]: prompt row 0 and 8 greedy tokens from transformers' generate).

- falcon-mamba-tiny/: transformers' FalconMambaForCausalLM (`model_type` "falcon_mamba":
  Mamba-1 blocks whose x_proj outputs dt, B and C each pass a weightless RMSNorm with
  `mixer_rms_eps`), Hugging Face format with the config written by transformers itself
  (`to_json_string`), the head tied as transformers' default, the same character tokenizer.
  io.safetensors also holds `step_logits` (f32 [8, vocab]): the logits behind each greedy
  token from transformers' cached decode path. The script prints how far the logits are from
  the same weights run without the three norms (transformers' MambaForCausalLM; recorded as
  `without_norms_rel_l2`), so the fixture shows they matter.

- mamba-130m-precision/: the mamba-130m shape (24 layers, d_model 768, vocab 50280) with
  weights too large to commit, so they are made by a counter-based generator that the Rust
  test rebuilds bit for bit (`weights()` here, `precision_weights` in tests/mamba.rs):
  every large matrix is (k - 2^23) * scale with k the top 24 bits of splitmix64 of the key's
  FNV-1a hash and the element index, an exact product rounded once to f32. The small
  per-channel vectors that need transcendental functions (A_log's row, dt_proj.bias) are
  stored. The reference is transformers' model run in float64; `logits_f64` keeps every
  8th vocabulary column of its prompt logits, and the metadata records how far PyTorch's own
  float32 run is from it (`torch_f32_rel_l2`): the engine must be no farther.

The source (transformers' `models/mamba/modeling_mamba.py`, its version) is recorded in
each io.safetensors' metadata.

    python3 tools/reference/make_mamba_fixtures.py                 # every fixture
    python3 tools/reference/make_mamba_fixtures.py --falcon-only   # falcon-mamba-tiny only
    python3 tools/reference/make_mamba_fixtures.py --precision-only
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from transformers import FalconMambaConfig, FalconMambaForCausalLM, MambaConfig, MambaForCausalLM

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
CHARS = [chr(c) for c in range(32, 127)] + ["\n"]
SOURCE = {"source_repo": "huggingface/transformers", "source_file": "src/transformers/models/mamba/modeling_mamba.py",
          "source_commit": f"transformers {transformers.__version__} (PyPI)"}
M64 = (1 << 64) - 1


def fnv1a(key):
    h = 0xCBF29CE484222325
    for b in key.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def counter_uniform(key, n, bound):
    """n values in [-bound, bound): (k - 2^23) * scale, k = top 24 bits of
    splitmix64(fnv1a(key) + (i + 1) * golden), scale = f32(bound / 2^23); exact in f64."""
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a(key)) + (np.arange(n, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    k = (z >> np.uint64(40)).astype(np.int64) - (1 << 23)
    scale = np.float64(np.float32(bound / (1 << 23)))
    return (k.astype(np.float64) * scale).astype(np.float32)


def precision_weights(cfg, a_log_row, dt_bias):
    """The mamba-130m-shaped state dict (Hugging Face keys, tied head)."""
    d, di, n, r, k = cfg.hidden_size, cfg.intermediate_size, cfg.state_size, cfg.time_step_rank, cfg.conv_kernel
    # Uniform with the std of transformers' init: normal(0, initializer_range = 0.1) for the
    # embedding, in_proj and x_proj; torch's default (bound fan_in^-1/2) for out_proj and the
    # conv; dt_proj's U(+-dt_rank^-1/2); conv bias zero.
    std = 0.1 * 3 ** 0.5

    def u(key, shape, bound):
        return torch.from_numpy(counter_uniform(key, int(np.prod(shape)), bound).reshape(shape))

    sd = {"backbone.embeddings.weight": u("backbone.embeddings.weight", (cfg.vocab_size, d), std),
          "backbone.norm_f.weight": torch.ones(d)}
    for i in range(cfg.num_hidden_layers):
        p = f"backbone.layers.{i}."
        sd[p + "norm.weight"] = torch.ones(d)
        sd[p + "mixer.in_proj.weight"] = u(p + "mixer.in_proj.weight", (2 * di, d), std)
        sd[p + "mixer.conv1d.weight"] = u(p + "mixer.conv1d.weight", (di, 1, k), k ** -0.5)
        sd[p + "mixer.conv1d.bias"] = torch.zeros(di)
        sd[p + "mixer.x_proj.weight"] = u(p + "mixer.x_proj.weight", (r + 2 * n, di), std)
        sd[p + "mixer.dt_proj.weight"] = u(p + "mixer.dt_proj.weight", (di, r), r ** -0.5)
        sd[p + "mixer.dt_proj.bias"] = dt_bias[i].clone()
        sd[p + "mixer.A_log"] = a_log_row.repeat(di, 1)
        sd[p + "mixer.D"] = torch.ones(di)
        sd[p + "mixer.out_proj.weight"] = u(p + "mixer.out_proj.weight", (d, di), di ** -0.5)
    return sd


def make_precision(name="mamba-130m-precision", prompt_len=32, stride=8):
    cfg = MambaConfig(vocab_size=50280, hidden_size=768, num_hidden_layers=24, state_size=16, expand=2, conv_kernel=4,
                      use_bias=False, use_conv_bias=True, tie_word_embeddings=True)
    gen = torch.Generator().manual_seed(130)
    a_log_row = torch.log(torch.arange(1, cfg.state_size + 1, dtype=torch.float64)).float()
    # The official dt init: dt ~ exp(U(log 1e-3, log 1e-1)), bias = softplus^-1(dt).
    dt = torch.exp(torch.rand(cfg.num_hidden_layers, cfg.intermediate_size, generator=gen, dtype=torch.float64)
                   * (np.log(0.1) - np.log(1e-3)) + np.log(1e-3)).clamp_min(1e-4)
    dt_bias = (dt + torch.log(-torch.expm1(-dt))).float()
    ids = torch.randint(0, cfg.vocab_size, (1, prompt_len), generator=gen)
    sd = precision_weights(cfg, a_log_row, dt_bias)
    model = MambaForCausalLM(cfg).eval()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    with torch.no_grad():
        l32 = model(ids).logits.double()
        model64 = model.double()
        l64 = model64(ids).logits
    cols = l64[..., ::stride]
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    per_pos = [rel(l32[0, t], l64[0, t]) for t in range(prompt_len)]
    meta = dict(SOURCE, torch_f32_rel_l2=f"{rel(l32[..., ::stride], cols):.6e}",
                torch_f32_rel_l2_all_columns=f"{rel(l32, l64):.6e}", column_stride=str(stride),
                torch_f32_rel_l2_first_position=f"{per_pos[0]:.6e}", torch_f32_rel_l2_last_position=f"{per_pos[-1]:.6e}")
    out = os.path.join(ROOT, name)
    os.makedirs(out, exist_ok=True)
    config = {"model_type": "mamba", "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
              "vocab_size": cfg.vocab_size, "state_size": cfg.state_size, "expand": cfg.expand,
              "conv_kernel": cfg.conv_kernel, "time_step_rank": cfg.time_step_rank, "use_bias": cfg.use_bias,
              "use_conv_bias": cfg.use_conv_bias, "layer_norm_epsilon": cfg.layer_norm_epsilon,
              "tie_word_embeddings": True}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    save_file({"input_ids": ids.contiguous(), "logits_f64": cols.float().contiguous(), "A_log_row": a_log_row,
               "dt_bias": dt_bias.contiguous()}, os.path.join(out, "io.safetensors"), metadata=meta)
    print(f"{name}: PyTorch f32 vs f64 logits relative L2 {meta['torch_f32_rel_l2']} "
          f"(position 0: {per_pos[0]:.2e}, last: {per_pos[-1]:.2e})")


def tokenizer_json():
    from tokenizers import Tokenizer, decoders, models

    vocab = {"[UNK]": 0}
    vocab.update({c: i + 1 for i, c in enumerate(CHARS)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tok.decoder = decoders.Fuse()
    return tok.to_str()


def make(name, cfg, layout, seed, bf16=False):
    torch.manual_seed(seed)
    model = MambaForCausalLM(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 97, (2, 12), generator=gen)
    with torch.no_grad():
        logits = model(ids).logits.float()
        greedy = model.generate(ids[:1], max_new_tokens=8, do_sample=False)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    out = os.path.join(ROOT, name)
    os.makedirs(out, exist_ok=True)
    if layout == "hf":
        config = {"model_type": "mamba", "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
                  "vocab_size": cfg.vocab_size, "state_size": cfg.state_size, "expand": cfg.expand,
                  "conv_kernel": cfg.conv_kernel, "time_step_rank": cfg.time_step_rank, "use_bias": cfg.use_bias,
                  "use_conv_bias": cfg.use_conv_bias, "layer_norm_epsilon": cfg.layer_norm_epsilon,
                  "tie_word_embeddings": cfg.tie_word_embeddings}
        with open(os.path.join(out, "tokenizer.json"), "w") as f:
            f.write(tokenizer_json())
    else:
        sd = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in sd.items()}
        config = {"d_model": cfg.hidden_size, "n_layer": cfg.num_hidden_layers, "vocab_size": 100, "ssm_cfg": {},
                  "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8,
                  "tie_embeddings": False}
    if bf16:
        sd = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in sd.items()}
        # The reference must see the weights the engine loads.
        ref = {k.replace("backbone.embedding.", "backbone.embeddings."): v.float() for k, v in sd.items()}
        model.load_state_dict(ref, strict=False)
        with torch.no_grad():
            logits = model(ids).logits.float()
            greedy = model.generate(ids[:1], max_new_tokens=8, do_sample=False)
    if layout == "ssm":
        # mamba_ssm's generate samples from the first vocab_size logits only (the padded rows
        # never win); transformers' generate knows only the padded size: decode by hand.
        seq = ids[:1]
        with torch.no_grad():
            for _ in range(8):
                nxt = model(seq).logits[:, -1, : config["vocab_size"]].argmax(-1, keepdim=True)
                seq = torch.cat([seq, nxt], dim=1)
        greedy = seq
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    save_file(sd, os.path.join(out, "model.safetensors"))
    save_file({"input_ids": ids.contiguous(), "logits": logits.contiguous(), "greedy": greedy.contiguous()},
              os.path.join(out, "io.safetensors"), metadata=SOURCE)
    print(f"{name}: vocab {cfg.vocab_size}, greedy {greedy.tolist()}")


def make_falcon(name="falcon-mamba-tiny", seed=11):
    cfg = FalconMambaConfig(vocab_size=len(CHARS) + 1 + 7, hidden_size=64, num_hidden_layers=2, state_size=16,
                            expand=2, conv_kernel=4, use_bias=False, use_conv_bias=True)
    cfg.architectures = ["FalconMambaForCausalLM"]
    assert cfg.tie_word_embeddings and cfg.mixer_rms_eps == 1e-6
    torch.manual_seed(seed)
    model = FalconMambaForCausalLM(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 97, (2, 12), generator=gen)
    # The RMS of dt, B and C before their norms (far from 1: the norms change them).
    rms = {}

    def hook(layer):
        def f(_module, _inputs, out):
            r, n = cfg.time_step_rank, cfg.state_size
            parts = torch.split(out, [r, n, n], dim=-1)
            rms[layer] = [p.pow(2).mean(-1).sqrt().mean().item() for p in parts]
        return f

    handles = [blk.mixer.x_proj.register_forward_hook(hook(i)) for i, blk in enumerate(model.backbone.layers)]
    with torch.no_grad():
        logits = model(ids).logits.float()
    for h in handles:
        h.remove()
    with torch.no_grad():
        res = model.generate(ids[:1], max_new_tokens=8, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
    greedy = res.sequences
    # The logits behind each greedy token, from transformers' cached decode path (its
    # recurrent-form mixer): the first from the prompt, the others from one-token steps.
    step_logits = torch.cat([t.float() for t in res.logits], dim=0)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    sd.pop("lm_head.weight", None)
    # The same weights without the three norms: transformers' Mamba.
    plain_cfg = MambaConfig(**{k: v for k, v in cfg.to_dict().items() if k not in ("model_type", "mixer_rms_eps")})
    plain = MambaForCausalLM(plain_cfg).eval()
    missing, unexpected = plain.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    plain.tie_weights()
    with torch.no_grad():
        without = plain(ids).logits.float()
    norms_effect = ((without - logits).norm() / logits.norm()).item()
    out = os.path.join(ROOT, name)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        f.write(cfg.to_json_string())
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        f.write(tokenizer_json())
    save_file(sd, os.path.join(out, "model.safetensors"))
    meta = dict(SOURCE, source_file="src/transformers/models/falcon_mamba/modeling_falcon_mamba.py",
                without_norms_rel_l2=f"{norms_effect:.6e}")
    save_file({"input_ids": ids.contiguous(), "logits": logits.contiguous(), "greedy": greedy.contiguous(),
               "step_logits": step_logits.contiguous()}, os.path.join(out, "io.safetensors"), metadata=meta)
    print(f"{name}: vocab {cfg.vocab_size}, greedy {greedy.tolist()}")
    print(f"{name}: RMS of (dt, B, C) before the norms per layer {rms}; logits without the norms are "
          f"{norms_effect:.3e} (relative L2) away")


def main():
    if "--falcon-only" in sys.argv:
        return make_falcon()
    tied = MambaConfig(vocab_size=len(CHARS) + 1 + 7, hidden_size=64, num_hidden_layers=2, state_size=16, expand=2,
                       conv_kernel=4, use_bias=False, use_conv_bias=True, tie_word_embeddings=True)
    if "--precision-only" in sys.argv:
        return make_precision()
    make("mamba-hf-tied", tied, "hf", 7)
    untied = MambaConfig(vocab_size=104, hidden_size=64, num_hidden_layers=3, state_size=16, expand=2, conv_kernel=4,
                         use_bias=False, use_conv_bias=True, tie_word_embeddings=False)
    make("mamba-ssm-untied", untied, "ssm", 8, bf16=True)
    make_falcon()
    make_precision()


if __name__ == "__main__":
    main()
