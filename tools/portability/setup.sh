#!/usr/bin/env bash
# Fetches what the portability check needs, without a system install, into
# target/portability/: Mesa 25's lavapipe from Debian's bookworm-backports suite (Dawn refuses
# Debian 12's Mesa 22.3: "shaderUniform*ArrayDynamicIndexing required") unpacked with
# `dpkg -x`, and npm's `webgpu` (dawn.node, Chrome's WebGPU implementation and its WGSL
# compiler Tint). Idempotent: a second run only checks. Prints the environment to source.
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD/target/portability"
mesa="$root/mesa"
apt="$root/apt"
mkdir -p "$root" "$apt/lists/partial" "$apt/cache/archives/partial" "$mesa"

if [ ! -f "$mesa/icd.json" ]; then
  echo "portability: fetching Mesa 25 lavapipe from bookworm-backports" >&2
  # The machine's own Debian mirror (deb822 .sources or one-line lists), bookworm's suite.
  # (A missing file is not an error here: either layout may be absent.)
  mirror=$( { awk '/^URIs:/ {u = $2} /^Suites:/ && / bookworm( |$)/ {print u; exit}' \
                /etc/apt/sources.list.d/*.sources 2>/dev/null || true
              awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' \
                /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } \
            | sed -n 1p )
  [ -n "$mirror" ] || { echo "portability: no Debian bookworm mirror in this machine's apt sources" >&2; exit 2; }
  echo "deb $mirror bookworm-backports main" > "$apt/sources.list"
  opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=-"
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
        -o "APT::Default-Release=bookworm-backports" -o "Debug::NoLocking=1")
  apt-get "${opts[@]}" -qq update
  (cd "$apt" && rm -f ./*.deb && apt-get "${opts[@]}" -qq download \
    mesa-vulkan-drivers/bookworm-backports mesa-libgallium/bookworm-backports \
    libdrm2/bookworm-backports libdrm-amdgpu1/bookworm-backports)
  for deb in "$apt"/*.deb; do dpkg -x "$deb" "$mesa"; done
  lvp=$(find "$mesa" -name 'libvulkan_lvp.so' | head -n1)
  [ -n "$lvp" ] || { echo "portability: libvulkan_lvp.so not found in the packages" >&2; exit 2; }
  cat > "$mesa/icd.json" <<JSON
{"file_format_version": "1.0.1", "ICD": {"library_path": "$lvp", "api_version": "1.4.0"}}
JSON
fi

node_dir="$root/node"
if [ ! -f "$node_dir/node_modules/webgpu/package.json" ]; then
  echo "portability: installing npm webgpu 0.6.2 (dawn.node)" >&2
  mkdir -p "$node_dir"
  (cd "$node_dir" && npm install --no-save --no-audit --no-fund --loglevel=error webgpu@0.6.2 >&2)
fi

lib=$(dirname "$(find "$mesa" -name 'libvulkan_lvp.so' | head -n1)")
libdir=$(dirname "$(find "$mesa" -name 'libdrm.so.2*' | head -n1)")
echo "export VK_ICD_FILENAMES=$mesa/icd.json"
echo "export VK_DRIVER_FILES=$mesa/icd.json"
echo "export LD_LIBRARY_PATH=$lib:$libdir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
echo "export NODE_PATH=$node_dir/node_modules"
