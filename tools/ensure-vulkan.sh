#!/usr/bin/env bash
# Makes sure a Vulkan driver is installed. With no Vulkan ICD on the machine, installs Mesa's
# software driver (lavapipe, Debian/Ubuntu package mesa-vulkan-drivers). Idempotent.
set -euo pipefail
have_icd() {
  compgen -G "/usr/share/vulkan/icd.d/*.json" >/dev/null || compgen -G "/etc/vulkan/icd.d/*.json" >/dev/null
}
if have_icd && ldconfig -p 2>/dev/null | grep -q libvulkan.so.1; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "ensure-vulkan: no Vulkan driver found and no apt-get; install your GPU's Vulkan driver" \
       "(or Mesa's lavapipe) and the Vulkan loader (libvulkan1)." >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "ensure-vulkan: run as root or install sudo to install mesa-vulkan-drivers" >&2; exit 1; }
  SUDO=sudo
fi
echo "ensure-vulkan: no Vulkan driver found; installing Mesa's software driver (lavapipe)..." >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
have_icd || { echo "ensure-vulkan: mesa-vulkan-drivers installed but no ICD file appeared" >&2; exit 1; }
