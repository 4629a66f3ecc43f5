#!/usr/bin/env bash
# One run of the controller crash scenario (issue 8 part 2): a real broker
# with the plugin, `upkeep serve` and a simulated fleet run two staged
# campaigns, a healthy release (-> completed) and one whose health check
# fails on every rev-b device (-> halted at the canary stage, rolled back).
# In "crash" mode `upkeep serve` is SIGKILLed at random points of each
# campaign (random delays from a printed seed) and restarted each time.
# The end state is checked (check.py) and its decisions are written to OUT
# for comparison with a run without kills (compare.py).
#
#   scenario.sh BUILD_DIR ref|crash OUT_JSON [SEED]
# Environment: CRASH_DEVICES (default 12), CRASH_INSTALL_MS (default 1200),
# CRASH_MAX_DELAY_MS (longest life of a controller between kills, 1500; each
# life is drawn uniformly from 0 up to that, so some kills land before the
# restarted controller has even connected).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mode=${2:?usage: $0 BUILD_DIR ref|crash OUT_JSON [SEED]}
out=${3:?usage: $0 BUILD_DIR ref|crash OUT_JSON [SEED]}
seed=${4:-$(date +%s)}
case $mode in ref | crash) ;; *) echo "mode must be ref or crash" >&2; exit 2 ;; esac
# shellcheck source=../../e2e/fleet/common.sh
. "$here/../../e2e/fleet/common.sh" "$1"

N=${CRASH_DEVICES:-12}
MAX_DELAY_MS=${CRASH_MAX_DELAY_MS:-1500}
RANDOM=$seed
KILLS=0
echo "controller_crash: mode=$mode devices=$N seed=$seed"

# Drops a pid we ended ourselves from the cleanup list (it may be reused).
untrack() {
    local i
    for i in "${!FL_PIDS[@]}"; do
        [ "${FL_PIDS[$i]}" != "$1" ] || unset 'FL_PIDS[i]'
    done
    FL_PIDS=("${FL_PIDS[@]}")
}

serve_up() {
    "$FL_BIN/upkeep" serve -c "$FL_DIR/serve.json" >> "$FL_DIR/serve.log" 2>&1 &
    FL_SERVE_PID=$!
    fl_track "$FL_SERVE_PID"
}

# Kills `upkeep serve` (SIGKILL) after a random delay and starts it again,
# until campaign $1 has a final state; then leaves a controller running.
# Bounded by a deadline and a kill count.
crash_until_final() {
    local id=$1 deadline=$((SECONDS + ${CRASH_DEADLINE_S:-240})) st="" n=0
    while [ $SECONDS -lt $deadline ] && [ $n -lt 200 ]; do
        local delay_ms=$((RANDOM % MAX_DELAY_MS))
        sleep "$((delay_ms / 1000)).$(printf '%03d' $((delay_ms % 1000)))"
        if kill -KILL "$FL_SERVE_PID" 2> /dev/null; then
            wait "$FL_SERVE_PID" 2> /dev/null || true
            untrack "$FL_SERVE_PID"
            KILLS=$((KILLS + 1))
            n=$((n + 1))
            echo "kill $KILLS: campaign $id after ${delay_ms} ms" >> "$FL_DIR/kills.txt"
        fi
        serve_up
        # The campaign's state as last committed (read-only; the store is
        # WAL, so this never blocks the controller).
        st=$(sqlite3 -readonly "$FL_DIR/ctl/upkeep.db" \
            "SELECT state FROM campaigns WHERE id='$id'" 2> /dev/null || true)
        case $st in completed | rolled_back | aborted | paused) break ;; esac
    done
    fl_wait 60 "the controller to answer" upk campaign list --timeout 2
    echo "campaign $id: $n kills; state committed before the last restart: ${st:-unknown}"
}

# Waits until no device of campaign $1 is assigned or in progress and the
# fleet has nothing under way, so both runs are compared at rest.
settle() {
    local id=$1
    busy() {
        local c
        c=$(fl_json 'sum(d["counts"].get(k,0) for k in ("assigned","in_progress"))' \
            upk campaign show "$id" --json)
        [ "$c" = 0 ]
    }
    fl_wait 120 "campaign $id settled" busy
    fl_wait 120 "fleet idle or done" sim_at_rest
}
sim_at_rest() {
    python3 - "$FL_DIR/fleet.status.json" "$N" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["status"]
busy = sum(v for k, v in s.items() if k not in ("idle", "committed", "rolled_back", "failed", "rejected"))
# At rest includes: every event made so far acknowledged as stored.
sys.exit(0 if d["connected"] == int(sys.argv[2]) and busy == 0 and d["events_pending"] == 0 else 1)
EOF
}

snapshot() {
    local tag=$1
    upk campaign show "$tag" --devices --json > "$FL_DIR/$tag.campaign.json"
    upk devices --json > "$FL_DIR/$tag.devices.json"
    # The devices' own retained state, as an admin reads it at the broker.
    mosquitto_sub -h 127.0.0.1 -p "$FL_PORT" -u root -P "$(cat "$FL_DIR/root.pw")" -V mqttv5 \
        -t 'upkeep/v1/dev/+/state' -C "$N" -W 20 -F '%t %p' > "$FL_DIR/$tag.retained.txt" || true
    cp "$FL_DIR/fleet.status.json" "$FL_DIR/$tag.sim.json"
}

fl_broker_start
fl_serve_start 200
fl_sim_start fleet --count "$N" --hw rev-a:50%,rev-b:50% --install-ms "${CRASH_INSTALL_MS:-1200}" \
    --health-ms 50 --health-fail rev-b:1@1.1.0 --reconnect-max-ms 2000 --ack-timeout-ms 2000 \
    --seed 7
fl_wait_sim fleet connected "$N" 120
registered() { [ "$(fl_json 'len(d)' upk devices --json)" = "$N" ]; }
fl_wait 60 "$N devices registered" registered
fl_make_artifact "$FL_DIR/a1" 64 a1
fl_release fw 1.0.0 1 "$FL_DIR/a1" > /dev/null
fl_make_artifact "$FL_DIR/a2" 64 a2
fl_release fw 1.1.0 1 "$FL_DIR/a2" > /dev/null

# Healthy release: every stage passes.
upk campaign create --id good --release fw-1.0.0 --stages 10%,50%,100% --soak 0 \
    --max-failures 0% --device-timeout 300s > /dev/null
if [ "$mode" = crash ]; then crash_until_final good; fi
fl_wait 180 "campaign good final" fl_campaign_is good completed
settle good
snapshot good

# Failing release: rev-b fails its health check; the canary stage halts it.
upk campaign create --id bad --release fw-1.1.0 --stages 25%,50%,100% --soak 0 \
    --max-failures 5% --device-timeout 300s --auto-rollback > /dev/null
if [ "$mode" = crash ]; then crash_until_final bad; fi
fl_wait 180 "campaign bad final" fl_campaign_is bad rolled_back
settle bad
fl_wait 120 "every device back on 1.0.0" e2e_versions_are 1.0.0 "$N"
fl_wait 60 "fleet at rest" sim_at_rest
snapshot bad
snapshot good # again, after the rollback: good's outcomes must not have moved

python3 "$here/check.py" "$FL_DIR" "$N" "$mode" "$seed" "$KILLS" "$out"
echo "controller_crash: $mode run ok ($KILLS kills)"
