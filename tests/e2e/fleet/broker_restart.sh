#!/usr/bin/env bash
# The broker restarts in the middle of a campaign: retained desired states,
# the controller's session and the devices' journals and outboxes carry the
# campaign through; it completes with every device updated and no failure.
. "$(dirname "$0")/common.sh"
N=24
fl_broker_start
port=$FL_PORT
fl_serve_start 200
fl_sim_start fleet --count $N --hw rev-a:50%,rev-b:50% --install-ms 5000 --health-ms 500 \
    --reconnect-max-ms 2000
fl_wait_sim fleet connected $N 120
fl_wait 60 "$N devices registered" test "$(fl_json 'len(d)' upk devices --json)" = $N

fl_make_artifact "$FL_DIR/a1" 512 a1
fl_release fw 1.0.0 1 "$FL_DIR/a1" > /dev/null
upk campaign create --id br --release fw-1.0.0 --stages 25%,100% --soak 0 \
    --device-timeout 120s > /dev/null
stage_two() { [ "$(fl_json 'd["stage"]' upk campaign show br --json)" = 2 ]; }
fl_wait 90 "stage 2 under way" stage_two
in_flight=$(( $(e2e_count br assigned) + $(e2e_count br in_progress) ))
[ "$in_flight" -gt 0 ] || fl_die "nothing in flight when the broker restarts"
echo "restarting the broker with $in_flight devices in flight"
fl_broker_stop
fl_broker_start "$port"
e2e_expect "$FL_PORT" "$port" "broker port after restart"
fl_wait 180 "campaign br completed" fl_campaign_is br completed
e2e_expect "$(e2e_count br succeeded)" $N "succeeded"
e2e_expect "$(e2e_count br failed)" 0 "failed"
e2e_expect "$(e2e_count br timed_out)" 0 "timed out"
fl_wait_sim fleet committed $N 60
fl_wait 60 "all devices report 1.0.0" e2e_versions_are 1.0.0 $N
echo "e2e broker restart: ok"
