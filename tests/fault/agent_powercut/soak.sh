#!/usr/bin/env bash
# Long form of the agent power-cut campaign (scripts/soak.sh convention:
# $1 = build dir; exit 0 passed, 77 skipped, else failed). UPK_PC_TRIALS
# trials (default 600, a third per install module) with up to 4 kills each,
# seed UPK_PC_SEED (default: today's UTC date), stopping by itself after
# UPK_PC_SECONDS (default 5400) even if not all trials ran.
set -euo pipefail
build=${1:?usage: soak.sh BUILD_DIR}
bin="$build/tests/upk_powercut"
if [ ! -x "$bin" ]; then
    echo "powercut soak: $bin not built" >&2
    exit 77
fi
trials=${UPK_PC_TRIALS:-600}
seed=${UPK_PC_SEED:-$(date -u +%Y%m%d)}
secs=${UPK_PC_SECONDS:-5400}
echo "powercut soak: $bin --trials $trials --seed $seed --max-kills 4 --max-seconds $secs"
"$bin" --window-checks
exec "$bin" --trials "$trials" --seed "$seed" --max-kills 4 --max-seconds "$secs"
