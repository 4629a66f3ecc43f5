#!/usr/bin/env bash
# Health gate, restart loop: a release that installs and commits fine but
# makes every device restart its agent over and over (upkeep-sim
# --restart-after-commit, through the agent's real restart path) halts at the
# canary stage. Asserts the stage, the halt reason (naming restarts) and the
# state from `upkeep campaign show --json`, and the restarts the devices
# reported from `upkeep devices show --json`. $1 = build dir. Prints the
# outputs it checks (docs/operator-guide.md quotes them).
. "$(dirname "$0")/../fleet/common.sh"
N=20
BAKE=15
LOOPS=5
fl_broker_start
fl_serve_start 200
fl_sim_start fleet --count $N --hw rev-a:50%,rev-b:50% --install-ms 50 --health-ms 20 \
    --restart-after-commit "*:$LOOPS@1.3.0"
fl_wait_sim fleet connected $N 120
fl_wait 60 "$N devices registered" fl_devices_are $N

fl_make_artifact "$FL_DIR/a1" 16 loop
fl_release fw 1.3.0 8 "$FL_DIR/a1" > /dev/null
upk campaign create --id loop --release fw-1.3.0 --stages 10%,50%,100% --soak 0 \
    --max-failures 0% --device-timeout 60s --bake ${BAKE}s --max-unhealthy 0% \
    --restart-limit 2 > /dev/null
# watch exits 1 on the halt (docs/operator-guide.md section 9); it is still
# stopped by pid in case it has not.
"$FL_BIN/upkeep" campaign watch loop --interval 1 > "$FL_DIR/watch.txt" 2>&1 &
watch_pid=$!
fl_track "$watch_pid"
fl_wait 90 "campaign loop halted" fl_campaign_is loop paused
fl_wait 10 "campaign watch shows the halt" grep -q 'state=paused' "$FL_DIR/watch.txt"
fl_stop "$watch_pid" 5
upk campaign show loop --devices --json > "$FL_DIR/show.json"
echo "--- campaign watch (last lines)"
tail -4 "$FL_DIR/watch.txt"

py() { python3 -c "import json,sys; d=json.load(open('$FL_DIR/show.json')); print($1)"; }
e2e_expect "$(py 'd["stage"]')" 1 "halted at stage (1-based: the canary)"
e2e_expect "$(py 'd["state"]')" paused "campaign state"
e2e_expect "$(py 'd["counts"]["succeeded"]')" 2 "canary devices committed"
e2e_expect "$(py 'd["counts"].get("pending", 0)')" 18 "devices left untouched"
reason=$(py 'd["reason"]')
echo "reason: $reason"
[[ "$reason" == "stage 1: health gate: 2 of 2 updated devices unhealthy (100.00% > 0.00%): 2 restarted more than 2 times" ]] \
    || fl_die "halt reason: $reason"
# The watch showed the bake countdown with the restart loops while baking.
grep -Eq 'gate="bake [0-9]+s left: [12]/2 unhealthy \([12] restart loop\)"' "$FL_DIR/watch.txt" \
    || fl_die "no bake countdown with restart loops in campaign watch"

# Device reports: each canary device reported its restarts for this campaign,
# and is on 1.3.0 (committed: the restarts came after commit).
canary=$(python3 -c "import json; d=json.load(open('$FL_DIR/show.json'))
print(' '.join(sorted(x['device'] for x in d['device_list'] if x['state']=='succeeded')))")
for dev in $canary; do
    upk devices show "$dev" --json > "$FL_DIR/$dev.json"
    read -r restarts version <<< "$(python3 -c "
import json; d=json.load(open('$FL_DIR/$dev.json'))
h=[x for x in d['health'] if x['campaign']=='loop']
print(h[0]['restarts'] if h else -1, d['version'])")"
    echo "device $dev: version $version, restarts reported in the bake window: $restarts"
    e2e_expect "$version" 1.3.0 "version of $dev"
    [ "$restarts" -gt 2 ] || fl_die "$dev reported $restarts restarts"
done
echo "restart_loop scenario OK"
