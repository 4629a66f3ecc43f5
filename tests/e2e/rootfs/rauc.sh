#!/usr/bin/env bash
# Root filesystem A/B updates end to end (issue 19) without a VM: mosquitto +
# plugin, `upkeep serve`, the operator CLI and the real upkeep-agent with the
# shipped rauc module driving the real rauc 1.8 on a "device" made of
# files: two raw slot images, a GRUB environment changed by the real
# grub-editenv, a private D-Bus with `rauc service` told which slot booted.
# A reboot is emulated: the agent is SIGKILLed (the system went down), GRUB's
# choice is made from the environment (RAUC's documented grub.cfg, try once),
# rauc service restarts in the chosen slot, the boot id changes, and the
# agent starts again unless the slot "does not boot".
#   1. good update: installed into B, reboot, boots B, health check passes,
#      marked good, committed; the next boot stays on B
#   2. a slot that never reaches the agent: GRUB falls back to A, the agent
#      reports rolled_back BOOT_FAILED, the campaign halts
#   3. boots but fails the health check: marked bad, reboot into A,
#      rolled_back HEALTH_FAILED
#   4. power cuts while the slot is written and right after the bootloader
#      was armed: back on a consistent slot, the update ends committed
# What this cannot show (a VM can): a real kernel and init on the slot, and
# power cuts that lose what the guest had not flushed.
. "$(dirname "$0")/../fleet/common.sh"
for t in rauc grub-editenv dbus-daemon mksquashfs mke2fs debugfs openssl; do
    command -v "$t" > /dev/null 2>&1 || {
        echo "SKIP: $t is not installed (scripts/deps.sh installs it)"
        exit 77
    }
done
fl_broker_start
fl_serve_start 200
MOD_DIR="$e2e_root/agent/modules"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$FL_DIR/rauc.key" -out "$FL_DIR/rauc.crt" -days 2 -subj "/CN=upkeep-e2e" 2> /dev/null

# bundle NAME VERSION: a RAUC bundle whose rootfs says "release VERSION".
bundle() { # NAME VERSION [MIB]
    local b="$FL_DIR/bundle-$1"
    mkdir -p "$b/root/etc" "$b/content"
    echo "release $2" > "$b/root/etc/upkeep-release"
    [ -z "${3:-}" ] || head -c "$(($3 * 1024 * 1024 / 2))" /dev/urandom > "$b/root/filler"
    mke2fs -q -t ext4 -d "$b/root" "$b/content/rootfs.ext4" "${3:-2}M"
    printf '[update]\ncompatible=upkeep-e2e\nversion=%s\n[bundle]\nformat=plain\n[image.rootfs]\nfilename=rootfs.ext4\n' \
        "$2" > "$b/content/manifest.raucm"
    rauc bundle --cert="$FL_DIR/rauc.crt" --key="$FL_DIR/rauc.key" "$b/content" \
        "$FL_DIR/$1.raucb" > /dev/null 2>&1 || fl_die "rauc bundle $1"
}

# ---- the device: DEV is its directory
BUS_PID=
SVC_PID=
AG=
dev_init() { # ID
    DEVID=$1
    DEV="$FL_DIR/$1"
    mkdir -p "$DEV/data" "$DEV/rauc"
    truncate -s 40M "$DEV/a.img" "$DEV/b.img"
    grub-editenv "$DEV/grubenv" create
    grub-editenv "$DEV/grubenv" set ORDER="A B" A_OK=1 B_OK=0 A_TRY=0 B_TRY=0
    cat > "$DEV/system.conf" << CONF
[system]
compatible=upkeep-e2e
bootloader=grub
grubenv=$DEV/grubenv
data-directory=$DEV/rauc
activate-installed=false
[keyring]
path=$FL_DIR/rauc.crt
[slot.rootfs.0]
device=$DEV/a.img
type=raw
bootname=A
[slot.rootfs.1]
device=$DEV/b.img
type=raw
bootname=B
CONF
    cat > "$DEV/bus.conf" << XML
<busconfig><type>session</type><listen>unix:path=$DEV/bus</listen><auth>EXTERNAL</auth>
<policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy></busconfig>
XML
    BUS_PID=$(dbus-daemon --config-file="$DEV/bus.conf" --fork --print-pid) || fl_die "dbus-daemon"
    fl_track "$BUS_PID"
    "$FL_BIN/upkeep" device-key --secret-file "$FL_DIR/fleet.secret" "$1" > "$DEV/pw"
    echo healthy > "$DEV/health"
    cat > "$DEV/agent.json" << JSON
{
  "broker": "$FL_URL", "device_id": "$1", "password_file": "$DEV/pw", "hardware": "rev-a",
  "data_dir": "$DEV/data", "keys": ["$FL_DIR/release.pub"],
  "module": "rauc", "modules_dir": "$MOD_DIR",
  "module_settings": {"conf": "$DEV/system.conf", "reboot": "touch $DEV/rebooted",
                      "dbus_session_bus": "unix:path=$DEV/bus"},
  "health_check": {"command": ["/bin/sh", "-c", "grep -qx healthy $DEV/health"], "timeout_s": 10},
  "factory_release": {"name": "os", "version": "1.0.0", "security_version": 1},
  "reconnect_min_ms": 200, "reconnect_max_ms": 1000
}
JSON
    BOOTS=0
    boot
    agent_up
}

