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

    python3 tools/reference/make_mamba_fixtures.py
"""
import json
import os

import torch
from safetensors.torch import save_file
from transformers import MambaConfig, MambaForCausalLM

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
CHARS = [chr(c) for c in range(32, 127)] + ["\n"]


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
              os.path.join(out, "io.safetensors"))
    print(f"{name}: vocab {cfg.vocab_size}, greedy {greedy.tolist()}")


def main():
    tied = MambaConfig(vocab_size=len(CHARS) + 1 + 7, hidden_size=64, num_hidden_layers=2, state_size=16, expand=2,
                       conv_kernel=4, use_bias=False, use_conv_bias=True, tie_word_embeddings=True)
    make("mamba-hf-tied", tied, "hf", 7)
    untied = MambaConfig(vocab_size=104, hidden_size=64, num_hidden_layers=3, state_size=16, expand=2, conv_kernel=4,
                         use_bias=False, use_conv_bias=True, tie_word_embeddings=False)
    make("mamba-ssm-untied", untied, "ssm", 8, bf16=True)


if __name__ == "__main__":
    main()
