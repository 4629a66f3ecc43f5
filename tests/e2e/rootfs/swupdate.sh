#!/usr/bin/env bash
# Root filesystem A/B updates end to end with SWUpdate (issue 19) without a
# VM: the real upkeep-agent with the shipped swupdate module against
# mosquitto + plugin and `upkeep serve`, on a device made of files: two raw
# slot images written by the real SWUpdate 2022.12, a U-Boot environment
# (mkenvimage) changed by the real fw_setenv, and U-Boot's bootcount /
# bootlimit / altbootcmd emulated between boots. A reboot: the agent is
# SIGKILLed, U-Boot's choice is made, the kernel command line (a file) says
# upkeep.slot=A|B, the boot id changes, the agent starts again unless the
# slot "does not boot".
#   1. good update: written into B, reboot, boots B, committed, stays on B
#   2. a slot that never reaches the agent: bootcount passes bootlimit,
#      altbootcmd goes back to A, rolled_back BOOT_FAILED, campaign halted
. "$(dirname "$0")/../fleet/common.sh"
for t in swupdate fw_printenv fw_setenv mkenvimage cpio mke2fs debugfs openssl; do
    command -v "$t" > /dev/null 2>&1 || {
        echo "SKIP: $t is not installed (scripts/deps.sh installs it)"
        exit 77
    }
done
fl_broker_start
fl_serve_start 200
MOD_DIR="$e2e_root/agent/modules"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$FL_DIR/swu.key" \
    -out "$FL_DIR/swu.crt" -days 2 -subj "/CN=upkeep-e2e-swu" \
    -addext "keyUsage=digitalSignature" -addext "extendedKeyUsage=emailProtection" 2> /dev/null
export TMPDIR=$FL_DIR # SWUpdate's control sockets

swu() { # NAME VERSION DEVDIR
    local b="$FL_DIR/swu-$1"
    mkdir -p "$b/root/etc"
    echo "release $2" > "$b/root/etc/upkeep-release"
    (
        cd "$b" || exit 1
        mke2fs -q -t ext4 -d root rootfs.ext4 2M
        local sha
        sha=$(sha256sum rootfs.ext4 | cut -d' ' -f1)
        cat > sw-description << SWD
software = {
  version = "$2";
  hardware-compatibility = [ "1.0" ];
  stable = {
    copy1 = { images: ( { filename = "rootfs.ext4"; device = "$3/a.img"; type = "raw"; sha256 = "$sha"; } ); };
    copy2 = { images: ( { filename = "rootfs.ext4"; device = "$3/b.img"; type = "raw"; sha256 = "$sha"; } ); };
  };
}
SWD
        openssl cms -sign -in sw-description -out sw-description.sig -signer "$FL_DIR/swu.crt" \
            -inkey "$FL_DIR/swu.key" -outform DER -nosmimecap -binary
        printf 'sw-description\nsw-description.sig\nrootfs.ext4\n' | cpio -o -H crc > "$FL_DIR/$1.swu" 2> /dev/null
    ) || fl_die "cannot build $1.swu"
}

