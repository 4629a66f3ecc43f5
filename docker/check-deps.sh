#!/bin/sh
# Check that docker/runtime-packages.txt (LIST) still provides every shared
# library that the given binaries link directly: their NEEDED entries
# (objdump -p), resolved to files by the dynamic loader (ldd), and each file's
# package (dpkg -S); libc6 and libgcc-s1 are in every base image. Fails naming
# the missing package and the library. Runs in the image build stage and as
# the ctest docker_runtime_packages on the host's build.
# Usage: check-deps.sh LIST FILE...
set -eu
list="$1"
shift
status=0
# "soname path" pairs, path as ldd resolves it ("" when it finds none)
pairs=$(for f in "$@"; do
  libs=$(ldd "$f" 2>/dev/null || true)
  for so in $(objdump -p "$f" | awk '$1 == "NEEDED" {print $2}'); do
    path=$(printf '%s\n' "$libs" | awk -v so="$so" '$1 == so && $2 == "=>" && $3 ~ /^\// {print $3; exit}')
    echo "$so ${path:-}"
  done
done | sort -u)
# The package that owns path: as given, as the file it links to, and with
# /usr added or removed (merged-/usr systems list either).
owner() {
  for p in "$1" "$(readlink -f "$1")" "/usr$1" "${1#/usr}"; do
    pkg=$(dpkg -S "$p" 2>/dev/null | head -n 1 | cut -d: -f1) || true
    [ -z "$pkg" ] || { echo "$pkg"; return 0; }
  done
  return 0
}
old_ifs=$IFS
IFS='
'
for pair in $pairs; do
  IFS=$old_ifs
  so=${pair%% *}
  path=${pair#* }
  if [ -z "$path" ] || [ "$path" = "$so" ]; then
    echo "check-deps: no file found for $so (ldd)" >&2
    status=1
    continue
  fi
  pkg=$(owner "$path")
  case "$pkg" in
    "") echo "check-deps: no package provides $so ($path)" >&2; status=1 ;;
    libc6 | libgcc-s1) ;;
    *) grep -qx "$pkg" "$list" || { echo "check-deps: $list lacks $pkg (for $so)" >&2; status=1; } ;;
  esac
done
IFS=$old_ifs
exit $status
