#!/usr/bin/env bash
# Health gate, baseline comparison: a release that raises a metric only on
# one hardware revision (upkeep-sim --metric ...@VERSION) halts the canary
# stage with --compare-baseline. Not-updated devices report the same metric
# while idle (the agent's baseline reports), so the controller compares the
# same hardware over the same window; the halt reason names the metric and
# the figures. Asserts from `upkeep campaign show --json` and
# `upkeep devices show --json`. $1 = build dir. Prints what it checks
# (docs/operator-guide.md quotes it).
. "$(dirname "$0")/../fleet/common.sh"
N=24
BAKE=20
fl_broker_start
fl_serve_start 200
fl_sim_start fleet --count $N --hw rev-a:50%,rev-b:50% --install-ms 50 --health-ms 20 \
    --health-interval 10 --metric 'cpu_pct:*:20' --metric 'cpu_pct:rev-b:55@1.4.0'
fl_wait_sim fleet connected $N 120
fl_wait 60 "$N devices registered" fl_devices_are $N

fl_make_artifact "$FL_DIR/a1" 16 hot
fl_release fw 1.4.0 9 "$FL_DIR/a1" > /dev/null
upk campaign create --id hot --release fw-1.4.0 --stages 25%,100% --soak 0 \
    --max-failures 0% --device-timeout 60s --bake ${BAKE}s --max-unhealthy 0% \
    --compare-baseline --baseline-factor 1.5 > /dev/null
"$FL_BIN/upkeep" campaign watch hot --interval 1 > "$FL_DIR/watch.txt" 2>&1 &
watch_pid=$!
fl_track "$watch_pid"
fl_wait 120 "campaign hot halted" fl_campaign_is hot paused
fl_wait 10 "campaign watch shows the halt" grep -q 'state=paused' "$FL_DIR/watch.txt"
fl_stop "$watch_pid" 5
upk campaign show hot --devices --json > "$FL_DIR/show.json"
upk devices --json > "$FL_DIR/devices.json"
echo "--- campaign watch (last lines)"
grep 'gate=' "$FL_DIR/watch.txt" | tail -2
tail -1 "$FL_DIR/watch.txt"

# Which canary devices are rev-b: the release's hot spot.
read -r stage state updated_b baseline_b reason <<< "$(python3 - "$FL_DIR" <<'PY'
import json, sys
d = json.load(open(sys.argv[1] + "/show.json"))
hw = {x["id"]: x["hw"] for x in json.load(open(sys.argv[1] + "/devices.json"))}
done = [x["device"] for x in d["device_list"] if x["state"] == "succeeded"]
ub = sum(1 for x in done if hw[x] == "rev-b")
bb = sum(1 for x in d["device_list"] if x["state"] != "succeeded" and hw[x["device"]] == "rev-b")
print(d["stage"], d["state"], ub, bb, d["reason"])
PY
)"
echo "reason: $reason"
e2e_expect "$stage" 1 "halted at stage (1-based: the canary)"
e2e_expect "$state" paused "campaign state"
[ "$updated_b" -ge 1 ] || fl_die "no rev-b device in the canary (the scenario needs one)"
want="stage 1: health gate: metric cpu_pct on hw rev-b is 55 on $updated_b updated devices vs 20 on $baseline_b not updated (2.75x > 1.50x)"
e2e_expect "$reason" "$want" "halt reason"
# While baking, watch showed the figures it compares.
grep -Eq "gate=\"bake [0-9]+s left: 0/[0-9]+ unhealthy; cpu_pct on rev-b 55 \($updated_b updated\) vs 20 \($baseline_b not updated\)\"" \
    "$FL_DIR/watch.txt" || fl_die "no bake countdown with the metric figures in campaign watch"

# Device reports: an updated rev-b device reported 55 under the campaign and
# runs 1.4.0; a not-updated rev-b device reported 20 as its baseline (no
# campaign) and runs no release yet.
pick() { # updated|baseline HW: the first such device of the campaign
    python3 - "$FL_DIR" "$1" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1] + "/show.json"))
hw = {x["id"]: x["hw"] for x in json.load(open(sys.argv[1] + "/devices.json"))}
want_done = sys.argv[2] == "updated"
for x in sorted(d["device_list"], key=lambda x: x["device"]):
    if (x["state"] == "succeeded") == want_done and hw[x["device"]] == sys.argv[3]:
        print(x["device"]); break
PY
}
check_report() { # DEVICE CAMPAIGN CPU VERSION
    upk devices show "$1" --json > "$FL_DIR/$1.json"
    local got
    got=$(python3 -c "
import json; d=json.load(open('$FL_DIR/$1.json'))
m=[x for x in d['health_metrics'] if x['campaign']=='$2' and x['name']=='cpu_pct']
print('%g' % m[0]['mean'] if m else 'none', d['version'] or '-')")
    echo "device $1: cpu_pct reported under campaign '$2', version: $got"
    e2e_expect "$got" "$3 $4" "report of $1"
}
check_report "$(pick updated rev-b)" hot 55 1.4.0
check_report "$(pick baseline rev-b)" "" 20 -
echo "baseline scenario OK"