genv() { grub-editenv "$DEV/grubenv" list | sed -n "s/^$1=//p"; }
export DBUS_STARTER_BUS_TYPE=session
rs() { DBUS_SESSION_BUS_ADDRESS="unix:path=$DEV/bus" rauc -c "$DEV/system.conf" "$@"; }

# boot: the system goes down (agent SIGKILLed) and comes up in GRUB's choice.
BOOTED=
boot() {
    if [ -n "$AG" ]; then kill -KILL "$AG" 2> /dev/null || true; wait "$AG" 2> /dev/null || true; AG=; fi
    if [ -n "$SVC_PID" ]; then kill "$SVC_PID" 2> /dev/null || true; wait "$SVC_PID" 2> /dev/null || true; fi
    rm -f "$DEV/rebooted"
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
    grub-editenv "$DEV/grubenv" set ORDER="$order" A_OK="$a_ok" B_OK="$b_ok" A_TRY="$a_try" B_TRY="$b_try"
    BOOTED=$def
    BOOTS=$((BOOTS + 1))
    echo "boot-$DEVID-$BOOTS" > "$DEV/boot_id"
    DBUS_SESSION_BUS_ADDRESS="unix:path=$DEV/bus" rauc service -c "$DEV/system.conf" \
        --override-boot-slot="$BOOTED" >> "$DEV/rauc-service.log" 2>&1 &
    SVC_PID=$!
    fl_track "$SVC_PID"
    fl_wait 10 "rauc service on $DEVID" rs status
    # Boot-time mark-good (docs/agent.md), skipped while an update is under way.
    [ -f "$DEV/data/work/rauc-slot" ] || rs status mark-good booted > /dev/null 2>&1
    echo "device $DEVID: boot $BOOTS in slot $BOOTED (ORDER=$(genv ORDER) A_OK=$(genv A_OK) B_OK=$(genv B_OK))"
}
agent_up() {
    UPK_BOOT_ID_FILE="$DEV/boot_id" "$FL_BIN/upkeep-agent" -c "$DEV/agent.json" >> "$DEV/agent.log" 2>&1 &
    AG=$!
    fl_track "$AG"
}
dev_done() {
    if [ -n "$AG" ]; then kill -KILL "$AG" 2> /dev/null || true; wait "$AG" 2> /dev/null || true; AG=; fi
    if [ -n "$SVC_PID" ]; then kill "$SVC_PID" 2> /dev/null || true; wait "$SVC_PID" 2> /dev/null || true; SVC_PID=; fi
}
slot_holds() { debugfs -R "cat /etc/upkeep-release" "$DEV/$1" 2> /dev/null | grep -qx "release $2"; }
dev_field() { fl_json "[x.get('$2','') for x in d if x['id']=='$1'][0]" upk devices --json; }
dev_field_is() { [ "$(dev_field "$1" "$2")" = "$3" ]; }
release() { # NAME VERSION SECVER
    upk release create "$FL_DIR/$1.raucb" --name os --version "$2" --security-version "$3" \
        --hw rev-a --module rauc --expires 30d --key "$FL_DIR/release.key" \
        --out "$FL_DIR/rel" --upload > /dev/null || fl_die "release os-$2"
}

bundle v2 2.0.0
bundle v3 3.0.0
bundle v4 4.0.0
bundle v5 5.0.0 16

# ---- 1. a good update
T0=$SECONDS
dev_init dev-good
fl_wait 30 "dev-good registered" dev_field_is dev-good version 1.0.0
release v2 2.0.0 1
upk campaign create --id good --release os-2.0.0 --target id=dev-good --stages 100% --soak 0 > /dev/null \
    || fl_die "campaign good"
fl_wait 60 "dev-good asks for the reboot" test -e "$DEV/rebooted"
slot_holds b.img 2.0.0 || fl_die "slot B does not hold 2.0.0 after install"
e2e_expect "$(genv ORDER)" "B A" "GRUB order after activation"
boot
e2e_expect "$BOOTED" B "the slot booted after activation"
agent_up
fl_wait 60 "dev-good commits" dev_field_is dev-good version 2.0.0
fl_wait 60 "campaign good completes" fl_campaign_is good completed
grep -q "booted the new slot" "$DEV/agent.log" || fl_die "the agent did not ask which slot booted"
e2e_expect "$(grep -c 'module=rauc step=activate' "$DEV/agent.log")" 1 "activate runs"
boot
e2e_expect "$BOOTED" B "the boot after commit"
boot
e2e_expect "$BOOTED" B "the second boot after commit"
echo "scenario 1 (good update) passed in $((SECONDS - T0)) s"
dev_done

