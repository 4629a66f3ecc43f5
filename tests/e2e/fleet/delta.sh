#!/usr/bin/env bash
# A delta release: devices on fw 1.0.0 (a full release) take fw 2.0.0 as a
# binary patch made with `upkeep delta make`; each applies it to its own
# installed image, verifies the target hash and commits.
. "$(dirname "$0")/common.sh"
N=16
fl_broker_start
fl_serve_start 200
fl_sim_start fleet --count $N --hw rev-a:50%,rev-b:50% --install-ms 50 --health-ms 20
fl_wait_sim fleet connected $N 120
fl_wait 60 "$N devices registered" fl_devices_are $N

fl_make_artifact "$FL_DIR/v1" 256 v1
fl_release fw 1.0.0 1 "$FL_DIR/v1" > /dev/null
upk campaign create --id full --release fw-1.0.0 --stages 100% --soak 0 > /dev/null
timeout 120 "$FL_BIN/upkeep" campaign watch full --interval 1 > /dev/null || fl_die "full rollout"

# v2 = v1 with a few changed regions: the patch is much smaller than v2.
python3 - "$FL_DIR/v1" "$FL_DIR/v2" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
for off in (1000, 70000, 200000):
    b[off:off + 64] = bytes(range(64))
open(sys.argv[2], "wb").write(bytes(b))
PY
upk delta make "$FL_DIR/v1" "$FL_DIR/v2" "$FL_DIR/v1-v2.patch" > /dev/null
psize=$(stat -c %s "$FL_DIR/v1-v2.patch")
[ "$psize" -lt 65536 ] || fl_die "patch of $psize bytes is not small"
fl_release fw 2.0.0 2 "$FL_DIR/v1-v2.patch" --delta > /dev/null
e2e_expect "$(fl_json 'd.get("type","")' upk release show fw-2.0.0 --json)" delta "release type"
upk campaign create --id delta --release fw-2.0.0 --stages 50%,100% --soak 0 > /dev/null
timeout 120 "$FL_BIN/upkeep" campaign watch delta --interval 1 > /dev/null || fl_die "delta rollout"
e2e_expect "$(e2e_count delta succeeded)" $N "delta succeeded"
fl_wait 30 "all devices report 2.0.0" e2e_versions_are 2.0.0 $N
# The image each device reports is v2's hash (the patch applied correctly).
want=$(sha256sum "$FL_DIR/v2" | cut -d' ' -f1)
# Read from the devices' own retained state messages, as an admin sees them.
mosquitto_sub -h 127.0.0.1 -p "$FL_PORT" -u root -P "$(cat "$FL_DIR/root.pw")" -V mqttv5 \
    -t 'upkeep/v1/dev/+/state' -C $N -W 20 > "$FL_DIR/states.txt" || true
got=$(grep -c "\"image_sha256\":\"$want\"" "$FL_DIR/states.txt" || true)
e2e_expect "$got" $N "devices whose image hash is v2's"
echo "e2e delta: ok"
