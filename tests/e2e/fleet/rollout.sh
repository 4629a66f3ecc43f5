#!/usr/bin/env bash
# The demo's two scenarios on a smaller fleet, asserted from controller state
# and device reports: a four-stage rollout that completes, then a release that
# fails health checks on rev-b, halts at the canary stage and rolls back.
. "$(dirname "$0")/common.sh"
N=40
fl_broker_start
fl_serve_start 200
fl_sim_start fleet --count $N --hw rev-a:50%,rev-b:50% --install-ms rev-a:100,rev-b:200 \
    --health-ms 50 --health-fail rev-b:1@1.1.0
fl_wait_sim fleet connected $N 120
fl_wait 60 "$N devices registered" fl_devices_are $N

fl_make_artifact "$FL_DIR/a1" 64 a1
fl_release fw 1.0.0 1 "$FL_DIR/a1" > /dev/null
upk campaign create --id roll --release fw-1.0.0 --stages 1%,10%,50%,100% --soak 0 \
    --max-failures 5% --device-timeout 60s > /dev/null
timeout 180 "$FL_BIN/upkeep" campaign watch roll --interval 1 > "$FL_DIR/watch-roll.txt" \
    || fl_die "rollout did not complete"
e2e_expect "$(fl_campaign_state roll)" completed "campaign roll state"
e2e_expect "$(e2e_count roll succeeded)" $N "roll succeeded"
e2e_expect "$(e2e_count roll failed)" 0 "roll failed"
e2e_expect "$(fl_json 'd["stage_count"]' upk campaign show roll --json)" 4 "roll stages"
# Device reports: every device's retained state says fw 1.0.0 committed.
fl_wait 30 "all devices report 1.0.0" e2e_versions_are 1.0.0 $N
fl_wait_sim fleet committed $N 30
grep -q "stage=4/4" "$FL_DIR/watch-roll.txt" || fl_die "watch never showed stage 4"

fl_make_artifact "$FL_DIR/a2" 64 a2
fl_release fw 1.1.0 1 "$FL_DIR/a2" > /dev/null
upk campaign create --id bad --release fw-1.1.0 --stages 25%,50%,100% --soak 0 \
    --max-failures 5% --device-timeout 60s --auto-rollback > /dev/null
rc=0
timeout 180 "$FL_BIN/upkeep" campaign watch bad --interval 1 > /dev/null || rc=$?
e2e_expect "$rc" 1 "watch exit status of the rolled-back campaign"
e2e_expect "$(fl_campaign_state bad)" rolled_back "campaign bad state"
e2e_expect "$(fl_json 'd["stage"]' upk campaign show bad --json)" 1 "bad halted at stage"
failed=$(e2e_count bad failed)
[ "$failed" -ge 1 ] || fl_die "no device failed in the canary stage"
e2e_expect "$(e2e_count bad skipped)" $((N - N / 4)) "devices never started"
# Every failed device is a rev-b one whose own report says rolled back.
fl_json '"\n".join(x["device"] for x in d["device_list"] if x["state"]=="failed")' \
    upk campaign show bad --devices --json > "$FL_DIR/failed.txt"
while read -r dev; do
    [ -n "$dev" ] || continue
    hw=$(fl_json 'd["hw"]' upk devices show "$dev" --json)
    e2e_expect "$hw" rev-b "hardware of failed device $dev"
done < "$FL_DIR/failed.txt"
# The rollback puts 1.0.0 back everywhere.
fl_wait 60 "all devices back on 1.0.0" e2e_versions_are 1.0.0 $N
upk report posture --json > "$FL_DIR/posture.json"
# Posture: every device on 1.0.0 (the one version row counts all of them).
python3 - "$FL_DIR/posture.json" $N <<'PY' || fl_die "posture report does not show $N devices on 1.0.0"
import json, sys
d, n = json.load(open(sys.argv[1])), int(sys.argv[2])
rows = d["versions"]
assert sum(r.get("devices", 0) for r in rows if r.get("version") == "1.0.0") == n, rows
PY
echo "e2e rollout: ok"
