# Sourced by every end-to-end scenario: strict mode, the fleet library, a
# fresh system directory, cleanup of every process on exit. $1 = build dir.
set -euo pipefail
e2e_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
# shellcheck source=../fleet-lib.sh
. "$e2e_root/tests/e2e/fleet-lib.sh"
fl_init "${1:?usage: $0 BUILD_DIR}"
trap fl_cleanup EXIT
trap 'exit 130' INT TERM
# Paho keeps process-lifetime allocations that LeakSanitizer would report.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}

# e2e_count ID STATE: a campaign's device count in STATE (succeeded, failed, ...).
e2e_count() { fl_json "d['counts']['$2']" upk campaign show "$1" --json; }
e2e_count_is() { [ "$(e2e_count "$1" "$2")" = "$3" ]; }
# e2e_versions: how many registered devices report VERSION.
e2e_versions() { fl_json "sum(1 for x in d if x.get('version')=='$1')" upk devices --json; }
e2e_versions_are() { [ "$(e2e_versions "$1")" = "$2" ]; }
e2e_expect() { [ "$1" = "$2" ] || fl_die "$3: expected $2, got $1"; }
