#!/usr/bin/env bash
# `make soak`: the long forms of the fault tests, bounded and stopping by
# themselves. Usage: scripts/soak.sh BUILD_DIR (make passes build-san).
#
# Convention: every tests/fault/<dir>/soak.sh is run, in name order, as
#     bash tests/fault/<dir>/soak.sh BUILD_DIR
# with the repository root as working directory. It runs its long form
# against the binaries in BUILD_DIR, prints its own figures, and exits 0
# (passed), 77 (skipped: something it needs is missing) or anything else
# (failed). Each must bound itself (a trial count and its own time limit);
# this script also stops any of them after UPK_SOAK_TIMEOUT seconds
# (default 7200) and counts that as a failure. UPK_SOAK_ONLY=<dir> runs one.
# The logs go to BUILD_DIR/soak/<dir>.log as well as to stdout.
set -uo pipefail
build=${1:?usage: scripts/soak.sh BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$build" && pwd) || { echo "soak: no build dir $1" >&2; exit 1; }
limit=${UPK_SOAK_TIMEOUT:-7200}
only=${UPK_SOAK_ONLY:-}
mkdir -p "$build/soak"
cd "$root"
failed=() passed=() skipped=()
for script in tests/fault/*/soak.sh; do
    [ -f "$script" ] || continue
    name=$(basename "$(dirname "$script")")
    if [ -n "$only" ] && [ "$only" != "$name" ]; then
        continue
    fi
    echo "==== soak: $name (limit ${limit}s) ===="
    start=$SECONDS
    timeout --signal=TERM --kill-after=60 "$limit" bash "$script" "$build" 2>&1 |
        tee "$build/soak/$name.log"
    st=${PIPESTATUS[0]}
    echo "==== soak: $name exit $st after $((SECONDS - start)) s ===="
    case $st in
    0) passed+=("$name") ;;
    77) skipped+=("$name") ;;
    *) failed+=("$name") ;;
    esac
done
echo "soak: passed: ${passed[*]:-none}; skipped: ${skipped[*]:-none}; failed: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