# ---- 2. the new slot never reaches the agent: GRUB falls back, BOOT_FAILED
T0=$SECONDS
dev_init dev-panic
fl_wait 30 "dev-panic registered" dev_field_is dev-panic version 1.0.0
release v3 3.0.0 1
upk campaign create --id panic --release os-3.0.0 --target id=dev-panic --stages 100% --soak 0 > /dev/null \
    || fl_die "campaign panic"
fl_wait 60 "dev-panic asks for the reboot" test -e "$DEV/rebooted"
boot
e2e_expect "$BOOTED" B "the first boot after activation"
# Kernel panic / init failure in B: no agent; the watchdog resets the board.
boot
e2e_expect "$BOOTED" A "GRUB's fallback after B failed once"
agent_up
fl_wait 60 "dev-panic reports rolled_back" dev_field_is dev-panic status rolled_back
e2e_expect "$(dev_field dev-panic error)" BOOT_FAILED "dev-panic error"
e2e_expect "$(dev_field dev-panic version)" 1.0.0 "dev-panic version"
e2e_expect "$(genv B_OK)" 0 "B marked bad"
state=$(fl_campaign_state panic)
[ "$state" != completed ] || fl_die "campaign panic completed despite the boot failure"
echo "campaign panic: $state, failed $(e2e_count panic failed)"
boot
e2e_expect "$BOOTED" A "the boot after the rollback"
agent_up
sleep 2 # a restart with the same retained desired: nothing is tried again
e2e_expect "$(grep -c 'module=rauc step=install' "$DEV/agent.log")" 1 "installs of os-3.0.0"
echo "scenario 2 (boot failure) passed in $((SECONDS - T0)) s"
dev_done

# ---- 3. boots, fails the health check: marked bad, reboot into A
T0=$SECONDS
dev_init dev-sick
fl_wait 30 "dev-sick registered" dev_field_is dev-sick version 1.0.0
release v4 4.0.0 1
upk campaign create --id sick --release os-4.0.0 --target id=dev-sick --stages 100% --soak 0 > /dev/null \
    || fl_die "campaign sick"
fl_wait 60 "dev-sick asks for the reboot" test -e "$DEV/rebooted"
echo sick > "$DEV/health" # the new system comes up broken
boot
e2e_expect "$BOOTED" B "the first boot after activation"
agent_up
fl_wait 60 "dev-sick's rollback asks for a reboot" test -e "$DEV/rebooted"
echo healthy > "$DEV/health"
boot
e2e_expect "$BOOTED" A "the boot after the failed health check"
agent_up
fl_wait 60 "dev-sick reports rolled_back" dev_field_is dev-sick status rolled_back
e2e_expect "$(dev_field dev-sick error)" HEALTH_FAILED "dev-sick error"
e2e_expect "$(dev_field dev-sick version)" 1.0.0 "dev-sick version"
echo "scenario 3 (health failure) passed in $((SECONDS - T0)) s"
dev_done

# ---- 4. power cuts: while rauc writes the slot, and right after the
# bootloader was armed (before the reboot): the device comes back on a
# consistent slot and the update ends committed, the slot written again.
T0=$SECONDS
dev_init dev-cut
fl_wait 30 "dev-cut registered" dev_field_is dev-cut version 1.0.0
release v5 5.0.0 1
upk campaign create --id cut --release os-5.0.0 --target id=dev-cut --stages 100% --soak 0 > /dev/null \
    || fl_die "campaign cut"
journal_says() { grep -q "\"status\":\"$1\"" "$DEV/data/journal.json" 2> /dev/null; }
fl_wait 60 "dev-cut installs" journal_says installing
boot # the power went while the slot was written: rauc's install ends with it
e2e_expect "$BOOTED" A "the boot after a cut during install"
agent_up
fl_wait 60 "dev-cut asks for the reboot" test -e "$DEV/rebooted"
installs=$(grep -c 'module=rauc step=install' "$DEV/agent.log")
[ "$installs" -ge 2 ] || fl_die "the install was not run again after the cut ($installs)"
boot # a cut right after the bootloader was armed is this same boot
e2e_expect "$BOOTED" B "the boot after the armed bootloader"
agent_up
fl_wait 60 "dev-cut commits" dev_field_is dev-cut version 5.0.0
slot_holds b.img 5.0.0 || fl_die "slot B does not hold 5.0.0"
boot
e2e_expect "$BOOTED" B "the boot after commit"
echo "scenario 4 (power cuts during install and after arming) passed in $((SECONDS - T0)) s"
dev_done
echo "e2e rootfs rauc: ok"
