#!/usr/bin/env bash
# The cross-built arm64 agent under qemu-user against a native system:
# mosquitto with upkeep_broker.so, `upkeep serve` and the operator CLI from
# the native BUILD_DIR (tests/e2e/fleet-lib.sh). The arm64 upkeep-agent
# (`make cross ARCH=arm64`) takes
#   1. a signed full release (fw 1.0.0) to committed,
#   2. a delta release (fw 2.0.0, `upkeep delta make`) to committed, the
#      file on disk being exactly v2,
#   3. a bad release (fw 3.0.0, its health check fails) to rolled back: the
#      file is v2 again and the device still reports 2.0.0.
# qemu runs with -L / : the target's libraries are Debian's multiarch arm64
# packages under /usr/lib/aarch64-linux-gnu and the loader /lib/ld-linux-
# aarch64.so.1 (libc6:arm64). -L /usr/aarch64-linux-gnu would mix the cross
# toolchain's loader with libc6:arm64 and hang in pthread_create.
# Usage: arm64_qemu.sh NATIVE_BUILD_DIR ARM64_AGENT
. "$(dirname "$0")/../fleet/common.sh"
agent_bin=$(cd "$(dirname "${2:?usage: $0 NATIVE_BUILD_DIR ARM64_AGENT}")" && pwd)/$(basename "$2")
[ -x "$agent_bin" ] || fl_die "no arm64 agent at $2 (make cross ARCH=arm64)"
file -b "$agent_bin" | grep -q 'ARM aarch64' || fl_die "$agent_bin is not an arm64 executable"
QEMU=${QEMU:-$(command -v qemu-aarch64 || command -v qemu-aarch64-static || true)}
[ -n "$QEMU" ] || fl_die "no qemu-aarch64 (scripts/deps.sh cross arm64 installs qemu-user)"
"$QEMU" -L / "$agent_bin" --version > /dev/null || fl_die "the arm64 agent does not start under $QEMU -L /"

fl_broker_start
fl_serve_start 200

dev=arm64-qemu-0
dd="$FL_DIR/device"
app="$dd/app/firmware.bin"
mkdir -p "$dd/data" "$dd/app"
printf 'factory image\n' > "$app"
"$FL_BIN/upkeep" device-key --secret-file "$FL_DIR/fleet.secret" "$dev" > "$dd/password" \
    || fl_die "upkeep device-key"
cat > "$dd/agent.json" <<JSON
{
  "broker": "$FL_URL",
  "device_id": "$dev",
  "password_file": "$dd/password",
  "hardware": "rev-a",
  "data_dir": "$dd/data",
  "keys": ["$FL_DIR/release.pub"],
  "module": "file",
  "module_settings": { "path": "$app" },
  "health_check": { "command": ["/bin/sh", "-c", "! grep -q UPKEEP-BAD-BUILD '$app'"], "timeout_s": 60 },
  "limits": { "chunk_size": 16384, "chunk_timeout_ms": 20000 }
}
JSON
"$QEMU" -L / "$agent_bin" --check-config -c "$dd/agent.json" > /dev/null \
    || fl_die "the arm64 agent refuses its config"
"$QEMU" -L / "$agent_bin" -c "$dd/agent.json" -l info >> "$FL_DIR/agent-arm64.log" 2>&1 &
fl_track $!
fl_wait 120 "the arm64 device registered" fl_devices_are 1

release() { # NAME VERSION SECVER ARTIFACT [ARGS...]
    local name=$1 version=$2 secver=$3 art=$4
    shift 4
    upk release create "$art" --name "$name" --version "$version" --security-version "$secver" \
        --hw rev-a --module file --expires 30d --key "$FL_DIR/release.key" --out "$FL_DIR/rel" \
        --upload "$@" > /dev/null || fl_die "release $name-$version"
}
campaign() { # ID RELEASE: runs it to its end; prints the device's campaign state
    upk campaign create --id "$1" --release "$2" --stages 100% --soak 0 --max-failures 100% \
        > /dev/null || fl_die "campaign create $1"
    timeout 300 "$FL_BIN/upkeep" campaign watch "$1" --interval 1 > /dev/null || true
    fl_json 'd["device_list"][0]["state"]' upk campaign show "$1" --devices --json
}
version_is() { [ "$(fl_json 'd[0].get("version","")' upk devices --json)" = "$1" ]; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

# 1. full
fl_make_artifact "$FL_DIR/v1" 192 v1
release fw 1.0.0 1 "$FL_DIR/v1"
e2e_expect "$(campaign full fw-1.0.0)" succeeded "full release: device state"
fl_wait 30 "the device reports 1.0.0" version_is 1.0.0
e2e_expect "$(sha "$app")" "$(sha "$FL_DIR/v1")" "file after the full release"
grep -q 'committed' "$FL_DIR/agent-arm64.log" || fl_die "the agent did not log a commit"

# 2. delta
python3 - "$FL_DIR/v1" "$FL_DIR/v2" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
for off in (1000, 70000, 150000):
    b[off:off + 64] = bytes(range(64))
open(sys.argv[2], "wb").write(bytes(b))
PY
upk delta make "$FL_DIR/v1" "$FL_DIR/v2" "$FL_DIR/v1-v2.patch" > /dev/null || fl_die "delta make"
release fw 2.0.0 2 "$FL_DIR/v1-v2.patch" --delta
e2e_expect "$(campaign delta fw-2.0.0)" succeeded "delta release: device state"
fl_wait 30 "the device reports 2.0.0" version_is 2.0.0
e2e_expect "$(sha "$app")" "$(sha "$FL_DIR/v2")" "file after the delta release"

# 3. bad: installs, fails its health check, rolls back to v2
{ cat "$FL_DIR/v2"; printf 'UPKEEP-BAD-BUILD\n'; } > "$FL_DIR/v3"
release fw 3.0.0 3 "$FL_DIR/v3"
e2e_expect "$(campaign bad fw-3.0.0)" failed "bad release: device state"
fl_wait 30 "the device still reports 2.0.0" version_is 2.0.0
e2e_expect "$(sha "$app")" "$(sha "$FL_DIR/v2")" "file after the rollback"
grep -qi 'roll' "$FL_DIR/agent-arm64.log" || fl_die "the agent did not log a rollback"
echo "e2e cross arm64 (qemu-user): ok"
