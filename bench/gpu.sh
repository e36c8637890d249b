#!/usr/bin/env bash
# One prepared run on a machine with a real GPU (the `device` tool's machines), in the repo root:
#   - the Vulkan loader: .gl/*.deb carried from here (see the device README) are unpacked;
#   - the binary: target/release/spikescan carried from here (`cargo build --release -p
#     spikescan-cli`; the GPU machine may have no Rust), else built in place;
#   - runs `spikescan info`, `spikescan ops` (kernels against their references on this GPU),
#     `spikescan bench --kernels` (full shapes, ceilings measured in the same run) and the
#     Mamba model benchmarks, writing bench/out/gpu-*.{txt,jsonl}.
# Budget: well under 8 minutes. Record the output, with the device name, in bench/RESULTS.md.
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
timeout 180 "$bin" bench --kernels --reps 20 --out bench/out/gpu-kernels.jsonl 2>&1 | tee bench/out/gpu-kernels.txt
for preset in mamba-130m mamba-1.4b; do
  timeout 240 "$bin" bench --mamba "$preset" --prompt-len 128 --decode-steps 64 --reps 5 \
    --out "bench/out/gpu-$preset.jsonl" 2>&1 | tee "bench/out/gpu-$preset.txt"
done
SPIKESCAN_PROFILE=1 timeout 60 "$bin" run --model tests/fixtures/meta-spikeformer-exact-t4-kd \
  --input tests/fixtures/meta-spikeformer-exact-t4-kd/io.safetensors 2> bench/out/gpu-profile.txt >/dev/null
tail -25 bench/out/gpu-profile.txt
