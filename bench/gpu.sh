#!/usr/bin/env bash
# One prepared run on a machine with a real GPU (the `device` tool's machines), in the repo root:
#   - the Vulkan loader: .gl/*.deb carried from here (see the device README) are unpacked;
#   - the binary: target/release/spikescan carried from here (`cargo build --release -p
#     spikescan-cli`; the GPU machine may have no Rust), else built in place;
#   - SpikingJelly for the PyTorch side: .whl/*.whl carried from here, installed to /tmp/site
#     (also gguf's wheel, for the llama.cpp step);
#   - llama.cpp: .llamacpp/node-llama-cpp-vulkan.tar.xz carried from here (made by
#     `python3 tools/bench_llamacpp.py --pack .llamacpp/node-llama-cpp-vulkan.tar.xz`), run by
#     tools/bench_llamacpp.py where the machine has Node.js;
#   - runs `spikescan info`, the kernel benchmarks, Mamba, `spikescan ops` (kernels against
#     their references on this GPU), the vision and LMUFormer benchmarks, and tools/bench_torch.py
#     on CUDA beside each where the machine has PyTorch with CUDA.
# Everything lands in $OUT (the device tool's folder; bench/out elsewhere): gpu.log (all text),
# gpu-spikescan.jsonl, gpu-torch.jsonl and gpu-llamacpp.jsonl (records, appended step by step, so a step stopped by
# its time limit costs only itself). Then, here: `python3 tools/results_md.py` and
# `python3 tools/compare.py` on spikescan's file and each of the others, and record the numbers with the device name in
# bench/RESULTS.md.
# Budget: GPU_SH_BUDGET seconds in all (default 560): each step has its own cap, cut to what is
# left, and steps run in order of what the open issues need first; a step that finds the
# budget spent is skipped and says so. GPU_SH_ONLY (a regex of step names) runs a subset,
# e.g. GPU_SH_ONLY='^(nvidia-smi|info|kernels|ops|mamba)' to re-measure kernels and Mamba.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench/out}
mkdir -p "$out"
log=$out/gpu.log
sj=$out/gpu-spikescan.jsonl
tj=$out/gpu-torch.jsonl
lj=$out/gpu-llamacpp.jsonl
: >"$log"
: >"$sj"
: >"$tj"
: >"$lj"
budget=${GPU_SH_BUDGET:-560}
t_start=$SECONDS
if compgen -G ".gl/*.deb" >/dev/null; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
bin=target/release/spikescan
if [ ! -x "$bin" ]; then
  cargo build --release -q -p spikescan-cli || { echo "no carried binary and no cargo here" | tee -a "$log" >&2; exit 1; }
fi
export SPIKESCAN_BACKEND=vulkan
export PYTHONUNBUFFERED=1

# step NAME CAP_SECONDS COMMAND...: runs COMMAND under min(CAP, what is left of the budget);
# with GPU_SH_ONLY set (an extended regex), only the steps whose names match it run.
only=${GPU_SH_ONLY:-}
step() {
  local name=$1 cap=$2
  shift 2
  if [ -n "$only" ] && ! [[ $name =~ $only ]]; then
    echo "## $name: not selected" >>"$log"
    return 0
  fi
  local left=$((budget - (SECONDS - t_start)))
  if ((left < 10)); then
    echo "## $name: skipped, budget spent" | tee -a "$log"
    return 1
  fi
  ((cap > left)) && cap=$left
  echo "## $name (cap ${cap} s, at $((SECONDS - t_start)) s)" | tee -a "$log"
  local t0=$SECONDS
  timeout -k 5 "$cap" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "## $name: rc $rc, $((SECONDS - t0)) s" | tee -a "$log"
  return "$rc"
}
# sbench NAME CAP ARGS...: `spikescan bench ARGS`, its records appended to gpu-spikescan.jsonl.
sbench() {
  local name=$1 cap=$2
  shift 2
  local f=/tmp/gpu-step.jsonl
  rm -f "$f"
  step "$name" "$cap" "$bin" bench "$@" --out "$f"
  local rc=$?
  [ -f "$f" ] && cat "$f" >>"$sj"
  return "$rc"
}
have_torch=0
if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  have_torch=1
fi
# tbench NAME CAP ARGS...: tools/bench_torch.py ARGS on CUDA, its records appended to gpu-torch.jsonl.
tbench() {
  local name=$1 cap=$2
  shift 2
  if ((!have_torch)); then
    echo "## $name: skipped, no CUDA PyTorch here" | tee -a "$log"
    return 0
  fi
  local f=/tmp/gpu-torch-step.jsonl
  rm -f "$f"
  step "$name" "$cap" python3 tools/bench_torch.py "$@" --json "$f"
  local rc=$?
  [ -f "$f" ] && cat "$f" >>"$tj"
  return "$rc"
}
# lbench NAME CAP ARGS...: tools/bench_llamacpp.py ARGS (llama.cpp's Vulkan backend), its records
# appended to gpu-llamacpp.jsonl; skipped without Node.js or the carried package.
lbench() {
  local name=$1 cap=$2
  shift 2
  local pack=.llamacpp/node-llama-cpp-vulkan.tar.xz
  if ! command -v node >/dev/null || [ ! -f "$pack" ]; then
    echo "## $name: skipped, no Node.js or no $pack here" | tee -a "$log"
    return 0
  fi
  mkdir -p /tmp/llamacpp && tar -xJf "$pack" -C /tmp/llamacpp
  local f=/tmp/gpu-llamacpp-step.jsonl
  rm -f "$f"
  step "$name" "$cap" python3 tools/bench_llamacpp.py --node-dir /tmp/llamacpp --work /tmp/llamacpp-work "$@" --json "$f"
  local rc=$?
  [ -f "$f" ] && cat "$f" >>"$lj"
  return "$rc"
}

