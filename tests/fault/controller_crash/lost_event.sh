#!/usr/bin/env bash
# The second line of defence behind the event ack (protocol.md 5.9): should
# an event row be lost anyway (Paho sends PUBACK before the controller has
# stored an event; the agent's outbox, waiting for the controller's own ack,
# is what normally covers that), outcomes must not depend on it. This test
# makes the loss certain: with the controller killed, it deletes every stored event
# of some devices (as if each had been acknowledged and never committed) and
# puts their campaign rows back to in_progress, then restarts the controller.
# Outcomes must come back from the devices' retained state alone: the
# campaign completes with the same per-device outcomes, and no stage is
# decided on a missing outcome.
#   lost_event.sh BUILD_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../e2e/fleet/common.sh
. "$here/../../e2e/fleet/common.sh" "$1"
N=8
fl_broker_start
fl_serve_start 200
fl_sim_start fleet --count $N --install-ms 1500 --health-ms 20
fl_wait_sim fleet connected $N 120
registered() { [ "$(fl_json 'len(d)' upk devices --json)" = $N ]; }
fl_wait 60 "$N devices registered" registered
fl_make_artifact "$FL_DIR/a1" 64 a1
fl_release fw 1.0.0 1 "$FL_DIR/a1" > /dev/null
upk campaign create --id le --release fw-1.0.0 --stages 50%,100% --soak 0 \
    --device-timeout 300s > /dev/null
# Stage 1 done (its devices succeeded), then the controller dies.
stage_one() { [ "$(e2e_count le succeeded)" -ge $((N / 2)) ]; }
fl_wait 60 "stage 1 succeeded" stage_one
kill -KILL "$FL_SERVE_PID"
wait "$FL_SERVE_PID" 2> /dev/null || true
for i in "${!FL_PIDS[@]}"; do [ "${FL_PIDS[$i]}" != "$FL_SERVE_PID" ] || unset 'FL_PIDS[i]'; done
FL_PIDS=("${FL_PIDS[@]}")
db=$FL_DIR/ctl/upkeep.db
lost=$(sqlite3 "$db" "SELECT group_concat(device, ' ') FROM campaign_devices
                      WHERE campaign='le' AND state='succeeded'")
[ -n "$lost" ] || fl_die "no succeeded device to lose events of"
sqlite3 "$db" "DELETE FROM events WHERE campaign='le' AND device IN
                 (SELECT device FROM campaign_devices WHERE campaign='le' AND state='succeeded');
               UPDATE campaign_devices SET state='in_progress', done_ms=0
                 WHERE campaign='le' AND state='succeeded';"
e2e_expect "$(sqlite3 "$db" "SELECT count(*) FROM campaign_devices WHERE campaign='le' AND state='succeeded'")" \
    0 "succeeded rows after the simulated loss"
echo "lost the events of: $lost"
fl_serve_start 200
fl_wait 120 "campaign le completed" fl_campaign_is le completed
e2e_expect "$(e2e_count le succeeded)" $N "succeeded"
e2e_expect "$(e2e_count le failed)" 0 "failed"
e2e_expect "$(e2e_count le timed_out)" 0 "timed out"
for d in $lost; do
    st=$(sqlite3 "$db" "SELECT state FROM campaign_devices WHERE campaign='le' AND device='$d'")
    e2e_expect "$st" succeeded "outcome of $d recovered from its retained state"
done
echo "fault lost_event: ok"
