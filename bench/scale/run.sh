#!/usr/bin/env bash
# Scale benchmark (not a test): one machine runs mosquitto + upkeep_broker.so,
# `upkeep serve` and upkeep-sim with N devices; a four-stage campaign
# (1%, 10%, 50%, 100%, zero soak) rolls out one release of a given artifact
# size. Reports campaign wall time (create -> completed), the CPU seconds
# each process used during the campaign and its peak RSS. Everything on
# 127.0.0.1; every process it starts is ended on exit.
#
#   bash bench/scale/run.sh BUILD_DIR [DEVICES:KIB ...]
#   bash bench/scale/run.sh build 1000:64 10000:64 1000:1024 10000:1024   (default)
#   PERF=1 ...   also records a perf profile (15 s from the campaign's start) of
#                the broker, the controller and every simulator process, and
#                only those (needs perf): perf report -i BUILD/bench-scale-N-KIB.perf
#   PERF_ONLY=serve|sim|broker  profile that process only; PERF_CG="--call-graph dwarf"
#                for call graphs through code built without frame pointers
#   LINK=1 ...   with link authentication: the controller gets a link secret and
#                every simulated device its link key (docs/security.md)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$(cd "${1:-build}" && pwd)
shift || true
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(1000:64 10000:64 1000:1024 10000:1024)