step "nvidia-smi" 15 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
step "info" 30 "$bin" info --all
# A machine without a GPU adapter ends here, at once, with what its Vulkan setup looks like.
if ! sed -n '/^## info (/,$p' "$log" | grep -qi "nvidia\|amd\|radeon\|intel\|apple"; then
  {
    echo "## no GPU adapter: the Vulkan setup"
    ls -l /usr/local/nvidia/share/vulkan/icd.d /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>&1
    cat /usr/local/nvidia/share/vulkan/icd.d/*.json 2>&1
    ldconfig -p | grep -i 'vulkan\|nvidia'
    VK_LOADER_DEBUG=error,warn "$bin" info --all
  } 2>&1 | tee -a "$log"
  exit 3
fi
sbench "kernels" 100 --kernels --reps 10
sbench "mamba-130m f32" 70 --mamba mamba-130m --batch 1 --batch 8 --batch 32 --prompt-len 128 --decode-steps 64 --reps 5 --layers
step "ops" 75 "$bin" ops
tbench "torch kernels + mamba-130m" 120 --kernels --mamba mamba-130m --batch 1 --batch 8 --batch 32 --prompt-len 128 --decode-steps 64 --reps 5
sbench "mamba-130m f16" 40 --mamba mamba-130m --batch 1 --batch 8 --batch 32 --prompt-len 128 --decode-steps 64 --reps 5 --dtype f16
sbench "spikformer-8-384 T=1" 40 --vision spikformer-8-384 --t 1 --image-batch 1 --image-batch 32 --reps 3
sbench "spikformer-8-384 T=4" 60 --vision spikformer-8-384 --t 4 --image-batch 1 --image-batch 32 --reps 3 --layers
tbench "torch spikformer-8-384" 50 --vision spikformer-8-384 --t 1 --t 4 --image-batch 1 --image-batch 32 --reps 3
sbench "lmuformers" 40 --lmuformer lmuformer-gsc --lmuformer spiking-lmuformer-gsc --clip-batch 1 --clip-batch 32 --frames 128 --reps 5 --layers
tbench "torch lmuformers" 30 --lmuformer lmuformer-gsc --lmuformer spiking-lmuformer-gsc --clip-batch 1 --clip-batch 32 --reps 5
sbench "meta-spikeformer-8-512 T=1" 40 --vision meta-spikeformer-8-512 --t 1 --image-batch 1 --image-batch 32 --reps 3
sbench "meta-spikeformer-8-512 T=4" 60 --vision meta-spikeformer-8-512 --t 4 --image-batch 1 --image-batch 32 --reps 3 --layers
tbench "torch meta-spikeformer-8-512" 50 --vision meta-spikeformer-8-512 --t 1 --t 4 --image-batch 1 --image-batch 32 --reps 3
sbench "mamba-370m, 1.4b f32" 90 --mamba mamba-370m --mamba mamba-1.4b --batch 1 --batch 8 --batch 32 --prompt-len 128 --decode-steps 64 --reps 3
tbench "torch mamba-370m, 1.4b" 90 --mamba mamba-370m --mamba mamba-1.4b --batch 1 --batch 8 --batch 32 --prompt-len 128 --decode-steps 64 --reps 3
sbench "mamba-1.4b f16" 40 --mamba mamba-1.4b --batch 1 --batch 8 --batch 32 --prompt-len 128 --decode-steps 64 --reps 3 --dtype f16
lbench "llama.cpp mamba-130m" 120 --shape mamba-130m --batch 1 --batch 8 --batch 32 --prompt-len 128 --decode-steps 64 --reps 3
echo "## done at $((SECONDS - t_start)) s" | tee -a "$log"
