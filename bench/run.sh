#!/usr/bin/env bash
# make bench: every benchmark of the project, one after another, each printing
# its own table (docs/benchmarks.md has the figures and the machine). Each is
# bounded and stops by itself; all traffic stays on 127.0.0.1.
#   bash bench/run.sh [BUILD_DIR]          (default build)
#   BENCHES="broker delta" bash bench/run.sh build   (a subset)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:-build}
for b in ${BENCHES:-hash broker agent delta controller scale}; do
  echo "== bench/$b"
  bash "$here/$b/run.sh" "$build"
done
