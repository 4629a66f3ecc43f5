#!/usr/bin/env bash
# Builds the virtual A/B device of issue 19 from Debian packages, cached under
# build/vdev/: a bookworm root filesystem (mmdebstrap: kernel, systemd, rauc,
# the agent's libraries), made into ext4 slot images with `mke2fs -d` (no
# mounting), a boot partition with GRUB's environment and grub.cfg (RAUC's
# try-once script), a data partition, and a BIOS GRUB (boot.img + core.img
# written into the disk image with dd, no grub-install). Prints how long
# each part took. Usage: scripts/vdev/build-image.sh [OUT_DIR] (default
# build/vdev). Needs root only for mmdebstrap's chroot (or unshare mode).
set -euo pipefail
OUT=${1:-build/vdev}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
t() { date +%s; }
T_ALL=$(t)

# ---- 1. the root filesystem (cached)
if [ ! -d "$OUT/rootfs" ]; then
    T=$(t)
    rm -rf "$OUT/rootfs.tmp"
    nice -n 10 mmdebstrap --variant=minbase --quiet \
        --include=linux-image-amd64,systemd-sysv,udev,kmod,dbus,rauc,grub-common,e2fsprogs,iproute2,libpaho-mqtt1.3,libmbedcrypto7,libcjson1,libuv1,libzstd1,libssl3,ca-certificates \
        --customize-hook='echo upkeep-vdev > "$1/etc/hostname"' \
        --customize-hook='chroot "$1" passwd -d root' \
        bookworm "$OUT/rootfs.tmp" http://deb.debian.org/debian
    mv "$OUT/rootfs.tmp" "$OUT/rootfs"
    echo "vdev: rootfs in $(($(t) - T)) s ($(du -sm "$OUT/rootfs" | cut -f1) MiB)"
fi
KVER=$(basename "$(ls "$OUT"/rootfs/boot/vmlinuz-* | head -n 1)" | sed 's/^vmlinuz-//')

# ---- 2. what the device runs on top: a boot marker on the console
R=$OUT/rootfs
cat > "$R/usr/local/sbin/upkeep-vdev-mark" <<'SH'
#!/bin/sh
slot=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^rauc.slot=//p')
echo "UPKEEP-VDEV booted slot=$slot release=$(cat /etc/upkeep-release 2>/dev/null) uptime=$(cut -d' ' -f1 /proc/uptime)" > /dev/console
SH
chmod 755 "$R/usr/local/sbin/upkeep-vdev-mark"
cat > "$R/etc/systemd/system/upkeep-vdev-mark.service" <<'UNIT'
[Unit]
Description=upkeep virtual device: boot marker on the console
After=local-fs.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/upkeep-vdev-mark
[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/upkeep-vdev-mark.service \
    "$R/etc/systemd/system/multi-user.target.wants/upkeep-vdev-mark.service"
echo "1.0.0" > "$R/etc/upkeep-release"
printf '/dev/vda4 /var/lib/upkeep ext4 defaults 0 2\n' > "$R/etc/fstab"
mkdir -p "$R/var/lib/upkeep"

# ---- 3. partitions as files, without mounting
T=$(t)
mkdir -p "$OUT/bootfs/grub"
cat > "$OUT/bootfs/grub/grub.cfg" <<CFG
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
set ORDER="A B"
set A_OK=0
set B_OK=0
set A_TRY=0
set B_TRY=0
load_env
set default=0
set chosen=""
for SLOT in \$ORDER; do
    if [ "\$SLOT" == "A" ]; then INDEX=0; OK=\$A_OK; TRY=\$A_TRY; A_TRY=1; fi
    if [ "\$SLOT" == "B" ]; then INDEX=1; OK=\$B_OK; TRY=\$B_TRY; B_TRY=1; fi
    if [ "\$OK" -eq 1 -a "\$TRY" -eq 0 ]; then default=\$INDEX; chosen=\$SLOT; break; fi
done
if [ "\$default" -eq 0 ]; then
    if [ "\$A_OK" -eq 1 -a "\$A_TRY" -eq 1 ]; then A_TRY=0; fi
    if [ "\$B_OK" -eq 1 -a "\$B_TRY" -eq 1 ]; then B_TRY=0; fi
fi
save_env A_TRY A_OK B_TRY B_OK ORDER
echo "GRUB: ORDER=\$ORDER A_OK=\$A_OK A_TRY=\$A_TRY B_OK=\$B_OK B_TRY=\$B_TRY -> entry \$default"
menuentry "Slot A" {
    linux (hd0,msdos2)/boot/vmlinuz-$KVER root=/dev/vda2 rauc.slot=A console=ttyS0 quiet panic=5
    initrd (hd0,msdos2)/boot/initrd.img-$KVER
}
menuentry "Slot B" {
    linux (hd0,msdos3)/boot/vmlinuz-$KVER root=/dev/vda3 rauc.slot=B console=ttyS0 quiet panic=5
    initrd (hd0,msdos3)/boot/initrd.img-$KVER
}
CFG
grub-editenv "$OUT/bootfs/grub/grubenv" create
grub-editenv "$OUT/bootfs/grub/grubenv" set ORDER="A B" A_OK=1 B_OK=1 A_TRY=0 B_TRY=0
rm -f "$OUT"/p*.img
mke2fs -q -t ext2 -d "$OUT/bootfs" "$OUT/p1.img" 32M
nice -n 10 mke2fs -q -t ext4 -d "$R" "$OUT/p2.img" 1200M
cp --sparse=always "$OUT/p2.img" "$OUT/p3.img"
mkdir -p "$OUT/datafs"
mke2fs -q -t ext4 -d "$OUT/datafs" "$OUT/p4.img" 128M
echo "vdev: partitions in $(($(t) - T)) s"

# ---- 4. the disk: MBR, four partitions, BIOS GRUB in the MBR gap
T=$(t)
grub-mkimage -O i386-pc -o "$OUT/core.img" -p '(hd0,msdos1)/grub' \
    biosdisk part_msdos ext2 normal configfile linux echo test loadenv serial terminal
[ "$(stat -c %s "$OUT/core.img")" -lt $((2047 * 512)) ] || { echo "core.img too big"; exit 1; }
rm -f "$OUT/disk.img"
truncate -s 2700M "$OUT/disk.img"
sfdisk -q "$OUT/disk.img" <<PART
label: dos
start=2048, size=32M, type=83, bootable
size=1200M, type=83
size=1200M, type=83
size=128M, type=83
PART
starts=$(sfdisk -d "$OUT/disk.img" | sed -n 's/.*start= *\([0-9]*\).*/\1/p')
i=1
for s in $starts; do
    dd if="$OUT/p$i.img" of="$OUT/disk.img" bs=512 seek="$s" conv=notrunc,sparse status=none
    i=$((i + 1))
done
dd if=/usr/lib/grub/i386-pc/boot.img of="$OUT/disk.img" bs=440 count=1 conv=notrunc status=none
dd if="$OUT/core.img" of="$OUT/disk.img" bs=512 seek=1 conv=notrunc status=none
rm -f "$OUT"/p*.img
echo "vdev: disk.img in $(($(t) - T)) s"
echo "vdev: image build took $(($(t) - T_ALL)) s"
