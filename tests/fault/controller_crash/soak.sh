#!/usr/bin/env bash
# Long form of the controller crash campaign for `make soak`: a bigger fleet
# and longer installs (more kill points per campaign), one reference run and
# CRASH_TRIALS crash runs (default 8, about 10 kills each), stopping by itself
# after the trials or CRASH_MAX_SECONDS (default 1800).
#   soak.sh BUILD_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CRASH_DEVICES=${CRASH_DEVICES:-40} CRASH_INSTALL_MS=${CRASH_INSTALL_MS:-2000}
exec bash "$here/run.sh" "${1:?usage: $0 BUILD_DIR}" "${CRASH_TRIALS:-8}" "${CRASH_MAX_SECONDS:-1800}"
