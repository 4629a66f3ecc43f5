#!/usr/bin/env bash
# Long run of the valgrind tests (make soak; scripts/soak.sh passes the build
# dir as $1): the agent through UPK_VG_AGENT_ROUNDS rounds of 7 updates each
# (default 40: 281 campaigns with the first full install) in ONE agent process
# under memcheck, and mosquitto + plugin through UPK_VG_BROKER_ROUNDS rounds
# of client traffic (default 20). Bounded: each run has a time limit
# (UPK_VG_SOAK_TIMEOUT seconds, default 3600) and stops by itself.
set -euo pipefail
build=${1:?usage: soak.sh BUILD_DIR}
agent_rounds=${UPK_VG_AGENT_ROUNDS:-40}
broker_rounds=${UPK_VG_BROKER_ROUNDS:-20}
limit=${UPK_VG_SOAK_TIMEOUT:-3600}
rc=0
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
    if [ "$st" -ne 0 ] && [ "$st" -ne 77 ]; then
        rc=1
    fi
done
exit $rc
