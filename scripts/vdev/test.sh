#!/usr/bin/env bash
# ctest vdev_fallback: builds the virtual device (cached in OUT_DIR) and runs
# the bootloader fallback demo on it. Skips (exit 77, reason printed) when a
# tool is missing. Usage: scripts/vdev/test.sh OUT_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for t in qemu-system-x86_64 mmdebstrap grub-mkimage grub-editenv sfdisk mke2fs debugfs bc; do
    command -v "$t" > /dev/null 2>&1 || { echo "SKIP: $t is not installed (scripts/deps.sh installs it)"; exit 77; }
done
[ -f /usr/lib/grub/i386-pc/boot.img ] || { echo "SKIP: grub-pc-bin is not installed"; exit 77; }
t0=$(date +%s)
"$here/build-image.sh" "${1:?usage: test.sh OUT_DIR}"
echo "vdev: image ready in $(($(date +%s) - t0)) s"
"$here/fallback-demo.sh" "$1"
