#!/usr/bin/env bash
# The bootloader fallback on the virtual device (issue 19, scenario 2 at the
# bootloader level): a copy of build/vdev/disk.img whose slot B has an init
# that fails (the kernel panics: "Attempted to kill init"), GRUB's
# environment armed to try B once (ORDER="B A", B_TRY=0, as `rauc status
# mark-active` leaves it), then two boots of the real GRUB and the real
# kernel under QEMU (KVM when it works, else TCG): the first tries B and
# panics, the second falls back to A. Partitions are edited from the host
# with debugfs and grub-editenv, never mounted. Prints each boot's time and
# the console lines that tell what the device did.
# Usage: scripts/vdev/fallback-demo.sh [VDEV_DIR] (default build/vdev).
set -euo pipefail
V=$(cd "${1:-build/vdev}" && pwd)
[ -f "$V/disk.img" ] || { echo "no $V/disk.img: run scripts/vdev/build-image.sh first"; exit 1; }
W=$(mktemp -d "${TMPDIR:-/tmp}/upk-vdev-XXXXXX")
trap 'rm -rf "$W"' EXIT
cp --sparse=always "$V/disk.img" "$W/disk.img"
read -r -a starts <<< "$(sfdisk -d "$W/disk.img" | sed -n 's/.*start= *\([0-9]*\), *size= *\([0-9]*\).*/\1:\2/p' | tr '\n' ' ')"
part_out() { local s=${starts[$1-1]%%:*} n=${starts[$1-1]##*:}; dd if="$W/disk.img" of="$W/p$1.img" bs=512 skip="$s" count="$n" status=none; }
part_in() { local s=${starts[$1-1]%%:*}; dd if="$W/p$1.img" of="$W/disk.img" bs=512 seek="$s" conv=notrunc status=none; }

# Slot B: an init that fails.
part_out 3
printf '#!/bin/sh\necho "UPKEEP-VDEV slot B: init fails on purpose"\nexit 1\n' > "$W/init"
debugfs -w -R "rm /sbin/init" "$W/p3.img" > /dev/null 2>&1 || true
debugfs -w -f - "$W/p3.img" > /dev/null 2>&1 <<CMDS
cd /sbin
write $W/init init
sif /sbin/init mode 0100755
CMDS
part_in 3
# GRUB: try B once.
part_out 1
debugfs -R "dump /grub/grubenv $W/grubenv" "$W/p1.img" > /dev/null 2>&1
grub-editenv "$W/grubenv" set ORDER="B A" A_OK=1 B_OK=1 A_TRY=0 B_TRY=0
debugfs -w -f - "$W/p1.img" > /dev/null 2>&1 <<CMDS
rm /grub/grubenv
cd /grub
write $W/grubenv grubenv
CMDS
part_in 1

accel="-accel tcg"
if [ -w /dev/kvm ] && [ "${UPK_VDEV_KVM:-auto}" != off ]; then
    # /dev/kvm may exist and still run nothing (nested virtualization): a
    # 15 s probe decides.
    timeout 15 qemu-system-x86_64 -enable-kvm -m 256 -display none -no-reboot -serial file:"$W/probe.log" \
        -kernel "$(ls "$V"/rootfs/boot/vmlinuz-* | head -n 1)" -append "console=ttyS0 panic=-1" > /dev/null 2>&1 || true
    if grep -aq "Linux version" "$W/probe.log" 2> /dev/null; then accel="-enable-kvm -cpu host"; fi
fi
echo "vdev: accelerator: $accel"
boot() { # N: one power-on until the guest resets (-no-reboot) or marks its boot
    local n=$1 t0 t1
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    timeout 240 qemu-system-x86_64 $accel -m 1024 -smp 1 -display none -no-reboot \
        -drive file="$W/disk.img",format=raw,if=virtio,cache=none -serial file:"$W/boot$n.log" &
    local q=$!
    while kill -0 $q 2> /dev/null && ! grep -aq "UPKEEP-VDEV booted" "$W/boot$n.log" 2> /dev/null; do sleep 0.2; done
    t1=$(date +%s.%N)
    kill $q 2> /dev/null || true
    wait $q 2> /dev/null || true
    echo "---- boot $n: $(echo "$t1 - $t0" | bc | cut -c1-5) s"
    grep -aE "GRUB:|Booting|UPKEEP-VDEV|Kernel panic|Attempted to kill init" "$W/boot$n.log" | tr -d '\033' |
        sed 's/\[H\[J\[1;1H//g; s/^/    /' | cut -c1-150
}
boot 1
boot 2
grep -aq "UPKEEP-VDEV booted slot=A" "$W/boot2.log" || { echo "FAIL: the second boot did not fall back to A"; exit 1; }
grep -aq "Attempted to kill init\|UPKEEP-VDEV slot B" "$W/boot1.log" || { echo "FAIL: the first boot did not try B"; exit 1; }
echo "vdev fallback: ok (B tried once and panicked; GRUB fell back to A)"
