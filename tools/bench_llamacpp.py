"""llama.cpp beside spikescan on the same device and the same Mamba weights: writes a Mamba
checkpoint directory as GGUF (PyPI `gguf`), times llama.cpp on it through the prebuilt Vulkan
and CPU libraries of npm's node-llama-cpp (tools/llamacpp.mjs), runs `spikescan generate` on
the same directory to check that both engines pick the same greedy tokens, and writes the
timings as `spikescan bench` records, so tools/compare.py prints spikescan ÷ llama.cpp.

    python3 tools/bench_llamacpp.py --shape mamba-130m --batch 1 --batch 8 \\
        --prompt-len 8 --decode-steps 6 --json bench/out/llamacpp.jsonl
    target/release/spikescan bench --mamba mamba-130m --batch 1 --batch 8 \\
        --prompt-len 8 --decode-steps 6 --json > bench/out/spikescan.jsonl
    python3 tools/compare.py bench/out/spikescan.jsonl bench/out/llamacpp.jsonl

--shape writes a checkpoint of that preset's shape with seeded random weights (the weights
do not change a speed; the bench's own random weights are others); --model takes a real one
(mamba_ssm or Hugging Face layout, f32/f16/bf16 safetensors). --pack writes the
node package with only its Vulkan binaries, to carry to a GPU machine without a registry. --backend vulkan (default) or
cpu; on lavapipe, ggml-vulkan needs GGML_VK_VISIBLE_DEVICES=0 (set here unless given), since
it skips CPU devices otherwise. Records: "<name> prompt" [B=b L=l] and "<name> decode" [B=b]
in tokens/s, the median of --reps prompts and of the decode steps after the first two, and
"<name> greedy tokens equal to spikescan's" (a fraction, which compare.py leaves out).

Needs numpy, safetensors, gguf (pip) and Node.js with npm: node-llama-cpp (--npm-version) is
installed into --node-dir on first use. Nothing here is needed by the tests or CI.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# d_model, layers of the official presets (vocab 50280, d_state 16, expand 2, d_conv 4), as in
# `spikescan bench --mamba` and tools/bench_torch.py.
SHAPES = {"mamba-130m": (768, 24), "mamba-370m": (1024, 48), "mamba-790m": (1536, 48),
          "mamba-1.4b": (2048, 48)}


def fail(msg):
    raise SystemExit(f"bench_llamacpp.py: {msg}")


def random_checkpoint(out, shape, seed):
    """A Hugging Face-layout Mamba directory of `shape` with seeded random weights whose
    activations stay in range: A_log = log(1..16), dt from 1e-3 to 0.1, uniform projections."""
    from safetensors.numpy import save_file
    d, n_layer = SHAPES[shape]
    di, ds, dc, vocab = 2 * d, 16, 4, 50280
    dt_rank = -(-d // 16)
    rng = np.random.default_rng(seed)
    uni = lambda shp, fan: (rng.uniform(-1, 1, shp) / np.sqrt(fan)).astype(np.float32)  # noqa: E731
    w = {"backbone.embeddings.weight": (rng.standard_normal((vocab, d)) * 0.02).astype(np.float32),
         "backbone.norm_f.weight": np.ones(d, np.float32)}
    for i in range(n_layer):
        p = f"backbone.layers.{i}."
        dt = np.exp(rng.uniform(np.log(1e-3), np.log(0.1), di))
        w |= {
            p + "norm.weight": np.ones(d, np.float32),
            p + "mixer.in_proj.weight": uni((2 * di, d), d),
            p + "mixer.conv1d.weight": uni((di, 1, dc), dc),
            p + "mixer.conv1d.bias": uni((di,), dc),
            p + "mixer.x_proj.weight": uni((dt_rank + 2 * ds, di), di),
            p + "mixer.dt_proj.weight": uni((di, dt_rank), dt_rank),
            p + "mixer.dt_proj.bias": (dt + np.log(-np.expm1(-dt))).astype(np.float32),
            p + "mixer.A_log": np.log(np.tile(np.arange(1, ds + 1), (di, 1))).astype(np.float32),
            p + "mixer.D": np.ones(di, np.float32),
            p + "mixer.out_proj.weight": uni((d, di), di),
        }
    assert all(v.dtype == np.float32 for v in w.values())
    out.mkdir(parents=True, exist_ok=True)
    save_file(w, str(out / "model.safetensors"))
    cfg = {"model_type": "mamba", "hidden_size": d, "num_hidden_layers": n_layer, "vocab_size": vocab,
           "state_size": ds, "expand": 2, "conv_kernel": dc, "time_step_rank": dt_rank,
           "use_bias": False, "use_conv_bias": True, "layer_norm_epsilon": 1e-5,
           "tie_word_embeddings": True}
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    return out


def load_checkpoint(model):
    """(config, tensors as f32 numpy arrays) of a Mamba directory."""
    from safetensors.numpy import load_file
    cfg_path = model / "config.json"
    if not cfg_path.is_file():
        fail(f"{cfg_path}: no config.json")
    cfg = json.loads(cfg_path.read_text())
    files = sorted(model.glob("*.safetensors"))
    files = [f for f in files if f.name != "heldout.safetensors"]
    if not files:
        fail(f"{model}: no .safetensors weights")
    t = {}
    for f in files:
        for k, v in load_file(str(f)).items():
            t[k.removeprefix("model.")] = v.astype(np.float32)
    return cfg, t


def write_gguf(model, out):
    """The directory's weights as an f32 GGUF of llama.cpp's Mamba-1 layout: A stored as
    -exp(A_log), the conv weight as [d_inner, d_conv], a tied head left to token_embd, and a
    placeholder vocabulary (ids only: both engines are driven by ids)."""
    import gguf
    cfg, t = load_checkpoint(model)
    get = lambda *ks, default=None: next((cfg[k] for k in ks if k in cfg), default)  # noqa: E731
    d = get("hidden_size", "d_model")
    n_layer = get("num_hidden_layers", "n_layer")
    emb = t.get("backbone.embeddings.weight")
    if d is None or n_layer is None or emb is None:
        fail(f"{model}: not a Mamba checkpoint (hidden_size, num_hidden_layers, backbone.embeddings)")
    di = get("intermediate_size", "d_inner", default=2 * d)
    if di != 2 * d:
        fail(f"{model}: llama.cpp's Mamba needs d_inner = 2 d_model, got {di}")
    ds = get("state_size", "d_state", default=16)
    dt_rank = get("time_step_rank", "dt_rank", default=-(-d // 16))
    if dt_rank == "auto":
        dt_rank = -(-d // 16)
    # The vocabulary padded to a multiple of 8, as llama.cpp's converter does.
    vocab = -(-emb.shape[0] // 8) * 8
    if vocab != emb.shape[0]:
        emb = np.concatenate([emb, np.zeros((vocab - emb.shape[0], d), np.float32)])
    arch = gguf.MODEL_ARCH.MAMBA
    names = gguf.get_tensor_name_map(arch, n_layer)
    w = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[arch])
    w.add_name(model.name)
    w.add_context_length(2**20)
    w.add_embedding_length(d)
    w.add_feed_forward_length(0)
    w.add_head_count(0)
    w.add_block_count(n_layer)
    w.add_ssm_conv_kernel(get("conv_kernel", "d_conv", default=4))
    w.add_ssm_inner_size(di)
    w.add_ssm_state_size(ds)
    w.add_ssm_time_step_rank(dt_rank)
    w.add_layer_norm_rms_eps(get("layer_norm_epsilon", "rms_norm_eps", default=1e-5))
    w.add_ssm_dt_b_c_rms(False)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    # A SentencePiece-type list (llama.cpp's SPM vocabulary wants the 256 byte tokens).
    if vocab < 256:
        fail(f"{model}: a vocabulary of {vocab} has no room for llama.cpp's 256 byte tokens")
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<0x{i:02X}>" for i in range(256)] + [f"<t{i}>" for i in range(256, vocab)])
    w.add_token_scores([0.0] * vocab)
    w.add_token_types([gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * (vocab - 256))
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    for k, v in sorted(t.items()):
        if k == "lm_head.weight" and np.array_equal(v[: emb.shape[0]], emb[: v.shape[0]]):
            continue
        if k == "backbone.embeddings.weight":
            v = emb
        stem, _, suffix = k.rpartition(".")
        if suffix in ("weight", "bias"):
            name = names.get_name(stem)
            name = name and f"{name}.{suffix}"
        else:
            name = names.get_name(k)
        if name is None:
            fail(f"{model}: tensor {k} has no llama.cpp name")
        if k.endswith(".A_log"):
            v = -np.exp(v)
        if ".conv1d.weight" in k:
            v = v.reshape(v.shape[0], v.shape[-1])
        w.add_tensor(name, np.ascontiguousarray(v))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return vocab


def node_module(node_dir, version):
    """node-llama-cpp's entry point, installed into node_dir (with its prebuilt binaries)."""
    entry = node_dir / "node_modules" / "node-llama-cpp" / "dist" / "index.js"
    if not entry.is_file():
        if shutil.which("npm") is None:
            fail("npm not found (Node.js is needed for llama.cpp's prebuilt libraries)")
        node_dir.mkdir(parents=True, exist_ok=True)
        print(f"installing node-llama-cpp@{version} into {node_dir}", file=sys.stderr)
        subprocess.run(["npm", "install", "--prefix", str(node_dir), "--no-audit", "--no-fund",
                        "--ignore-scripts", f"node-llama-cpp@{version}"], check=True)
    return entry


