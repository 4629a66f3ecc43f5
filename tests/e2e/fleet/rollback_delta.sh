#!/usr/bin/env bash
# Rollback of a halted delta campaign (issue 16 item 3). The fleet runs
# fw 2.6.0, a delta from 2.5.0's image with a security fix; fw 2.7.0, a delta
# from 2.6.0, commits on the canary stage and then restarts the agents in a
# loop, so the health gate halts it. The previous release, the delta 2.6.0,
# cannot be installed on a device now running 2.7.0 (its base is 2.5.0's
# image) and 2.5.0 is below the security version: the rollback must say so,
# device by device, and end rollback_incomplete, never rolled_back. Once the
# full image of 2.6.0 is imported, rolling back again brings every device back
# and the campaign ends rolled_back. Prints what docs/operator-guide.md quotes.
. "$(dirname "$0")/common.sh"
N=4
fl_broker_start
fl_serve_start 200
fl_sim_start fleet --count $N --hw rev-a:50%,rev-b:50% --install-ms 50 --health-ms 20 \
    --restart-after-commit "*:5@2.7.0"
fl_wait_sim fleet connected $N 120
fl_wait 60 "$N devices registered" fl_devices_are $N

# 2.5.0 (full), then 2.6.0 and 2.7.0 as deltas, each from the one before.
fl_make_artifact "$FL_DIR/v25" 256 v25
python3 - "$FL_DIR/v25" "$FL_DIR/v26" "$FL_DIR/v27" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
for out, offs in ((sys.argv[2], (1000, 70000)), (sys.argv[3], (150000, 200000))):
    for off in offs:
        b[off:off + 64] = bytes((off + i) % 251 for i in range(64))
    open(out, "wb").write(bytes(b))
PY
upk delta make "$FL_DIR/v25" "$FL_DIR/v26" "$FL_DIR/v25-v26.patch" > /dev/null
upk delta make "$FL_DIR/v26" "$FL_DIR/v27" "$FL_DIR/v26-v27.patch" > /dev/null
fl_release fw 2.5.0 1 "$FL_DIR/v25" > /dev/null
upk campaign create --id c25 --release fw-2.5.0 --soak 0 > /dev/null
timeout 120 "$FL_BIN/upkeep" campaign watch c25 --interval 1 > /dev/null || fl_die "2.5.0 rollout"
fl_release fw 2.6.0 2 "$FL_DIR/v25-v26.patch" --delta > /dev/null
upk campaign create --id c26 --release fw-2.6.0 --soak 0 > /dev/null
timeout 120 "$FL_BIN/upkeep" campaign watch c26 --interval 1 > /dev/null || fl_die "2.6.0 rollout"
fl_wait 30 "all devices report 2.6.0" e2e_versions_are 2.6.0 $N

# A delta campaign for devices not on its base is refused with the count.
rc=0
upk campaign create --id wrong --release fw-2.6.0 > "$FL_DIR/wrong.txt" 2>&1 || rc=$?
echo "--- campaign create of the 2.5.0->2.6.0 delta on devices running 2.6.0 (exit $rc)"
cat "$FL_DIR/wrong.txt"
e2e_expect "$rc" 1 "exit status of a refused delta campaign"
grep -q "4 of 4 target devices are not on the base image.*(DELTA_BASE_MISMATCH)" "$FL_DIR/wrong.txt" \
    || fl_die "the refusal does not name the delta base"

fl_release fw 2.7.0 2 "$FL_DIR/v26-v27.patch" --delta > /dev/null
upk campaign create --id c27 --release fw-2.7.0 --stages 50%,100% --soak 0 --max-failures 0% \
    --bake 10s --max-unhealthy 0% --restart-limit 2 > /dev/null
rc=0
timeout 120 "$FL_BIN/upkeep" campaign watch c27 --interval 1 > "$FL_DIR/watch27.txt" || rc=$?
echo "--- campaign watch c27 (exit $rc)"
tail -2 "$FL_DIR/watch27.txt"
e2e_expect "$rc" 1 "watch exit status on a halt"
e2e_expect "$(fl_campaign_state c27)" paused "halted campaign state"
e2e_expect "$(e2e_count c27 succeeded)" 2 "canary devices on 2.7.0"

# Rollback 1: nothing the canary devices can install; named at once.
echo "--- upkeep campaign rollback c27 --reason 'restart loop' --wait"
rc=0
upk campaign rollback c27 --reason "restart loop" --wait > "$FL_DIR/rb1.txt" || rc=$?
cat "$FL_DIR/rb1.txt"
e2e_expect "$rc" 1 "exit status of rollback --wait that ends incomplete"
grep -q "2 cannot be rolled back" "$FL_DIR/rb1.txt" || fl_die "rollback plan does not name them"
grep -q "^campaign c27: rollback_incomplete: rollback incomplete: 2 of 2 devices" \
    "$FL_DIR/rb1.txt" || fl_die "rollback --wait does not say it is incomplete"
grep -q "rollback done" "$FL_DIR/rb1.txt" && fl_die "rollback claims success"
e2e_expect "$(fl_campaign_state c27)" rollback_incomplete "state after the first rollback"
rc=0
"$FL_BIN/upkeep" campaign watch c27 --once > /dev/null || rc=$?
e2e_expect "$rc" 1 "watch --once exit status of an incomplete rollback"
echo "--- upkeep campaign show c27 --devices"
upk campaign show c27 --devices | sed -n '/^campaign c27/,$p'
reason=$(fl_json 'd["reason"]' upk campaign show c27 --json)
case $reason in
"rollback incomplete: 2 of 2 devices not back on the previous release (DELTA_BASE_MISMATCH"*) ;;
*) fl_die "reason: $reason" ;;
esac

# Rollback 2: with the full image of 2.6.0 imported, every device is back.
fl_release fw 2.6.0 2 "$FL_DIR/v26" --id fw-2.6.0-full > /dev/null
echo "--- upkeep campaign rollback c27 --wait (again, fw-2.6.0-full imported)"
rc=0
upk campaign rollback c27 --wait > "$FL_DIR/rb2.txt" || rc=$?
cat "$FL_DIR/rb2.txt"
e2e_expect "$rc" 0 "exit status of rollback --wait that lands"
grep -q "^campaign c27: rollback done: 2 devices back on their previous release" \
    "$FL_DIR/rb2.txt" || fl_die "rollback --wait does not say it is done"
rc=0
timeout 120 "$FL_BIN/upkeep" campaign watch c27 --interval 1 > "$FL_DIR/watch27b.txt" || rc=$?
echo "--- campaign watch c27 (exit $rc)"
tail -3 "$FL_DIR/watch27b.txt"
e2e_expect "$rc" 1 "watch exit status of a rolled-back campaign"
e2e_expect "$(fl_campaign_state c27)" rolled_back "campaign state after the second rollback"
fl_wait 30 "all devices report 2.6.0 again" e2e_versions_are 2.6.0 $N
echo "--- upkeep campaign show c27"
upk campaign show c27 | sed -n '/^campaign c27/,$p'
echo "e2e rollback_delta: ok"
