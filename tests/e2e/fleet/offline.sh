#!/usr/bin/env bash
# A device that is offline (killed, as by a power cut) when its stage starts
# updates when it comes back: the campaign waits for it (it is not a
# failure before the device timeout) and completes once it has updated.
. "$(dirname "$0")/common.sh"
N=10
fl_broker_start
fl_serve_start 200
fl_sim_start fleet --count $N --install-ms 50 --health-ms 20
fl_sim_start late --count 1 --id-prefix late- --data-dir "$FL_DIR/late-data" \
    --install-ms 50 --health-ms 20 --reconnect-max-ms 1000
late=$FL_SIM_PID
fl_wait_sim fleet connected $N 120
fl_wait_sim late connected 1 60
fl_wait 60 "$((N + 1)) devices registered" fl_devices_are $((N + 1))
kill -KILL "$late"
wait "$late" 2>/dev/null || true
fl_wait 30 "late-00001 seen offline" \
    test "$(fl_json '[x["id"] for x in d]' upk devices --offline --json)" = "['late-00001']"

fl_make_artifact "$FL_DIR/a1" 64 a1
fl_release fw 1.0.0 1 "$FL_DIR/a1" > /dev/null
upk campaign create --id off --release fw-1.0.0 --stages 100% --soak 0 \
    --device-timeout 300s > /dev/null
fl_wait 60 "the $N online devices updated" e2e_count_is off succeeded $N
e2e_expect "$(fl_campaign_state off)" running "campaign state while late-00001 is away"
e2e_expect "$(e2e_count off failed)" 0 "failures while late-00001 is away"

# It comes back (same data dir: same journal and installed facts).
fl_sim_start late --count 1 --id-prefix late- --data-dir "$FL_DIR/late-data" \
    --install-ms 50 --health-ms 20
fl_wait 60 "campaign off completed" fl_campaign_is off completed
e2e_expect "$(e2e_count off succeeded)" $((N + 1)) "succeeded after the return"
fl_wait 30 "late-00001 reports 1.0.0" \
    test "$(fl_json 'd.get("version")' upk devices show late-00001 --json)" = 1.0.0
echo "e2e offline: ok"