def pack(node_dir, version, out):
    """node_dir's node-llama-cpp with only its Linux x64 Vulkan binaries, as a .tar.xz to carry
    to a GPU machine that has Node.js but no registry (bench/gpu.sh unpacks it)."""
    import tarfile
    node_module(node_dir, version)
    keep_platform = "linux-x64-vulkan"

    def keep(info):
        parts = Path(info.name).parts
        if len(parts) > 2 and parts[1] == "@node-llama-cpp" and parts[2] != keep_platform:
            return None
        if parts[-1] == "gitRelease.bundle":  # llama.cpp's source, for local builds
            return None
        return info

    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:xz") as t:
        t.add(node_dir / "node_modules", arcname="node_modules", filter=keep)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)


def spikescan_greedy(exe, model, prompt, steps):
    """spikescan's greedy continuation of `prompt` on the checkpoint directory."""
    out = subprocess.run([str(exe), "--quiet", "--json", "generate", "--model", str(model),
                          "--prompt-ids", ",".join(map(str, prompt)), "--max-new-tokens", str(steps)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"spikescan generate failed: {out.stderr.strip()}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["tokens"][r["prompt_tokens"]:]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--pack", type=Path, metavar="TAR_XZ",
                     help="only write node-llama-cpp with its Vulkan binaries to this file (for bench/gpu.sh)")
    src.add_argument("--shape", choices=sorted(SHAPES), help="random weights of this preset's shape")
    src.add_argument("--model", type=Path, help="a Mamba checkpoint directory")
    ap.add_argument("--name", help="record name (default: the shape, or the directory's name)")
    ap.add_argument("--backend", choices=["vulkan", "cpu"], default="vulkan")
    ap.add_argument("--batch", type=int, action="append", help="batch sizes (default: 1)")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--decode-steps", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spikescan", type=Path, default=ROOT / "target" / "release" / "spikescan",
                    help="the binary for the greedy check (skipped with --no-check)")
    ap.add_argument("--no-check", action="store_true", help="skip the greedy comparison")
    ap.add_argument("--node-dir", type=Path, default=ROOT / "target" / "llamacpp-node")
    ap.add_argument("--npm-version", default="3.21.1")
    ap.add_argument("--work", type=Path, help="keep the checkpoint and GGUF here (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="append the records to this file (JSON lines)")
    a = ap.parse_args(argv)
    if a.pack:
        return pack(a.node_dir, a.npm_version, a.pack)
    batches = a.batch or [1]
    if min(batches) < 1 or a.prompt_len < 2 or a.decode_steps < 3 or a.reps < 1:
        fail("--batch >= 1, --prompt-len >= 2, --decode-steps >= 3 and --reps >= 1")
    name = a.name or a.shape or a.model.name
    work = a.work or Path(tempfile.mkdtemp(prefix="bench-llamacpp-"))
    work.mkdir(parents=True, exist_ok=True)
    model = random_checkpoint(work / name, a.shape, a.seed) if a.shape else a.model
    gguf_path = work / f"{name}.f32.gguf"
    vocab = write_gguf(model, gguf_path)
    cfg, _ = load_checkpoint(model)
    real_vocab = cfg.get("vocab_size", vocab)
    entry = node_module(a.node_dir, a.npm_version)
    env = dict(os.environ)
    if a.backend == "vulkan":
        env.setdefault("GGML_VK_VISIBLE_DEVICES", "0")
    prompt = [(i * 7919 + a.seed) % min(real_vocab, 50000) for i in range(a.prompt_len)]
    records, check = [], None
    for b in batches:
        args = {"module": str(entry), "gguf": str(gguf_path), "gpu": a.backend if a.backend != "cpu" else False,
                "batch": b, "prompt": prompt, "steps": a.decode_steps, "reps": a.reps, "threads": a.threads}
        out = subprocess.run(["node", str(ROOT / "tools" / "llamacpp.mjs"), json.dumps(args)],
                             capture_output=True, text=True, env=env)
        if out.returncode != 0:
            fail(f"llama.cpp ({a.backend}, B={b}) failed:\n{out.stderr.strip()[-2000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        dev = {"adapter": r["device"] or a.backend, "backend": f"llama.cpp {a.backend}",
               "driver": f"node-llama-cpp {a.npm_version}", "host": platform.node()}
        rec = lambda n, p, v, u: dict(suite="model", name=f"{name} {n}", params=p, value=v, unit=u, **dev)  # noqa: E731
        records.append(rec("prompt", f"B={b} L={a.prompt_len}", b * a.prompt_len / statistics.median(r["prompt_s"]),
                           "tokens/s"))
        records.append(rec("decode", f"B={b}", b / statistics.median(r["decode_s"][2:]), "tokens/s"))
        if check is None and not a.no_check:
            if not a.spikescan.is_file():
                fail(f"{a.spikescan}: no spikescan binary for the greedy check (build it, or --no-check)")
            ours = spikescan_greedy(a.spikescan, model, prompt, a.decode_steps)
            theirs = r["tokens"][0]
            same = sum(1 for x, y in zip(ours, theirs) if x == y)
            first = next((i for i, (x, y) in enumerate(zip(ours, theirs)) if x != y), None)
            check = same / max(len(theirs), 1)
            print(f"greedy: {same} of {len(theirs)} ids equal"
                  + ("" if first is None else f", first difference at step {first}: spikescan {ours[first]}, "
                     f"llama.cpp {theirs[first]}"), file=sys.stderr)
            print(f"  spikescan {ours}\n  llama.cpp {theirs}", file=sys.stderr)
            records.append(rec("greedy tokens equal to spikescan's", f"L={a.prompt_len} steps={a.decode_steps}",
                               check, "fraction"))
    for r in records:
        line = json.dumps(r, ensure_ascii=False)
        print(line)
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            with open(a.json, "a", encoding="utf-8") as f:
                f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
