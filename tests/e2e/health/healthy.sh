#!/usr/bin/env bash
# Health gate, healthy release: with --bake every stage waits its bake window
# (devices report health meanwhile), the gate finds no unhealthy device and
# the campaign passes every stage. $1 = build dir.
. "$(dirname "$0")/../fleet/common.sh"
N=4
BAKE=15 # long enough for watch to connect on a loaded machine and see stage 1 bake
fl_broker_start
fl_serve_start 200
fl_sim_start fleet --count $N --hw rev-a:50%,rev-b:50% --install-ms 50 --health-ms 20
fl_wait_sim fleet connected $N 120
fl_wait 60 "$N devices registered" fl_devices_are $N

fl_make_artifact "$FL_DIR/a1" 16 a1
fl_release fw 1.2.0 7 "$FL_DIR/a1" > /dev/null
start=$(date +%s)
upk campaign create --id ok --release fw-1.2.0 --stages 50%,100% --soak 0 \
    --max-failures 0% --device-timeout 60s --bake ${BAKE}s --max-unhealthy 0% \
    --restart-limit 1 > /dev/null
upk campaign show ok --json > "$FL_DIR/show.json"
e2e_expect "$(fl_json 'd["bake_s"]' upk campaign show ok --json)" "$BAKE" "bake_s of the campaign"
rc=0
timeout 120 "$FL_BIN/upkeep" campaign watch ok --interval 0.5 > "$FL_DIR/watch.txt" || rc=$?
e2e_expect "$rc" 0 "campaign watch exit code (completed)"
took=$(($(date +%s) - start))
e2e_expect "$(fl_campaign_state ok)" completed "campaign state"
fl_wait 30 "all devices report 1.2.0" e2e_versions_are 1.2.0 $N
# Two stages, each held for the bake window.
[ "$took" -ge $((2 * BAKE)) ] || fl_die "campaign took ${took}s, less than two bake windows"
# The gate line was shown while baking, with the updated devices judged healthy.
grep -E 'gate="bake' "$FL_DIR/watch.txt" | head -2 || true
grep -Eq 'stage=1/2 .* gate="bake [0-9]+s left: 0/2 unhealthy"' "$FL_DIR/watch.txt" \
    || fl_die "no stage 1 bake line"
grep -Eq 'stage=2/2 .* gate="bake [0-9]+s left: 0/4 unhealthy"' "$FL_DIR/watch.txt" \
    || fl_die "no stage 2 bake line"
echo "healthy scenario OK (took ${took}s)"
