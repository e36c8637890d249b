#!/usr/bin/env bash
# One prepared run on a machine with a real GPU (the `device` tool's machines), in the repo root:
#   - the Vulkan loader: .gl/*.deb carried from here (see the device README) are unpacked;
#   - the binary: target/release/spikescan carried from here (`cargo build --release -p
#     spikescan-cli`; the GPU machine may have no Rust), else built in place;
#   - runs `spikescan info`, `spikescan ops` (kernels against their references on this GPU),
#     the kernel, Mamba, LMUFormer and vision benchmarks, then tools/bench_torch.py on CUDA and
#     tools/compare.py where the machine has PyTorch with CUDA; writes bench/out/gpu-*.
# Budget: under 9 minutes (each step has its own timeout; about 20 minutes at the very worst). Record the output, with the device name, in bench/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out
if compgen -G ".gl/*.deb" >/dev/null; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
bin=target/release/spikescan
if [ ! -x "$bin" ]; then
  cargo build --release -q -p spikescan-cli || { echo "no carried binary and no cargo here" >&2; exit 1; }
fi
export SPIKESCAN_BACKEND=vulkan
"$bin" info --all 2>&1 | tee bench/out/gpu-info.txt
timeout 120 "$bin" ops 2>&1 | tee bench/out/gpu-ops.txt
timeout 200 "$bin" bench --kernels --reps 20 --out bench/out/gpu-kernels.jsonl 2>&1 | tee bench/out/gpu-kernels.txt
# Models with --layers: each one's per-layer kernel table from one profiled pass.
timeout 300 "$bin" bench --mamba mamba-130m --mamba mamba-370m --mamba mamba-1.4b --batch 1 --batch 8 --batch 32 --prompt-len 128 \
  --decode-steps 64 --reps 5 --layers --out bench/out/gpu-mamba.jsonl 2>&1 | tee bench/out/gpu-mamba.txt
timeout 60 "$bin" bench --lmuformer lmuformer-gsc --lmuformer spiking-lmuformer-gsc --clip-batch 1 \
  --clip-batch 32 --frames 128 --reps 5 --layers --out bench/out/gpu-lmu.jsonl 2>&1 | tee bench/out/gpu-lmu.txt
timeout 180 "$bin" bench --vision spikformer-8-384 --vision meta-spikeformer-8-512 --t 1 --t 4 \
  --image-batch 1 --image-batch 32 --reps 3 --layers --out bench/out/gpu-vision.jsonl 2>&1 | tee bench/out/gpu-vision.txt
cat bench/out/gpu-{kernels,mamba,lmu,vision}.jsonl > bench/out/gpu-spikescan.jsonl 2>/dev/null
# RESULTS.md's tables (kernels, models, each profiled pass's most expensive layers).
python3 tools/results_md.py bench/out/gpu-spikescan.jsonl > bench/out/gpu-tables.md || true
# The PyTorch side, where this machine has torch with CUDA (nothing can be installed there).
if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  timeout 300 python3 tools/bench_torch.py --kernels --lmuformer lmuformer-gsc --lmuformer spiking-lmuformer-gsc \
    --clip-batch 1 --clip-batch 32 --mamba mamba-130m --mamba mamba-370m --mamba mamba-1.4b --batch 1 --batch 8 --batch 32 \
    --vision spikformer-8-384 --vision meta-spikeformer-8-512 --t 1 --t 4 --image-batch 1 --image-batch 32 \
    --json bench/out/gpu-torch.jsonl 2>&1 | tee bench/out/gpu-torch.txt
  python3 tools/compare.py bench/out/gpu-spikescan.jsonl bench/out/gpu-torch.jsonl --markdown | tee bench/out/gpu-compare.md
else
  echo "no CUDA PyTorch on this machine: the PyTorch side and the ratio table are skipped" | tee bench/out/gpu-compare.md
fi
