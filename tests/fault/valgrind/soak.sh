#!/usr/bin/env bash
# Long run of the valgrind tests (make soak; scripts/soak.sh passes the build
# dir as $1): the agent through UPK_VG_AGENT_ROUNDS rounds of 7 updates each
# (default 40: 281 campaigns with the first full install) in ONE agent process
# under memcheck, and mosquitto + plugin through UPK_VG_BROKER_ROUNDS rounds
# of client traffic (default 20). Bounded: each run has a time limit
# (UPK_VG_SOAK_TIMEOUT seconds, default 3000; both together stay under
# scripts/soak.sh's 7200) and stops by itself. Exits 0 when both passed, 77
# when both were skipped (no valgrind), 1 otherwise. Measured figures:
# docs/reliability.md, "Memory safety".
set -euo pipefail
build=${1:?usage: soak.sh BUILD_DIR}
agent_rounds=${UPK_VG_AGENT_ROUNDS:-40}
broker_rounds=${UPK_VG_BROKER_ROUNDS:-20}
limit=${UPK_VG_SOAK_TIMEOUT:-3000}
rc=0
skipped=0
for t in agent broker; do
    bin="$build/tests/test_valgrind_$t"
    if [ ! -x "$bin" ]; then
        echo "valgrind soak: $bin not built" >&2
        rc=1
        continue
    fi
    rounds=$agent_rounds
    [ "$t" = broker ] && rounds=$broker_rounds
    echo "valgrind soak: $t, $rounds rounds (limit ${limit}s)"
    start=$SECONDS
    set +e
    UPK_VG_ROUNDS=$rounds timeout --signal=TERM --kill-after=30 "$limit" "$bin"
    st=$?
    set -e
    echo "valgrind soak: $t exit $st after $((SECONDS - start)) s"
    # 77: skipped (no valgrind); anything else but 0 fails the soak.
    if [ "$st" -eq 77 ]; then
        skipped=$((skipped + 1))
    elif [ "$st" -ne 0 ]; then
        rc=1
    fi
done
if [ "$rc" -eq 0 ] && [ "$skipped" -eq 2 ]; then
    exit 77
fi
exit $rc