AG=
dev_init() { # ID
    DEVID=$1
    DEV="$FL_DIR/$1"
    mkdir -p "$DEV/data"
    truncate -s 4M "$DEV/a.img" "$DEV/b.img"
    printf 'boot_slot=A\nupgrade_available=0\nbootcount=0\nbootlimit=1\n' > "$DEV/env.txt"
    mkenvimage -s 0x4000 -o "$DEV/uboot.env" "$DEV/env.txt"
    echo "$DEV/uboot.env 0x0 0x4000" > "$DEV/fw_env.config"
    "$FL_BIN/upkeep" device-key --secret-file "$FL_DIR/fleet.secret" "$1" > "$DEV/pw"
    cat > "$DEV/agent.json" << JSON
{
  "broker": "$FL_URL", "device_id": "$1", "password_file": "$DEV/pw", "hardware": "rev-a",
  "data_dir": "$DEV/data", "keys": ["$FL_DIR/release.pub"],
  "module": "swupdate", "modules_dir": "$MOD_DIR",
  "module_settings": {"bootloader": "uboot", "fw_env_config": "$DEV/fw_env.config",
                      "key": "$FL_DIR/swu.crt", "hwrevision": "upkeep:1.0",
                      "cmdline": "$DEV/cmdline", "reboot": "touch $DEV/rebooted"},
  "health_check": {"command": ["/bin/true"], "timeout_s": 10},
  "factory_release": {"name": "os", "version": "1.0.0", "security_version": 1},
  "reconnect_min_ms": 200, "reconnect_max_ms": 1000
}
JSON
    BOOTS=0
    boot
    agent_up
}
uenv() { fw_printenv -c "$DEV/fw_env.config" -n "$1" 2> /dev/null; }
# boot: the system goes down (agent SIGKILLed); U-Boot counts and chooses.
BOOTED=
boot() {
    if [ -n "$AG" ]; then kill -KILL "$AG" 2> /dev/null || true; wait "$AG" 2> /dev/null || true; AG=; fi
    rm -f "$DEV/rebooted"
    local slot up count limit
    slot=$(uenv boot_slot) up=$(uenv upgrade_available) count=$(uenv bootcount) limit=$(uenv bootlimit)
    if [ "$up" = 1 ]; then
        count=$((count + 1))
        fw_setenv -c "$DEV/fw_env.config" bootcount "$count"
        if [ "$count" -gt "$limit" ]; then # altbootcmd
            [ "$slot" = A ] && slot=B || slot=A
            fw_setenv -c "$DEV/fw_env.config" boot_slot "$slot"
            fw_setenv -c "$DEV/fw_env.config" upgrade_available 0
        fi
    fi
    BOOTED=$slot
    BOOTS=$((BOOTS + 1))
    echo "boot-$DEVID-$BOOTS" > "$DEV/boot_id"
    echo "console=ttyS0 root=/dev/vda$([ "$slot" = A ] && echo 2 || echo 3) upkeep.slot=$slot" > "$DEV/cmdline"
    echo "device $DEVID: boot $BOOTS in slot $BOOTED (boot_slot=$(uenv boot_slot) upgrade_available=$(uenv upgrade_available) bootcount=$(uenv bootcount))"
}
agent_up() {
    UPK_BOOT_ID_FILE="$DEV/boot_id" "$FL_BIN/upkeep-agent" -c "$DEV/agent.json" >> "$DEV/agent.log" 2>&1 &
    AG=$!
    fl_track "$AG"
}
dev_done() { if [ -n "$AG" ]; then kill -KILL "$AG" 2> /dev/null || true; wait "$AG" 2> /dev/null || true; AG=; fi; }
slot_holds() { debugfs -R "cat /etc/upkeep-release" "$DEV/$1" 2> /dev/null | grep -qx "release $2"; }
dev_field() { fl_json "[x.get('$2','') for x in d if x['id']=='$1'][0]" upk devices --json; }
dev_field_is() { [ "$(dev_field "$1" "$2")" = "$3" ]; }
release() { # FILE VERSION
    upk release create "$1" --name os --version "$2" --security-version 1 --hw rev-a \
        --module swupdate --expires 30d --key "$FL_DIR/release.key" --out "$FL_DIR/rel" \
        --upload > /dev/null || fl_die "release os-$2"
}

# ---- 1. a good update
T0=$SECONDS
dev_init swu-good
swu v2 2.0.0 "$DEV"
fl_wait 30 "swu-good registered" dev_field_is swu-good version 1.0.0
release "$FL_DIR/v2.swu" 2.0.0
upk campaign create --id good --release os-2.0.0 --target id=swu-good --stages 100% --soak 0 > /dev/null \
    || fl_die "campaign good"
fl_wait 60 "swu-good asks for the reboot" test -e "$DEV/rebooted"
slot_holds b.img 2.0.0 || fl_die "slot B does not hold 2.0.0 after install"
slot_holds a.img 2.0.0 && fl_die "the running slot A was written"
boot
e2e_expect "$BOOTED" B "the slot booted after activation"
agent_up
fl_wait 60 "swu-good commits" dev_field_is swu-good version 2.0.0
fl_wait 60 "campaign good completes" fl_campaign_is good completed
e2e_expect "$(uenv upgrade_available)" 0 "upgrade_available after commit"
boot
e2e_expect "$BOOTED" B "the boot after commit"
boot
e2e_expect "$BOOTED" B "the second boot after commit"
echo "scenario 1 (good update, SWUpdate + U-Boot) passed in $((SECONDS - T0)) s"
dev_done

# ---- 2. the new slot never reaches the agent
T0=$SECONDS
dev_init swu-panic
swu v3 3.0.0 "$DEV"
fl_wait 30 "swu-panic registered" dev_field_is swu-panic version 1.0.0
release "$FL_DIR/v3.swu" 3.0.0
upk campaign create --id panic --release os-3.0.0 --target id=swu-panic --stages 100% --soak 0 > /dev/null \
    || fl_die "campaign panic"
fl_wait 60 "swu-panic asks for the reboot" test -e "$DEV/rebooted"
boot
e2e_expect "$BOOTED" B "the first boot after activation"
boot # B panicked; bootcount 2 > bootlimit 1: altbootcmd
e2e_expect "$BOOTED" A "U-Boot's fallback"
agent_up
fl_wait 60 "swu-panic reports rolled_back" dev_field_is swu-panic status rolled_back
e2e_expect "$(dev_field swu-panic error)" BOOT_FAILED "swu-panic error"
e2e_expect "$(dev_field swu-panic version)" 1.0.0 "swu-panic version"
state=$(fl_campaign_state panic)
[ "$state" != completed ] || fl_die "campaign panic completed despite the boot failure"
echo "campaign panic: $state"
boot
e2e_expect "$BOOTED" A "the boot after the rollback"
echo "scenario 2 (boot failure, SWUpdate + U-Boot) passed in $((SECONDS - T0)) s"
dev_done
echo "e2e rootfs swupdate: ok"
