#!/usr/bin/env bash
# Release import benchmark: the time and CPU that hashing an artifact costs
# where a release enters upkeep. For one artifact of SIZE_MIB, it times
#   - `upkeep release create` (the operator's machine: reads and hashes the
#     artifact, signs the manifest; no upload), wall and CPU;
#   - `upkeep release import` of that bundle into a running `upkeep serve`
#     through mosquitto + upkeep_broker.so on 127.0.0.1: the import's wall time
#     and the CPU the controller process spent on it (utime + stime from
#     /proc/PID/stat before and after; the controller hashes every uploaded
#     chunk and writes it to its blob store);
# median of REPEAT runs. With BEFORE_BUILD set, the same figures for that
# build's `upkeep` (CLI and serve) in the same run, alternating run by run,
# so that a change in machine load hits both alike. The broker (with the
# plugin) comes from BUILD in both cases, with the operator rate limit off.
#
#   bench/controller/import.sh [BUILD_DIR]   (default: build; needs upkeep,
#                                             upkeep-sim, upkeep_broker)
#   env: SIZE_MIB=32 REPEAT=3 BEFORE_BUILD=dir (one 32 MiB import takes about 80 s here)
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
SIZE_MIB=${SIZE_MIB:-32}
REPEAT=${REPEAT:-3}
BEFORE=
if [ -n "${BEFORE_BUILD:-}" ]; then
    case "$BEFORE_BUILD" in /*) ;; *) BEFORE_BUILD="$ROOT/$BEFORE_BUILD" ;; esac
    BEFORE=$BEFORE_BUILD/bin/upkeep
    [ -x "$BEFORE" ] || { echo "missing $BEFORE" >&2; exit 1; }
fi

# shellcheck source=../../tests/e2e/fleet-lib.sh
. "$ROOT/tests/e2e/fleet-lib.sh"
fl_init "$BUILD"
trap fl_cleanup EXIT
# Unlimited operator traffic: the broker's byte budget would otherwise set
# the import's pace (8 MiB/s in fleet-lib's configuration).
python3 - "$FL_DIR/upkeep-broker.json" <<'EOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["rate_limits"]["operator"] = {"messages_per_second": 0, "bytes_per_second": 0,
                                "max_payload_bytes": 0}
json.dump(c, open(p, "w"))
EOF
fl_broker_start
NEW_BIN=$FL_BIN

ART=$FL_DIR/artifact.bin
head -c $((SIZE_MIB << 20)) /dev/urandom > "$ART"

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

# one_run LABEL BIN_DIR N: create + import with that build's upkeep, into a
# fresh serve of the same build; appends "LABEL create_wall create_cpu
# import_wall serve_cpu" (seconds) to $FL_DIR/times.
one_run() {
    local label=$1 bin=$2 n=$3 out t0 t1 c0 c1
    FL_BIN=$bin
    rm -rf "$FL_DIR/ctl" "$FL_DIR/rel" && mkdir -p "$FL_DIR/ctl" "$FL_DIR/rel"
    local TIMEFORMAT='%3R %3U %3S'
    out=$( { time upk release create "$ART" --name "fw$label" --version "1.0.$n" --security-version 1 \
        --hw rev-a --module ab-dir --expires 30d --key "$FL_DIR/release.key" \
        --out "$FL_DIR/rel" > /dev/null; } 2>&1 ) || fl_die "$label: release create failed"
    local cw cc
    cw=$(echo "$out" | awk '{ print $1 }')
    cc=$(echo "$out" | awk '{ print $2 + $3 }')
    fl_serve_start
    c0=$(cpu_ticks "$FL_SERVE_PID")
    t0=$(date +%s.%N)
    upk release import "$FL_DIR/rel/fw$label-1.0.$n.release.json" --timeout 120 > /dev/null ||
        fl_die "$label: release import failed"
    t1=$(date +%s.%N)
    c1=$(cpu_ticks "$FL_SERVE_PID")
    fl_serve_stop
    echo "$label $cw $cc $(echo "$t0 $t1" | awk '{ printf "%.3f", $2 - $1 }')" \
        "$(echo "$c0 $c1 $TCK" | awk '{ printf "%.3f", ($2 - $1) / $3 }')" >> "$FL_DIR/times"
    FL_BIN=$NEW_BIN
}

: > "$FL_DIR/times"
for i in $(seq "$REPEAT"); do
    [ -z "$BEFORE" ] || one_run before "$BEFORE_BUILD/bin" "$i"
    one_run after "$NEW_BIN" "$i"
done

med() { awk -v k="$1" -v c="$2" '$1 == k { print $c }' "$FL_DIR/times" | sort -n |
        awk '{ v[NR] = $1 } END { printf "%.3f", v[int((NR + 1) / 2)] }'; }
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "artifact: $SIZE_MIB MiB, median of $REPEAT"
echo "| build | release create wall s | release create CPU s | import wall s | controller CPU during import s | create MB/s (CPU) | controller MB/s (CPU) |"
echo "|---|--:|--:|--:|--:|--:|--:|"
for k in before after; do
    grep -q "^$k " "$FL_DIR/times" || continue
    cc=$(med $k 3); sc=$(med $k 5)
    echo "| $k | $(med $k 2) | $cc | $(med $k 4) | $sc |" \
        "$(awk -v s="$SIZE_MIB" -v c="$cc" 'BEGIN { printf "%.0f", s * 1.048576 / c }') |" \
        "$(awk -v s="$SIZE_MIB" -v c="$sc" 'BEGIN { printf "%.0f", s * 1.048576 / c }') |"
done
