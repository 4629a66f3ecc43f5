#!/bin/bash
# The shipped `swupdate` update module (agent/modules/swupdate) driving the
# real SWUpdate 2022.12 (CMS-signed .swu, raw images into file-backed slots)
# and the real bootloader tools on file-backed environments: U-Boot through
# fw_printenv/fw_setenv (an environment made by mkenvimage) and GRUB through
# grub-editenv. Between "boots" the bootloader's choice is emulated: U-Boot's
# bootcount/bootlimit/altbootcmd, and GRUB's one-shot upkeep_try (grub.cfg
# in docs/agent.md).
# The kernel command line (upkeep.slot=A|B) is a file. Steps are called as
# the agent calls them. Skips (exit 77, reason printed) without the tools.
set -u
MODULE=${1:?usage: test_swupdate_module.sh MODULE}
for t in swupdate fw_printenv fw_setenv mkenvimage grub-editenv cpio mke2fs openssl; do
    if ! command -v "$t" >/dev/null 2>&1; then
        echo "SKIP: $t is not installed (apt-get install swupdate libubootenv-tool u-boot-tools grub-common cpio e2fsprogs openssl)"
        exit 77
    fi
done
D=$(mktemp -d "${TMPDIR:-/tmp}/upk-swu-XXXXXX")
trap 'rm -rf "$D"' EXIT
export TMPDIR=$D # SWUpdate's control sockets
FAILS=0
fail() { echo "FAIL [$BL]: $*"; FAILS=$((FAILS + 1)); }
ok() { echo "ok [$BL]: $*"; }

mkcert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$D/$1.key" \
        -out "$D/$1.crt" -days 2 -subj "/CN=$1" \
        -addext "keyUsage=digitalSignature" -addext "extendedKeyUsage=emailProtection" 2>/dev/null
}
mkcert upkeep-swu-test
mkcert someone-else
mkswu() { # name version signer
    local b="$D/s-$1"
    mkdir -p "$b/root/etc"
    echo "release $2" > "$b/root/etc/upkeep-release"
    (
        cd "$b" || exit 1
        mke2fs -q -t ext4 -d root rootfs.ext4 2M
        local sha
        sha=$(sha256sum rootfs.ext4 | cut -d' ' -f1)
        cat > sw-description <<SWD
software = {
  version = "$2";
  hardware-compatibility = [ "1.0" ];
  stable = {
    copy1 = { images: ( { filename = "rootfs.ext4"; device = "@DEV@/a.img"; type = "raw"; sha256 = "$sha"; } ); };
    copy2 = { images: ( { filename = "rootfs.ext4"; device = "@DEV@/b.img"; type = "raw"; sha256 = "$sha"; } ); };
  };
}
SWD
        sed -i "s|@DEV@|$D/dev|g" sw-description
        openssl cms -sign -in sw-description -out sw-description.sig -signer "$D/$3.crt" \
            -inkey "$D/$3.key" -outform DER -nosmimecap -binary
        printf 'sw-description\nsw-description.sig\nrootfs.ext4\n' | cpio -o -H crc > "$D/$1.swu" 2>/dev/null
    ) || { echo "cannot build $1.swu"; exit 1; }
}
mkswu v2 2.0 upkeep-swu-test
mkswu evil 9.0 someone-else

device() { # fresh device for bootloader $BL: slot A holds release 1 and runs
    rm -rf "${D:?}/dev" && mkdir -p "$D/dev/work"
    truncate -s 4M "$D/dev/a.img" "$D/dev/b.img"
    if [ "$BL" = uboot ]; then
        printf 'boot_slot=A\nupgrade_available=0\nbootcount=0\nbootlimit=1\n' > "$D/dev/env.txt"
        mkenvimage -s 0x4000 -o "$D/dev/uboot.env" "$D/dev/env.txt"
        echo "$D/dev/uboot.env 0x0 0x4000" > "$D/dev/fw_env.config"
    else
        grub-editenv "$D/dev/grubenv" create
        grub-editenv "$D/dev/grubenv" set ORDER="A B" A_OK=1 B_OK=0 upkeep_try=
    fi
    export UPK_SETTINGS="{\"bootloader\":\"$BL\",\"fw_env_config\":\"$D/dev/fw_env.config\",\"grubenv\":\"$D/dev/grubenv\",\"key\":\"$D/upkeep-swu-test.crt\",\"hwrevision\":\"upkeep:1.0\",\"cmdline\":\"$D/dev/cmdline\",\"reboot\":\"touch $D/dev/rebooted\"}"
    boot
}

uenv() { fw_printenv -c "$D/dev/fw_env.config" -n "$1" 2>/dev/null; }
genv() { grub-editenv "$D/dev/grubenv" list | sed -n "s/^$1=//p"; }

