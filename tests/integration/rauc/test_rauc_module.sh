#!/bin/bash
# The shipped `rauc` update module (agent/modules/rauc) driving the real rauc
# 1.8 against file-backed slots: a private D-Bus, `rauc service` with
# --override-boot-slot standing in for the boot, and a GRUB environment
# file changed by the real grub-editenv, with GRUB's selection (RAUC's
# documented grub.cfg: ORDER, <slot>_OK, <slot>_TRY, try once) emulated
# between "boots". Steps are called as the agent calls them.
# Skips (exit 77, reason printed) when rauc, grub-editenv, dbus-daemon,
# mksquashfs, mke2fs or openssl are missing.
set -u
MODULE=${1:?usage: test_rauc_module.sh MODULE}
for t in rauc grub-editenv dbus-daemon mksquashfs mke2fs openssl; do
    if ! command -v "$t" >/dev/null 2>&1; then
        echo "SKIP: $t is not installed (apt-get install rauc grub-common dbus squashfs-tools e2fsprogs openssl)"
        exit 77
    fi
done
D=$(mktemp -d "${TMPDIR:-/tmp}/upk-rauc-XXXXXX")
BUS_PID='' SVC_PID=''
cleanup() {
    [ -n "$SVC_PID" ] && kill "$SVC_PID" 2>/dev/null && wait "$SVC_PID" 2>/dev/null
    [ -n "$BUS_PID" ] && kill "$BUS_PID" 2>/dev/null
    rm -rf "$D"
}
trap cleanup EXIT
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
ok() { echo "ok: $*"; }

# ---- keys, two bundles (releases 2 and 3), a bundle signed by another key
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$D/key.pem" \
    -out "$D/cert.pem" -days 2 -subj "/CN=upkeep-rauc-test" 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$D/evil.pem" \
    -out "$D/evil.crt" -days 2 -subj "/CN=someone-else" 2>/dev/null
mkbundle() { # name version key cert
    local b="$D/b-$1"
    mkdir -p "$b/root/etc"
    echo "release $2" > "$b/root/etc/upkeep-release"
    mkdir -p "$b/content"
    mke2fs -q -t ext4 -d "$b/root" "$b/content/rootfs.ext4" 2M
    printf '[update]\ncompatible=upkeep-test\nversion=%s\n[bundle]\nformat=plain\n[image.rootfs]\nfilename=rootfs.ext4\n' \
        "$2" > "$b/content/manifest.raucm"
    rauc bundle --cert="$4" --key="$3" "$b/content" "$D/$1.raucb" >/dev/null 2>&1 || {
        echo "cannot build bundle $1"
        exit 1
    }
}
mkbundle v2 2.0 "$D/key.pem" "$D/cert.pem"
mkbundle evil 9.0 "$D/evil.pem" "$D/evil.crt"

# ---- a private bus for rauc's client and service
cat > "$D/bus.conf" <<XML
<busconfig><type>session</type><listen>unix:path=$D/bus</listen><auth>EXTERNAL</auth>
<policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy></busconfig>
XML
BUS_PID=$(dbus-daemon --config-file="$D/bus.conf" --fork --print-pid) || exit 1
export DBUS_SESSION_BUS_ADDRESS="unix:path=$D/bus" DBUS_STARTER_BUS_TYPE=session

device() { # fresh device: slot A holds release 1 and booted, B empty
    rm -rf "${D:?}/dev" && mkdir -p "$D/dev/work" "$D/dev/data"
    truncate -s 4M "$D/dev/a.img" "$D/dev/b.img"
    grub-editenv "$D/dev/grubenv" create
    grub-editenv "$D/dev/grubenv" set ORDER="A B" A_OK=1 B_OK=0 A_TRY=0 B_TRY=0
    cat > "$D/dev/system.conf" <<CONF
[system]
compatible=upkeep-test
bootloader=grub
grubenv=$D/dev/grubenv
data-directory=$D/dev/data
activate-installed=${1:-false}
[keyring]
path=$D/cert.pem
[slot.rootfs.0]
device=$D/dev/a.img
type=raw
bootname=A
[slot.rootfs.1]
device=$D/dev/b.img
type=raw
bootname=B
CONF
    export UPK_SETTINGS="{\"conf\":\"$D/dev/system.conf\",\"reboot\":\"touch $D/dev/rebooted\"}"
    boot
}

genv() { grub-editenv "$D/dev/grubenv" list | sed -n "s/^$1=//p"; }

# GRUB's slot selection from RAUC's documented grub.cfg, on the env file.
grub_select() {
    local order a_ok b_ok a_try b_try def='' s ok try
    order=$(genv ORDER) a_ok=$(genv A_OK) b_ok=$(genv B_OK) a_try=$(genv A_TRY) b_try=$(genv B_TRY)
    for s in $order; do
        if [ "$s" = A ]; then ok=$a_ok try=$a_try a_try=1; else ok=$b_ok try=$b_try b_try=1; fi
        if [ "$ok" = 1 ] && [ "$try" = 0 ]; then def=$s; break; fi
    done
    [ -z "$def" ] && def=A
    if [ "$def" = A ]; then
        [ "$a_ok" = 1 ] && [ "$a_try" = 1 ] && a_try=0
        [ "$b_ok" = 1 ] && [ "$b_try" = 1 ] && b_try=0
    fi
    grub-editenv "$D/dev/grubenv" set ORDER="$order" A_OK="$a_ok" B_OK="$b_ok" A_TRY="$a_try" B_TRY="$b_try"
    echo "$def"
}

