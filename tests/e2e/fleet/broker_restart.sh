#!/usr/bin/env bash
# The broker restarts in the middle of a campaign: retained desired states,
# the controller's session and the devices' journals and outboxes carry the
# campaign through; it completes with every device updated and no failure,
# and every device's events are in the controller's store without a gap.
#
# Knobs (environment), used by tests/fault/broker_loss for the broker-loss
# variant and its reconnect-storm measurement:
#   BR_DEVICES (24)  BR_SIGNAL (TERM: clean stop; KILL: the broker is lost)
#   BR_RESTARTS (1)  BR_INSTALL_MS (5000)  BR_RECONNECT_MAX_MS (2000)
#   BR_STORM_OUT     file that gets "restart <epoch s>" per broker kill, "up
#                    <epoch s>" when the new broker's port accepts, and the
#                    fleet log's path ("log <path>"; agents log at info)
#   BR_STORM_ANALYSE storm.py, run on it before the log is removed
#   BR_STORM_SUMMARY file storm.py appends its figures to
. "$(dirname "$0")/common.sh"
N=${BR_DEVICES:-24}
SIG=${BR_SIGNAL:-TERM}
RESTARTS=${BR_RESTARTS:-1}
storm_log=()
# Agents log each (re)connection, stamped by the agent with milliseconds.
[ -z "${BR_STORM_OUT:-}" ] || storm_log=(-l info)
fl_broker_start
port=$FL_PORT
fl_serve_start 200
fl_sim_start fleet --count "$N" --hw rev-a:50%,rev-b:50% --install-ms "${BR_INSTALL_MS:-5000}" \
    --health-ms 500 --reconnect-max-ms "${BR_RECONNECT_MAX_MS:-2000}" --ack-timeout-ms 2000 \
    "${storm_log[@]}"
fl_wait_sim fleet connected "$N" 120
registered() { [ "$(fl_json 'len(d)' upk devices --json)" = "$N" ]; }
fl_wait 60 "$N devices registered" registered

fl_make_artifact "$FL_DIR/a1" 512 a1
fl_release fw 1.0.0 1 "$FL_DIR/a1" > /dev/null
upk campaign create --id br --release fw-1.0.0 --stages 25%,100% --soak 0 \
    --device-timeout 300s > /dev/null
# Stage 2 under way, read from the fleet's status file (cheap to poll, so
# the moment is not missed on a loaded machine): stage 1 committed, some
# devices updating.
in_flight() {
    python3 - "$FL_DIR/fleet.status.json" "$N" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["status"]
busy = sum(v for k, v in s.items() if k not in ("idle", "committed", "failed", "rolled_back", "rejected"))
print(busy if s["committed"] >= (int(sys.argv[2]) * 25 + 99) // 100 else 0)
PY
}
in_flight=0
stage_two() { in_flight=$(in_flight) && [ "$in_flight" -gt 0 ]; }
fl_wait 90 "stage 2 under way" stage_two
for ((r = 1; r <= RESTARTS; r++)); do
    if [ "$r" -gt 1 ]; then
        # Later restarts: a random moment of what is left of the campaign.
        sleep "$((RANDOM % 3)).$((RANDOM % 10))"
        ! fl_campaign_is br completed || break
    fi
    echo "broker restart $r (SIG$SIG) with $in_flight devices in flight"
    if [ "$SIG" = KILL ]; then
        kill -KILL "$FL_BROKER_PID"
        wait "$FL_BROKER_PID" 2> /dev/null || true
        for i in "${!FL_PIDS[@]}"; do [ "${FL_PIDS[$i]}" != "$FL_BROKER_PID" ] || unset 'FL_PIDS[i]'; done
        FL_PIDS=("${FL_PIDS[@]}")
    else
        fl_broker_stop
    fi
    [ -z "${BR_STORM_OUT:-}" ] || echo "restart $(date +%s.%N)" >> "$BR_STORM_OUT"
    fl_broker_start "$port"
    [ -z "${BR_STORM_OUT:-}" ] || echo "up $(date +%s.%N)" >> "$BR_STORM_OUT"
    e2e_expect "$FL_PORT" "$port" "broker port after restart"
    fl_wait 120 "the controller to answer again" upk campaign list --timeout 2
    # The whole fleet back before the next kill (each storm measured whole).
    [ "$r" -eq "$RESTARTS" ] || fl_wait_sim fleet connected "$N" 180
    in_flight=$(in_flight)
done
fl_wait 240 "campaign br completed" fl_campaign_is br completed
e2e_expect "$(e2e_count br succeeded)" "$N" "succeeded"
e2e_expect "$(e2e_count br failed)" 0 "failed"
e2e_expect "$(e2e_count br timed_out)" 0 "timed out"
fl_wait_sim fleet committed "$N" 120
fl_wait 60 "all devices report 1.0.0" e2e_versions_are 1.0.0 "$N"
# Every device's events, from its first to its commit, are in the store:
# once the controller has acknowledged every event (protocol.md 5.9).
fl_wait_sim fleet events_pending 0 120
python3 - "$FL_DIR/ctl/upkeep.db" "$N" <<'PY' || fl_die "events missing from the store"
import sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
bad = 0
devs = [r[0] for r in db.execute("SELECT id FROM devices")]
for d in devs:
    seqs = [r[0] for r in db.execute("SELECT seq FROM events WHERE device=? ORDER BY seq", (d,))]
    steps = [r[0] for r in db.execute(
        "SELECT step FROM events WHERE device=? AND campaign='br' ORDER BY seq", (d,))]
    if not seqs or seqs != list(range(1, seqs[-1] + 1)) or "committed" not in steps:
        print(f"device {d}: event seqs {seqs[:3]}..{seqs[-3:]} ({len(seqs)}), steps {steps}")
        bad += 1
print(f"events: {len(devs)} devices, {bad} with a gap or no commit")
sys.exit(1 if bad or len(devs) != int(sys.argv[2]) else 0)
PY
[ -z "${BR_STORM_OUT:-}" ] || echo "log $FL_DIR/fleet.log" >> "$BR_STORM_OUT"
if [ -n "${BR_STORM_OUT:-}" ] && [ -n "${BR_STORM_ANALYSE:-}" ]; then
    python3 "$BR_STORM_ANALYSE" "$BR_STORM_OUT" "$N" ${BR_STORM_SUMMARY:+"$BR_STORM_SUMMARY"}
fi
echo "e2e broker restart: ok"
