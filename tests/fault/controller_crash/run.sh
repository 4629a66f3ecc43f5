#!/usr/bin/env bash
# Controller crash campaign driver: the scenario once without kills (the
# reference), then TRIALS times with `upkeep serve` SIGKILLed at random
# points, each run's end state checked and its stage decisions compared with
# the reference. Seeds are printed; replay one with SEED=<seed> TRIALS=1.
#
#   run.sh BUILD_DIR [TRIALS] [MAX_SECONDS]
# Stops by itself: after TRIALS crash runs, or before starting a run once
# MAX_SECONDS have passed (at least one crash run is always made).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: $0 BUILD_DIR [TRIALS] [MAX_SECONDS]}
trials=${2:-1}
max_s=${3:-0}
work=$(mktemp -d "${TMPDIR:-/tmp}/upkeep-crash-XXXXXX")
trap 'rm -rf "$work"' EXIT
seed=${SEED:-$(( $(date +%s) % 100000 ))}
bash "$here/scenario.sh" "$build" ref "$work/ref.json"
done_trials=0 fails=0 kills=0 missing=0
for ((t = 0; t < trials; t++)); do
    if [ "$t" -gt 0 ] && [ "$max_s" -gt 0 ] && [ $SECONDS -ge "$max_s" ]; then break; fi
    s=$((seed + t))
    rc=0
    bash "$here/scenario.sh" "$build" crash "$work/run-$t.json" "$s" || rc=$?
    if [ $rc -eq 0 ]; then
        python3 "$here/compare.py" "$work/ref.json" "$work/run-$t.json" || rc=$?
    fi
    done_trials=$((done_trials + 1))
    if [ $rc -ne 0 ]; then
        fails=$((fails + 1))
        echo "controller_crash: trial $t (seed $s) FAILED"
    fi
    if [ -f "$work/run-$t.json" ]; then
        kills=$((kills + $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["kills"])' "$work/run-$t.json")))
        missing=$((missing + $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["events_stored"] - json.load(open(sys.argv[2]))["events_stored"])' "$work/ref.json" "$work/run-$t.json")))
    fi
done
echo "controller_crash: trials=$done_trials kills=$kills failures=$fails events_missing=$missing first_seed=$seed seconds=$SECONDS"
[ $fails -eq 0 ]
