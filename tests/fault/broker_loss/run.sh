#!/usr/bin/env bash
# Broker loss (issue 8 part 3): mosquitto, with persistence on (saved every
# second), is SIGKILLed and restarted on the same port in the middle of a
# campaign, BL_RESTARTS times; agents and controller reconnect with jitter.
# Runs tests/e2e/fleet/broker_restart.sh in its KILL mode (the campaign must
# complete, every device committed, every event in the store) and measures
# the reconnect storm of each restart from the broker's log (storm.py).
#   run.sh BUILD_DIR [DEVICES] [RESTARTS] [SUMMARY_OUT]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: $0 BUILD_DIR [DEVICES] [RESTARTS] [SUMMARY_OUT]}
storm=$(mktemp "${TMPDIR:-/tmp}/upkeep-storm-XXXXXX")
trap 'rm -f "$storm"' EXIT
export BR_DEVICES=${2:-24} BR_RESTARTS=${3:-2} BR_SIGNAL=KILL BR_STORM_OUT=$storm
export BR_STORM_ANALYSE=$here/storm.py BR_RECONNECT_MAX_MS=${BR_RECONNECT_MAX_MS:-4000}
export BR_INSTALL_MS=${BR_INSTALL_MS:-5000}
export FL_MOSQ_EXTRA=${FL_MOSQ_EXTRA:-autosave_interval 1}
export BR_STORM_SUMMARY=${4:-}
bash "$here/../../e2e/fleet/broker_restart.sh" "$build"
