#!/usr/bin/env bash
# make demo: the whole upkeep system on this machine, on 127.0.0.1 only.
# Starts mosquitto with upkeep_broker.so, `upkeep serve` and a simulated fleet
# of 200 devices on two hardware revisions; signs a release with a fresh key
# and rolls it out in four stages while the live watch view runs; then rolls
# out a release that fails health checks on rev-b, which halts at the canary
# stage and rolls back; prints the posture report. Every process it starts is
# ended on exit (by pid), and its temp dir is removed. No prompt.
#
#   bash scripts/demo.sh [BUILD_DIR]       (default build/; `make demo` builds it)
#   DEMO_DEVICES=500 bash scripts/demo.sh  (fleet size; default 200)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "${1:-build}" && pwd)
devices=${DEMO_DEVICES:-200}
# shellcheck source=../tests/e2e/fleet-lib.sh
. "$here/tests/e2e/fleet-lib.sh"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

fl_init "$build"
trap fl_cleanup EXIT
trap 'exit 130' INT TERM
t0=$SECONDS

step "Starting mosquitto with upkeep_broker.so on 127.0.0.1"
fl_broker_start
echo "broker: $FL_URL (pid $FL_BROKER_PID); plugin config: $FL_DIR/upkeep-broker.json"

step "Starting the controller (upkeep serve)"
fl_serve_start 200
echo "controller: pid $FL_SERVE_PID, data in $FL_DIR/ctl"

step "Starting a simulated fleet of $devices devices (rev-a and rev-b, half each)"
# Each simulated device is a full upkeep agent with its own MQTT connection
# and its own password (derived from the fleet secret, as the plugin derives
# it). rev-b installs slower, and release 1.1.0 fails its health check there.
fl_sim_start fleet --count "$devices" --id-prefix dev- --hw rev-a:50%,rev-b:50% \
    --install-ms rev-a:300,rev-b:600 --health-ms 200 --health-fail rev-b:1@1.1.0
fl_wait_sim fleet connected "$devices" 120
fl_wait 60 "every device in the controller's registry" \
    test "$(fl_json 'len(d)' upk devices --json 2>/dev/null)" = "$devices"
upk devices --limit 6
echo "... ($devices devices online)"

step "Generating a release key (upkeep keygen) and signing release fw 1.0.0"
cat "$FL_DIR/keygen.out"
fl_make_artifact "$FL_DIR/fw-1.0.0.bin" 64 fw-1.0.0
fl_release fw 1.0.0 1 "$FL_DIR/fw-1.0.0.bin"
upk release list

step "Campaign rollout-1: fw-1.0.0 to every device in stages 1%, 10%, 50%, 100%"
upk campaign create --id rollout-1 --release fw-1.0.0 --stages 1%,10%,50%,100% \
    --soak 0 --max-failures 5% --device-timeout 60s
rc=0
timeout 180 "$FL_BIN/upkeep" campaign watch rollout-1 --interval 1 || rc=$?
[ "$rc" -eq 0 ] || fl_die "campaign rollout-1 did not complete (watch exit $rc)"
fl_wait_sim fleet committed "$devices" 30

step "Campaign bad-1: fw-1.1.0, which fails its health check on rev-b"
fl_make_artifact "$FL_DIR/fw-1.1.0.bin" 64 fw-1.1.0
fl_release fw 1.1.0 1 "$FL_DIR/fw-1.1.0.bin"
upk campaign create --id bad-1 --release fw-1.1.0 --stages 5%,50%,100% \
    --soak 0 --max-failures 5% --device-timeout 60s --auto-rollback
rc=0
timeout 180 "$FL_BIN/upkeep" campaign watch bad-1 --interval 1 || rc=$?
[ "$rc" -eq 1 ] || fl_die "campaign bad-1 should have rolled back (watch exit $rc)"
upk campaign show bad-1
stage=$(fl_json 'd["stage"]' upk campaign show bad-1 --json)
[ "$stage" = 1 ] || fl_die "bad-1 halted at stage $stage, not at the canary stage"
# Every device ends on fw 1.0.0 again: the rev-b canaries rolled back on
# their own, the rev-a canaries take 1.0.0 back from the campaign rollback.
fl_wait 60 "every device back on fw 1.0.0" \
    test "$(fl_json 'sum(1 for x in d if x.get("version")=="1.0.0")' upk devices --json)" = "$devices"

step "Fleet posture"
upk report posture
mkdir -p "$build/demo"
upk report posture --html "$build/demo/posture.html" > /dev/null
echo
echo "HTML report: $build/demo/posture.html"
echo "demo finished in $((SECONDS - t0)) s; stopping every process it started."
