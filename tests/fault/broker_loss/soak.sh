#!/usr/bin/env bash
# Long form of the broker-loss test for `make soak`: BL_ROUNDS campaigns
# (default 4) of BL_DEVICES simulated devices (default 300), each with
# BL_RESTARTS broker SIGKILLs (default 3), then BL_KILL_LOOP_ROUNDS rounds
# (default 4) of kill_loop.sh: 300 devices in one upkeep-sim process starved
# of CPU (KL_STARVE, default 400:100), the broker SIGKILLed up to KL_KILLS
# times (default 25) at random moments, the campaign completed after. Stops
# by itself after the rounds or BL_MAX_SECONDS (default 2700). Prints every
# round's reconnect storm and a total line.
#   soak.sh BUILD_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: $0 BUILD_DIR}
rounds=${BL_ROUNDS:-4} loops=${BL_KILL_LOOP_ROUNDS:-4} max_s=${BL_MAX_SECONDS:-2700}
summary=$(mktemp "${TMPDIR:-/tmp}/upkeep-storm-sum-XXXXXX")
loop_log=$(mktemp "${TMPDIR:-/tmp}/upkeep-kill-loop-XXXXXX")
trap 'rm -f "$summary" "$loop_log"' EXIT
done_rounds=0 fails=0
for ((r = 0; r < rounds; r++)); do
    if [ "$r" -gt 0 ] && [ $SECONDS -ge "$max_s" ]; then break; fi
    rc=0
    bash "$here/run.sh" "$build" "${BL_DEVICES:-300}" "${BL_RESTARTS:-3}" "$summary" || rc=$?
    done_rounds=$((done_rounds + 1))
    [ $rc -eq 0 ] || { fails=$((fails + 1)); echo "broker_loss: round $r FAILED"; }
done
kills=$(grep -c '^restart' "$summary" || true)
loop_rounds=0 loop_kills=0 loop_fails=0
for ((r = 0; r < loops; r++)); do
    if [ $SECONDS -ge "$max_s" ]; then break; fi
    rc=0
    KL_DEVICES=${KL_DEVICES:-300} KL_KILLS=${KL_KILLS:-25} KL_SECONDS=${KL_SECONDS:-60} \
        KL_STARVE=${KL_STARVE:-400:100} bash "$here/kill_loop.sh" "$build" > "$loop_log" 2>&1 || rc=$?
    loop_rounds=$((loop_rounds + 1))
    k=$(sed -n 's/^broker kill loop: \([0-9]*\) kills in.*/\1/p' "$loop_log" | head -n 1)
    loop_kills=$((loop_kills + ${k:-0}))
    if [ $rc -eq 0 ]; then
        tail -n 1 "$loop_log"
    else
        loop_fails=$((loop_fails + 1))
        echo "broker_loss: kill loop round $r FAILED"
        tail -n 60 "$loop_log"
    fi
done
echo "broker_loss: rounds=$done_rounds broker_kills=$kills failures=$fails" \
    "kill_loop_rounds=$loop_rounds kill_loop_kills=$loop_kills kill_loop_failures=$loop_fails" \
    "seconds=$SECONDS"
cat "$summary"
[ $fails -eq 0 ] && [ $loop_fails -eq 0 ]