# The bootloader's choice at power-on, then the kernel command line.
BOOTED=
boot() {
    rm -f "$D/dev/rebooted"
    if [ "$BL" = uboot ]; then
        local slot up count limit
        slot=$(uenv boot_slot) up=$(uenv upgrade_available) count=$(uenv bootcount) limit=$(uenv bootlimit)
        if [ "$up" = 1 ]; then
            count=$((count + 1))
            fw_setenv -c "$D/dev/fw_env.config" bootcount "$count"
            if [ "$count" -gt "$limit" ]; then # altbootcmd: back to the other slot
                [ "$slot" = A ] && slot=B || slot=A
                fw_setenv -c "$D/dev/fw_env.config" boot_slot "$slot"
                fw_setenv -c "$D/dev/fw_env.config" upgrade_available 0
            fi
        fi
        BOOTED=$slot
    else
        # grub.cfg (docs/agent.md): a one-shot upkeep_try is cleared and
        # booted; else the first slot of ORDER whose _OK is 1.
        local try def='' s
        try=$(genv upkeep_try)
        if [ -n "$try" ]; then
            grub-editenv "$D/dev/grubenv" set upkeep_try=
            def=$try
        else
            for s in $(genv ORDER); do
                if [ "$(genv "${s}_OK")" = 1 ]; then def=$s; break; fi
            done
        fi
        BOOTED=$def
    fi
    echo "console=ttyS0 upkeep.slot=$BOOTED" > "$D/dev/cmdline"
}

step() {
    UPK_STEP=$1 UPK_REACHED=${2:-} "$MODULE" "$1" "$D/dev/work" "$D/dev/artifact.part" \
        >> "$D/dev/module.log" 2>&1
}
expect() {
    local want=$1; shift
    step "$@"; local got=$?
    [ "$got" = "$want" ] || { fail "step $* exited $got, expected $want"; tail -20 "$D/dev/module.log"; }
}
slot_holds() { debugfs -R "cat /etc/upkeep-release" "$D/dev/$1" 2>/dev/null | grep -qx "release $2"; }

for BL in uboot grub; do
    # 1. a good update: written into B, try once, boots B, marked good, stays
    f0=$FAILS
    device
    cp "$D/v2.swu" "$D/dev/artifact.part"
    expect 0 download
    slot_holds b.img 2.0 && fail "download (check only) wrote slot B"
    expect 0 install
    slot_holds b.img 2.0 || fail "slot B does not hold release 2 after install"
    slot_holds a.img 2.0 && fail "install wrote the running slot A"
    boot; [ "$BOOTED" = A ] || fail "install alone switched the boot to $BOOTED"
    expect 4 activate
    [ -f "$D/dev/rebooted" ] || fail "activate did not run the reboot command"
    boot; [ "$BOOTED" = B ] || fail "the boot after activation is $BOOTED, expected B"
    expect 0 booted activating
    expect 0 commit
    boot; [ "$BOOTED" = B ] || fail "the boot after commit is $BOOTED"
    boot; [ "$BOOTED" = B ] || fail "the second boot after commit is $BOOTED"
    [ $FAILS = $f0 ] && ok "good update: written into B, booted B, committed, stays on B"

    # 2. the new root filesystem never comes up: the bootloader falls back
    f0=$FAILS
    device
    cp "$D/v2.swu" "$D/dev/artifact.part"
    expect 0 download; expect 0 install; expect 4 activate
    boot; [ "$BOOTED" = B ] || fail "first boot is $BOOTED, expected B"
    boot # B hung before the agent ran
    [ "$BOOTED" = A ] || fail "the bootloader did not fall back to A (booted $BOOTED)"
    expect 3 booted activating
    expect 0 rollback activating
    boot; [ "$BOOTED" = A ] || fail "after the rollback the device booted $BOOTED"
    boot; [ "$BOOTED" = A ] || fail "B was tried again (booted $BOOTED)"
    [ $FAILS = $f0 ] && ok "boot failure: fell back to A, booted says 3, rollback keeps A"

    # 3. boots but fails the health check: marked bad, reboot into A
    f0=$FAILS
    device
    cp "$D/v2.swu" "$D/dev/artifact.part"
    expect 0 download; expect 0 install; expect 4 activate
    boot; expect 0 booted activating
    expect 4 rollback health_check
    boot; [ "$BOOTED" = A ] || fail "the rollback reboot came up in $BOOTED"
    expect 0 rollback health_check
    boot; [ "$BOOTED" = A ] || fail "after the rollback the device booted $BOOTED"
    [ $FAILS = $f0 ] && ok "health failure: B marked bad, rebooted into A"

    # 4. an image signed by another key is refused; nothing written
    f0=$FAILS
    device
    cp "$D/evil.swu" "$D/dev/artifact.part"
    expect 1 download
    expect 1 install
    slot_holds b.img 9.0 && fail "the foreign image reached slot B"
    [ $FAILS = $f0 ] && ok "an image signed by another key is refused"
done
echo "swupdate module: $FAILS failure(s)"
[ $FAILS = 0 ]
