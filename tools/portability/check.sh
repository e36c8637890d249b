#!/usr/bin/env bash
# The portability gate, without a GPU: every shader variant
#   1. exported by examples/export_shaders.rs (WGSL for Tint, naga's SPIR-V, a manifest);
#   2. naga's SPIR-V of every pipeline validated by spirv-val (Debian's spirv-tools,
#      installed when missing);
#   3. compiled by Tint and built into pipelines by Dawn (npm webgpu, on Mesa 25's lavapipe)
#      under the adapter's limits and WebGPU's default limits, and a few kernels dispatched
#      and compared (tint.mjs).
# naga's MSL, HLSL and GLSL writers run in `cargo test` (crates/runtime/tests/backends.rs).
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tools/portability
out=target/portability/export

# (Assigned first: a failing setup must stop the gate, which `eval "$(…)"` would hide.)
env=$("$here/setup.sh")
eval "$env"
cargo run -q -p spikescan-runtime --example export_shaders -- "$out"

if ! command -v spirv-val >/dev/null; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "portability: run as root or install sudo to install spirv-tools" >&2; exit 1; }
    SUDO=sudo
  fi
  echo "portability: installing spirv-tools (spirv-val)" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq spirv-tools >/dev/null
fi
spv_total=0
spv_failed=0
for f in "$out"/spv/*.spv; do
  spv_total=$((spv_total + 1))
  if ! msg=$(spirv-val --target-env vulkan1.1 "$f" 2>&1); then
    spv_failed=$((spv_failed + 1))
    echo "FAIL spirv-val $(basename "$f"): $msg" >&2
  fi
done
echo "spirv-val: $((spv_total - spv_failed)) of $spv_total SPIR-V pipelines valid (vulkan1.1)"

# Dawn warns that it caps two limits of lavapipe's; nothing to act on.
set +e
node "$here/tint.mjs" "$out" target/portability/node/node_modules/webgpu/index.js 2>&1 \
  | grep -v '^Warning: max.*artificially reduced'
status=${PIPESTATUS[0]}
set -e
[ "$spv_failed" = 0 ] && [ "$status" = 0 ]
