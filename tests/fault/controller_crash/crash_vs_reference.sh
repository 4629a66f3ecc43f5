#!/usr/bin/env bash
# One crash run of scenario.sh (seed from the clock, printed) compared with
# a reference run made earlier (the fault_controller_crash_reference test).
#   crash_vs_reference.sh BUILD_DIR REFERENCE_JSON [SEED]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: $0 BUILD_DIR REFERENCE_JSON [SEED]}
ref=${2:?usage: $0 BUILD_DIR REFERENCE_JSON [SEED]}
[ -f "$ref" ] || { echo "no reference run at $ref (run fault_controller_crash_reference)" >&2; exit 1; }
out=$(mktemp "${TMPDIR:-/tmp}/upkeep-crash-XXXXXX.json")
trap 'rm -f "$out"' EXIT
bash "$here/scenario.sh" "$build" crash "$out" "${3:-$(( $(date +%s) % 100000 ))}"
python3 "$here/compare.py" "$ref" "$out"
