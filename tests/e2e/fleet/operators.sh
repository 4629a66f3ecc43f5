#!/usr/bin/env bash
# Operator commands from a second terminal: alice starts a campaign, bob
# (another operator, another process and MQTT session) pauses it while it
# runs, alice sees the pause and its reason, bob resumes it, it completes,
# and the audit log names who did what.
. "$(dirname "$0")/common.sh"
N=20
fl_broker_start
fl_serve_start 200
fl_sim_start fleet --count $N --install-ms 2500 --health-ms 50
fl_wait_sim fleet connected $N 120
fl_wait 60 "$N devices registered" fl_devices_are $N
fl_make_artifact "$FL_DIR/a1" 64 a1
fl_release fw 1.0.0 1 "$FL_DIR/a1" > /dev/null
upk campaign create --id op --release fw-1.0.0 --stages 100% --soak 0 --max-in-flight 2 > /dev/null
fl_wait 30 "campaign op started" \
    test "$(( $(e2e_count op assigned) + $(e2e_count op in_progress) + $(e2e_count op succeeded) ))" -gt 0
fl_as bob campaign pause op --reason "bob checks the canaries" > /dev/null
e2e_expect "$(fl_campaign_state op)" paused "state seen by alice after bob's pause"
reason=$(fl_json 'd["reason"]' upk campaign show op --json)
case $reason in *bob*"bob checks the canaries"*) ;; *) fl_die "pause reason seen by alice: $reason" ;; esac
# While paused nobody new starts: in flight devices finish, pending stay.
fl_wait 30 "in-flight devices done" e2e_count_is op in_progress 0
pending=$(e2e_count op pending)
[ "$pending" -gt 0 ] || fl_die "no device left pending while paused"
e2e_expect "$(fl_json 'd["counts"]["pending"]' fl_as bob campaign show op --json)" "$pending" "bob's view"
fl_as bob campaign resume op > /dev/null
timeout 120 "$FL_BIN/upkeep" campaign watch op --interval 1 > /dev/null || fl_die "op did not complete"
e2e_expect "$(e2e_count op succeeded)" $N "succeeded"
upk audit --limit 50 > "$FL_DIR/audit.txt"
grep -q "alice" "$FL_DIR/audit.txt" || fl_die "audit does not name alice"
grep -q "bob" "$FL_DIR/audit.txt" || fl_die "audit does not name bob"
echo "e2e operators: ok"