# A boot: GRUB picks the slot, the system comes up in it (rauc service told
# which slot booted, as the kernel command line would).
BOOTED=
boot() {
    if [ -n "$SVC_PID" ]; then kill "$SVC_PID" 2>/dev/null; wait "$SVC_PID" 2>/dev/null; fi
    rm -f "$D/dev/rebooted"
    BOOTED=$(grub_select)
    rauc service -c "$D/dev/system.conf" --override-boot-slot="$BOOTED" > "$D/dev/service.log" 2>&1 &
    SVC_PID=$!
    local up=0
    for _ in $(seq 1 100); do
        rauc status -c "$D/dev/system.conf" >/dev/null 2>&1 && { up=1; break; }
        sleep 0.05
    done
    [ $up = 1 ] || { echo "rauc service did not come up"; cat "$D/dev/service.log"; exit 1; }
    # The boot-time mark-good unit of docs/agent.md: only when no update is
    # under way (the module's record in the agent's work dir).
    [ -f "$D/dev/work/rauc-slot" ] || rauc status -c "$D/dev/system.conf" mark-good booted >/dev/null 2>&1
}
end_update() { rm -rf "$D/dev/work" && mkdir -p "$D/dev/work"; } # the agent, after a final state

step() { # step [reached]; prints nothing, returns the module's exit code
    UPK_STEP=$1 UPK_REACHED=${2:-} "$MODULE" "$1" "$D/dev/work" "$D/dev/artifact.part" \
        >> "$D/dev/module.log" 2>&1
}
expect() { # code step [reached]
    local want=$1; shift
    step "$@"; local got=$?
    [ "$got" = "$want" ] || { fail "step $* exited $got, expected $want"; cat "$D/dev/module.log"; }
}
slot_holds() { # image release
    debugfs -R "cat /etc/upkeep-release" "$D/dev/$1" 2>/dev/null | grep -qx "release $2"
}

# ---- 1. a good update: installed into B, reboot, boots B, marked good, stays on B
device
cp "$D/v2.raucb" "$D/dev/artifact.part"
expect 0 download
expect 0 install
slot_holds b.img 2.0 || fail "slot B does not hold release 2 after install"
[ "$(genv ORDER)" = "A B" ] || fail "install switched the boot order: $(genv ORDER)"
expect 4 activate
[ -f "$D/dev/rebooted" ] || fail "activate did not run the reboot command"
[ "$(genv ORDER)" = "B A" ] || fail "activate did not put B first: $(genv ORDER)"
boot; [ "$BOOTED" = B ] || fail "first boot after activation is $BOOTED, expected B"
expect 0 booted activating
expect 0 commit
end_update
boot; [ "$BOOTED" = B ] || fail "the boot after commit is $BOOTED, expected B"
boot; [ "$BOOTED" = B ] || fail "the second boot after commit is $BOOTED, expected B"
[ "$(genv B_OK)" = 1 ] || fail "B not good after commit"
[ $FAILS = 0 ] && ok "good update: installed into B, booted B, committed, stays on B"

# ---- 2. the new root filesystem never comes up: GRUB falls back to A
f0=$FAILS
device
cp "$D/v2.raucb" "$D/dev/artifact.part"
expect 0 download; expect 0 install; expect 4 activate
boot; [ "$BOOTED" = B ] || fail "first boot is $BOOTED, expected B"
boot # B hung before the agent ran (watchdog, panic): tried once, so A
[ "$BOOTED" = A ] || fail "GRUB did not fall back to A (booted $BOOTED)"
expect 3 booted activating
expect 0 rollback activating
end_update
[ "$(genv B_OK)" = 0 ] || fail "rollback did not mark B bad"
boot; [ "$BOOTED" = A ] || fail "after the rollback the device booted $BOOTED"
boot; [ "$BOOTED" = A ] || fail "B was tried again (booted $BOOTED)"
[ $FAILS = $f0 ] && ok "boot failure: GRUB fell back to A, booted says 3, rollback marks B bad, stays on A"

# ---- 3. boots but fails the health check: marked bad, reboot into A
f0=$FAILS
device
cp "$D/v2.raucb" "$D/dev/artifact.part"
expect 0 download; expect 0 install; expect 4 activate
boot; expect 0 booted activating
expect 4 rollback health_check
[ -f "$D/dev/rebooted" ] || fail "rollback from the new slot did not reboot"
boot; [ "$BOOTED" = A ] || fail "rollback reboot came up in $BOOTED"
expect 3 booted health_check
expect 0 rollback health_check
end_update
boot; [ "$BOOTED" = A ] || fail "after the rollback the device booted $BOOTED"
[ $FAILS = $f0 ] && ok "health failure: B marked bad, rebooted into A, rollback finished there"

# ---- 4. a bundle signed by another key is refused at download; nothing written
f0=$FAILS
device
cp "$D/evil.raucb" "$D/dev/artifact.part"
expect 1 download
slot_holds b.img 9.0 && fail "the foreign bundle reached slot B"
[ $FAILS = $f0 ] && ok "a bundle not signed for RAUC's keyring is refused at download"

# ---- 5. a system.conf that switches on install is refused (install is staging only)
f0=$FAILS
device true
cp "$D/v2.raucb" "$D/dev/artifact.part"
expect 1 install
[ "$(genv ORDER)" = "A B" ] || fail "the refused install switched slots"
[ $FAILS = $f0 ] && ok "activate-installed=true is refused by install"

echo "rauc module: $FAILS failure(s)"
[ $FAILS = 0 ]
