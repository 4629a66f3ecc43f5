#!/bin/sh
# Build-stage check: every shared library that the given binaries link
# directly must come from a package in docker/runtime-packages.txt (libc6 and
# libgcc-s1 are in every base image). Usage: check-deps.sh LIST FILE...
set -eu
list="$1"
shift
status=0
for so in $(for f in "$@"; do objdump -p "$f" | awk '$1 == "NEEDED" {print $2}'; done | sort -u); do
  pkg=$(dpkg -S "*/$so" 2>/dev/null | head -n 1 | cut -d: -f1)
  case "$pkg" in
    "") echo "check-deps: no package provides $so" >&2; status=1 ;;
    libc6 | libgcc-s1) ;;
    *) grep -qx "$pkg" "$list" || { echo "check-deps: $list lacks $pkg (for $so)" >&2; status=1; } ;;
  esac
done
exit $status
