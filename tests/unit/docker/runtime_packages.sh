#!/bin/sh
# ctest docker_runtime_packages: docker/check-deps.sh on this build's binaries
# against docker/runtime-packages.txt. Usage: runtime_packages.sh DOCKER_DIR BIN...
set -eu
dir="$1"
shift
if ! command -v dpkg >/dev/null 2>&1 || ! command -v objdump >/dev/null 2>&1; then
  echo "docker_runtime_packages: SKIP (needs dpkg and objdump)"
  exit 77
fi
# The check must be able to fail: against an empty list it has to name at
# least libssl3, which the MQTT client's TLS links directly.
empty=$(mktemp)
trap 'rm -f "$empty"' EXIT
if out=$(sh "$dir/check-deps.sh" "$empty" "$@" 2>&1); then
  echo "docker_runtime_packages: FAIL: check-deps.sh passed with an empty list" >&2
  exit 1
fi
case "$out" in
  *"lacks libssl3"*) ;;
  *)
    printf 'docker_runtime_packages: FAIL: check-deps.sh with an empty list did not name libssl3:\n%s\n' "$out" >&2
    exit 1
    ;;
esac
# The real check: what it prints names the missing package and the library.
sh "$dir/check-deps.sh" "$dir/runtime-packages.txt" "$@"
echo "docker_runtime_packages: $dir/runtime-packages.txt covers $(for f in "$@"; do objdump -p "$f" | awk '$1 == "NEEDED" {print $2}'; done | sort -u | wc -l) libraries of $#"' binaries'
