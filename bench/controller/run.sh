#!/usr/bin/env bash
# Controller benchmark: one campaign over N fake devices (upk_mqtt clients in
# one process) through a real mosquitto + upkeep_broker.so and `upkeep serve`,
# printing the controller's CPU time per device and per status message and
# the campaign's wall time. Loopback only.
#
#   bench/controller/run.sh [BUILD_DIR]     (default: build)
#   env: DEVICES="1000 10000" STAGES=1%,10%,50%,100%
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
DEVICES=${DEVICES:-"1000 10000"}
STAGES=${STAGES:-1%,10%,50%,100%}
for f in "$BUILD/bin/upkeep" "$BUILD/lib/upkeep_broker.so" "$BUILD/bin/upk_controller_bench"; do
    [ -e "$f" ] || { echo "missing $f (build the upkeep, upkeep_broker and upk_controller_bench targets)" >&2; exit 1; }
done
for n in $DEVICES; do
    echo "== $n devices"
    "$BUILD/bin/upk_controller_bench" "$BUILD/bin/upkeep" "$BUILD/lib/upkeep_broker.so" "$n" "$STAGES" 2>/dev/null
done
