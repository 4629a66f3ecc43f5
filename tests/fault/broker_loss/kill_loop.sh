#!/usr/bin/env bash
# Broker kill loop (issue 8, the upkeep-sim SIGSEGV after a broker kill):
# mosquitto is SIGKILLed again and again at random moments while a simulated
# fleet (one upkeep-sim process) downloads an update, so that kills land
# while devices are mid-download, mid-connect and mid-subscribe, and while
# the simulator still works through events queued before the previous kill.
# After every kill the simulator must still be alive; at the end the whole
# fleet must be connected again and the campaign must complete with every
# device committed (nothing lost, nothing stuck).
#   kill_loop.sh BUILD_DIR
# Knobs: KL_DEVICES (60), KL_KILLS (12), KL_PROCS (1: all devices in one
# process, as in the crash), KL_SECONDS (stop killing after this, 45),
# KL_ARTIFACT_KIB (384), KL_INSTALL_MS (3000),
# KL_STARVE=STOP_MS:RUN_MS (off by default): during the kills the simulator
# is stopped for STOP_MS and let run for RUN_MS in turn (SIGSTOP/SIGCONT),
# as on a machine at load 40 where its loop ran tens of seconds behind the
# broker; Paho's connect and keepalive timeouts then fire as they did there.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/../../.." && pwd)
# shellcheck source=../../e2e/fleet-lib.sh
. "$root/tests/e2e/fleet-lib.sh"
fl_init "$build"
trap fl_cleanup EXIT
trap 'exit 130' INT TERM
# (the EXIT trap is replaced below, once the starving helper exists)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}

N=${KL_DEVICES:-60}
KILLS=${KL_KILLS:-12}
MAX_S=${KL_SECONDS:-45}
FL_MOSQ_EXTRA=${FL_MOSQ_EXTRA:-autosave_interval 1}

sim_alive() {
    kill -0 "$FL_SIM_PID" 2> /dev/null && return 0
    local rc=0
    wait "$FL_SIM_PID" || rc=$?
    fl_die "upkeep-sim died (exit status $rc$([ $rc -gt 128 ] && echo ", signal $((rc - 128))")) $1"
}

starve_pid=
starve_stop() {
    [ -n "$starve_pid" ] || return 0
    kill "$starve_pid" 2> /dev/null || true
    wait "$starve_pid" 2> /dev/null || true
    starve_pid=
    kill -CONT "$FL_SIM_PID" 2> /dev/null || true
}
starve_start() {
    local stop_ms=${KL_STARVE%%:*} run_ms=${KL_STARVE##*:}
    (
        trap 'kill -CONT "$FL_SIM_PID" 2> /dev/null; exit 0' TERM
        while kill -STOP "$FL_SIM_PID" 2> /dev/null; do
            sleep "$(printf '%d.%03d' $((stop_ms / 1000)) $((stop_ms % 1000)))"
            kill -CONT "$FL_SIM_PID" 2> /dev/null || break
            sleep "$(printf '%d.%03d' $((run_ms / 1000)) $((run_ms % 1000)))"
        done
    ) &
    starve_pid=$!
}
trap 'rc=$?; starve_stop; set +e; (exit $rc); fl_cleanup' EXIT

fl_broker_start
port=$FL_PORT
fl_serve_start 200
# Short reconnect waits: every kill is followed by many connect attempts,
# some refused, some cut by the next kill.
fl_sim_start fleet --count "$N" --procs "${KL_PROCS:-1}" --hw rev-a:50%,rev-b:50% \
    --install-ms "${KL_INSTALL_MS:-3000}" --health-ms 200 --reconnect-max-ms 1500 --chunk-size 4096
fl_wait_sim fleet connected "$N" 120
fl_wait 60 "$N devices registered" fl_devices_are "$N"

fl_make_artifact "$FL_DIR/a1" "${KL_ARTIFACT_KIB:-384}" kl
fl_release fw 1.0.0 1 "$FL_DIR/a1" > /dev/null
upk campaign create --id kl --release fw-1.0.0 --stages 100% --soak 0 \
    --device-timeout 600s > /dev/null
# The update under way on the fleet (some devices past idle).
under_way() {
    python3 - "$FL_DIR/fleet.status.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["status"]
sys.exit(0 if sum(v for k, v in s.items() if k not in ("idle", "failed", "rejected")) > 0 else 1)
PY
}
fl_wait 120 "the update under way" under_way

[ -z "${KL_STARVE:-}" ] || starve_start
setup_s=$SECONDS start=$SECONDS kills=0
while [ $kills -lt "$KILLS" ] && [ $((SECONDS - start)) -lt "$MAX_S" ]; do
    # A random moment 0 to 2.9 s after the broker came back, so that some
    # kills hit connects and subscribes, others a running download.
    sleep "$((RANDOM % 3)).$((RANDOM % 10))"
    [ $kills -gt 0 ] || sleep 0.1
    kill -KILL "$FL_BROKER_PID"
    wait "$FL_BROKER_PID" 2> /dev/null || true
    for i in "${!FL_PIDS[@]}"; do [ "${FL_PIDS[$i]}" != "$FL_BROKER_PID" ] || unset 'FL_PIDS[i]'; done
    FL_PIDS=("${FL_PIDS[@]}")
    kills=$((kills + 1))
    # Down for 0 to 0.9 s: connect attempts are refused meanwhile.
    sleep "0.$((RANDOM % 10))"
    sim_alive "after broker kill $kills"
    fl_broker_start "$port"
    [ "$FL_PORT" = "$port" ] || fl_die "broker came back on $FL_PORT, not $port"
    sim_alive "after broker restart $kills"
done
starve_stop
end_kills=$SECONDS
echo "broker kill loop: $kills kills in $((SECONDS - start)) s with $N devices"
[ $kills -ge 3 ] || fl_die "only $kills kills happened"

fl_wait 120 "the whole fleet connected again" fl_sim_is fleet connected "$N"
sim_alive "after the kills"
fl_wait 240 "campaign kl completed" fl_campaign_is kl completed
fl_wait_sim fleet committed "$N" 120
sim_alive "at the end"
echo "broker kill loop: ok ($kills kills, $N devices, every device committed;" \
    "setup ${setup_s} s, kills $((end_kills - start)) s, recovery $((SECONDS - end_kills)) s)"
