#!/usr/bin/env bash
# A continuous campaign (issue 16 item 9): a device that was offline when its
# stage timed it out gets the release when it comes back, and devices that
# join the fleet later are offered it, while the campaign stays open (it does
# not complete after its last stage). A plain campaign does neither.
. "$(dirname "$0")/common.sh"
N=4
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
upk campaign create --id cont --release fw-1.0.0 --stages 100% --soak 0 --continuous \
    --device-timeout 3s --max-failures 100% > /dev/null
fl_wait 60 "the $N online devices updated" e2e_count_is cont succeeded $N
fl_wait 30 "late-00001 timed out" e2e_count_is cont timed_out 1
sleep 2 # a plain campaign would complete within a tick or two here
e2e_expect "$(fl_campaign_state cont)" running "continuous campaign after its last stage"
rc=0
"$FL_BIN/upkeep" campaign watch cont --once > /dev/null || rc=$?
e2e_expect "$rc" 0 "watch --once of an open continuous campaign"

# late-00001 comes back; two new devices join.
fl_sim_start late --count 1 --id-prefix late- --data-dir "$FL_DIR/late-data" \
    --install-ms 50 --health-ms 20
fl_sim_start joiners --count 2 --id-prefix new- --install-ms 50 --health-ms 20
fl_wait 60 "returning and joining devices updated" e2e_count_is cont succeeded $((N + 3))
e2e_expect "$(e2e_count cont timed_out)" 0 "timed out after the return"
fl_wait 30 "every device reports 1.0.0" e2e_versions_are 1.0.0 $((N + 3))
e2e_expect "$(fl_campaign_state cont)" running "continuous campaign still open"
upk campaign show cont
upk campaign abort cont > /dev/null
e2e_expect "$(fl_campaign_state cont)" aborted "continuous campaign ended by the operator"
echo "e2e continuous: ok"