# CPU seconds (user+sys) of a pid and all its descendants, and their summed
# peak RSS in MiB.
cpu_of() {
    python3 - "$@" <<'EOF'
import os, sys
hz = os.sysconf("SC_CLK_TCK")
def kids(p):
    out = []
    try:
        for t in os.listdir(f"/proc/{p}/task"):
            with open(f"/proc/{p}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out
tot_cpu, tot_rss = 0.0, 0.0
for root in map(int, sys.argv[1:]):
    todo = [root]
    while todo:
        p = todo.pop()
        todo += kids(p)
        try:
            st = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            tot_cpu += (int(st[11]) + int(st[12])) / hz
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmHWM:"):
                    tot_rss += int(line.split()[1]) / 1024
        except OSError:
            pass
print(f"{tot_cpu:.2f} {tot_rss:.0f}")
EOF
}

one_run() {
    local n=$1 kib=$2
    # shellcheck source=../../tests/e2e/fleet-lib.sh
    . "$here/tests/e2e/fleet-lib.sh"
    fl_init "$build"
    # The simulated devices' data dirs on tmpfs (the simulator's own default;
    # fleet-lib puts them under FL_DIR, on disk here): their journals would
    # otherwise measure this machine's disk, not upkeep.
    local shm=""
    if [ -w /dev/shm ] && [ "${SCALE_SIM_ON_DISK:-0}" != 1 ]; then
        shm=$(mktemp -d /dev/shm/upkeep-scale-XXXXXX)
        export UPK_SIM_TMPDIR=$shm
    fi
    # shellcheck disable=SC2064 # expand shm now
    trap "fl_cleanup; rm -rf '$shm'" EXIT
    fl_broker_start
    local link=()
    if [ "${LINK:-0}" = 1 ]; then
        export FL_LINK=1
        link=(--link-secret-file "$FL_DIR/link.secret")
    fi
    fl_serve_start 200
    local t_conn=$SECONDS
    # SIM_PROCS=K overrides the simulator's worker count (default 1 per 1,000).
    fl_sim_start fleet --count "$n" --hw rev-a:50%,rev-b:50% --install-ms 0 --activate-ms 0 \
        --health-ms 0 --connect-rate 2000 ${SIM_PROCS:+--procs "$SIM_PROCS"} ${link[@]+"${link[@]}"}
    fl_wait_sim fleet connected "$n" 600
    t_conn=$((SECONDS - t_conn))
    fl_wait 300 "$n devices registered" fl_devices_are "$n"
    fl_make_artifact "$FL_DIR/art" "$kib" "art-$kib"
    fl_release fw 1.0.0 1 "$FL_DIR/art" > /dev/null
    read -r b0 _ <<< "$(cpu_of "$FL_BROKER_PID")"
    read -r c0 _ <<< "$(cpu_of "$FL_SERVE_PID")"
    read -r s0 _ <<< "$(cpu_of "$FL_SIM_PID")"
    local perf_pid=""
    local t0
    t0=$(date +%s.%N)
    upk campaign create --id scale --release fw-1.0.0 --stages 1%,10%,50%,100% --soak 0 \
        --max-failures 5% --device-timeout 600s > /dev/null
    if [ "${PERF:-0}" = 1 ]; then
        local pids
        case "${PERF_ONLY:-all}" in
        serve) pids=$FL_SERVE_PID ;;
        broker) pids=$FL_BROKER_PID ;;
        sim) pids=$(echo "$FL_SIM_PID" $(pgrep -P "$FL_SIM_PID" || true) | tr ' ' ',') ;;
        *) pids=$(echo "$FL_BROKER_PID" "$FL_SERVE_PID" "$FL_SIM_PID" \
            $(pgrep -P "$FL_SIM_PID" || true) | tr ' ' ',') ;;
        esac
        # shellcheck disable=SC2086 # PERF_CG is a list of options
        perf record -F 499 ${PERF_CG:--g} -p "$pids" -o "$build/bench-scale-$n-$kib.perf" \
            -- sleep 15 > /dev/null 2>&1 &
        perf_pid=$!
    fi
    # Wait for the controller's log line that ends the campaign: asking the
    # controller (CLI + python3) twice a second cost a measurable share of
    # this 2-core machine.
    local deadline=$((SECONDS + 900)) state=""
    while [ $SECONDS -lt $deadline ]; do
        if grep -qE 'campaign=scale (completed|halted|rolled back)' "$FL_DIR/serve.log"; then
            break
        fi
        sleep 0.1
    done
    local t1
    t1=$(date +%s.%N)
    state=$(fl_campaign_state scale 2>/dev/null || true)
    [ -z "$perf_pid" ] || wait "$perf_pid" || true
    read -r b1 brss <<< "$(cpu_of "$FL_BROKER_PID")"
    read -r c1 crss <<< "$(cpu_of "$FL_SERVE_PID")"
    read -r s1 srss <<< "$(cpu_of "$FL_SIM_PID")"
    local ok fail
    ok=$(fl_json "d['counts']['succeeded']" upk campaign show scale --json)
    fail=$(fl_json "d['counts']['failed']+d['counts']['timed_out']" upk campaign show scale --json)
    python3 - "$n" "$kib" "$t0" "$t1" "$state" "$ok" "$fail" "$b0" "$b1" "$brss" "$c0" "$c1" \
        "$crss" "$s0" "$s1" "$srss" "$t_conn" <<'EOF'
import sys
a = sys.argv[1:]
n, kib, t0, t1, state, ok, fail = a[0], a[1], float(a[2]), float(a[3]), a[4], a[5], a[6]
b0, b1, brss, c0, c1, crss, s0, s1, srss, tconn = map(float, a[7:])
print(f"| {int(n):,} | {kib} KiB | {t1 - t0:.1f} s | {state} {ok} ok / {fail} failed "
      f"| {b1 - b0:.1f} s / {brss:.0f} MiB | {c1 - c0:.1f} s / {crss:.0f} MiB "
      f"| {s1 - s0:.1f} s / {srss:.0f} MiB | {tconn:.0f} s |")
EOF
}

echo "| devices | artifact | campaign wall | outcome | broker CPU / peak RSS | controller CPU / peak RSS | sim CPU / peak RSS (all workers) | fleet connect |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for r in "${runs[@]}"; do
    ( one_run "${r%%:*}" "${r##*:}" ) || echo "| ${r%%:*} | ${r##*:} KiB | run failed | | | | | |"
done
