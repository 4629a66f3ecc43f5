#!/usr/bin/env bash
# Long form of the broker-loss test for `make soak`: BL_ROUNDS campaigns
# (default 4) of BL_DEVICES simulated devices (default 300), each with
# BL_RESTARTS broker SIGKILLs (default 3); stops by itself after the rounds
# or BL_MAX_SECONDS (default 1800). Prints every round's reconnect storm and
# a total line.
#   soak.sh BUILD_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: $0 BUILD_DIR}
rounds=${BL_ROUNDS:-4} max_s=${BL_MAX_SECONDS:-1800}
summary=$(mktemp "${TMPDIR:-/tmp}/upkeep-storm-sum-XXXXXX")
trap 'rm -f "$summary"' EXIT
done_rounds=0 fails=0
for ((r = 0; r < rounds; r++)); do
    if [ "$r" -gt 0 ] && [ $SECONDS -ge "$max_s" ]; then break; fi
    rc=0
    bash "$here/run.sh" "$build" "${BL_DEVICES:-300}" "${BL_RESTARTS:-3}" "$summary" || rc=$?
    done_rounds=$((done_rounds + 1))
    [ $rc -eq 0 ] || { fails=$((fails + 1)); echo "broker_loss: round $r FAILED"; }
done
kills=$(grep -c '^restart' "$summary" || true)
echo "broker_loss: rounds=$done_rounds broker_kills=$kills failures=$fails seconds=$SECONDS"
cat "$summary"
[ $fails -eq 0 ]
