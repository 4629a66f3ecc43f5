#!/usr/bin/env bash
# Delta patch benchmark: on real pairs of Debian binaries (a package's two
# newest versions in the configured archives, i.e. a security or point
# update), compares side by side the size of upkeep's patch, bsdiff's,
# xdelta3 -9's and zstd -19 --long --patch-from's, plus the zstd -19 full
# image, and the apply times of each: median of 5 runs, taken round-robin in
# the same run, as "wall ms / CPU ms" (CPU = user + system).
#
# The hashing target: `upkeep delta apply` (which checks the SHA-256 of the
# old image and of the new one) against `zstd -d --patch-from` followed by
# `openssl dgst -sha256` of its output, timed in the same round, and the same
# followed by `sync FILE` (an fsync of the output, which upkeep does and the
# others do not); the last columns are the ratios of the medians.
#
# usage: bench/delta/run.sh [BUILD_DIR]     (default: build; needs BUILD_DIR/bin/upkeep)
#   env: BEFORE_BUILD=dir  also time that build's `upkeep delta apply` in the
#                          same rounds (before/after of a change)
#        REPS=5            runs per tool and pair (the median is reported)
# Installs the bench-only tools bsdiff and xdelta3 (not project dependencies).
set -euo pipefail

BUILD=${1:-build}
UPKEEP=$(cd "$BUILD" && pwd)/bin/upkeep
APPLY=$(cd "$BUILD" && pwd)/bin/upkeep-delta-apply
REPS=${REPS:-5}
# package | file inside the package
PAIRS=(
  "libssl3|usr/lib/x86_64-linux-gnu/libcrypto.so.3"
  "libc6|lib/x86_64-linux-gnu/libc.so.6"
  "openssh-client|usr/bin/ssh"
  "libxml2|usr/lib/x86_64-linux-gnu/libxml2.so.2.9.14"
  "python3.11-minimal|usr/bin/python3.11"
)

die() { echo "bench/delta: $*" >&2; exit 1; }
BEFORE=
if [ -n "${BEFORE_BUILD:-}" ]; then
  BEFORE=$(cd "$BEFORE_BUILD" && pwd)/bin/upkeep
  [ -x "$BEFORE" ] || die "no $BEFORE"
fi
[ -x "$UPKEEP" ] || die "no $UPKEEP; build first (cmake --build $BUILD --target upkeep)"
# The decoder alone, as the agent runs it in-process (no CLI startup cost).
cmake --build "$BUILD" --target upkeep-delta-apply >/dev/null || die "cannot build upkeep-delta-apply"
if ! command -v bsdiff >/dev/null || ! command -v xdelta3 >/dev/null; then
  apt-get install -y -q bsdiff xdelta3 >/dev/null 2>&1 || die "cannot install bsdiff xdelta3"
fi
command -v zstd >/dev/null || die "zstd missing"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/upk-bench-delta-XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# One timed run of "$@" (output discarded): prints "wall_ms cpu_ms", CPU
# being user + system time of the command.
timed() {
  local TIMEFORMAT='%3R %3U %3S' out
  out=$( { time "$@" >/dev/null 2>&1; } 2>&1 ) || die "failed: $*"
  echo "$out" | awk '{ printf "%.1f %.1f\n", $1 * 1000, ($2 + $3) * 1000 }'
}

# Median of the numbers on stdin.
median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.1f", v[int((NR + 1) / 2)] }'; }

size() { stat -c %s "$1"; }

check_same() { cmp -s "$1" "$2" || die "$3 produced a wrong image"; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "tools: $(zstd --version | head -1); xdelta3 $(xdelta3 -V 2>&1 | head -1 | awk '{print $3}' | tr -d ,); bsdiff $(dpkg-query -W -f='${Version}' bsdiff)"
echo
printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
  "pair (old -> new)" "old" "new" "zstd -19 full" "upkeep" "bsdiff" \
  "xdelta3 -9" "zstd --patch-from" "upkeep delta apply ms" "upkeep-delta-apply ms" "bspatch ms" "xdelta3 -d ms" "zstd -d --patch-from ms" \
  "zstd -d --patch-from + openssl dgst -sha256 ms" "the same + sync FILE ms" "before: upkeep delta apply ms" \
  "upkeep delta apply / (zstd + dgst), wall / CPU" "upkeep delta apply / (zstd + dgst + sync), wall / CPU"
echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"

for pair in "${PAIRS[@]}"; do
  pkg=${pair%%|*}
  file=${pair#*|}
  mapfile -t vers < <(apt-cache madison "$pkg" | awk -F'|' '{gsub(/ /,"",$2); print $2}' |
                      sort -u | sort -V -r)
  [ "${#vers[@]}" -ge 2 ] || { echo "skip $pkg: fewer than two versions" >&2; continue; }
  new_v=${vers[0]}
  old_v=${vers[1]}
  d=$WORK/$pkg
  mkdir -p "$d/dl" "$d/old" "$d/new"
  (cd "$d/dl" && apt-get download -q "$pkg=$old_v" "$pkg=$new_v" >/dev/null 2>&1) ||
    die "cannot download $pkg"
  for deb in "$d"/dl/*.deb; do
    v=$(dpkg-deb -f "$deb" Version)
    if [ "$v" = "$old_v" ]; then dpkg-deb -x "$deb" "$d/old"; else dpkg-deb -x "$deb" "$d/new"; fi
  done
  old=$d/old/$file
  new=$d/new/$file
  [ -f "$old" ] && [ -f "$new" ] || die "$pkg: $file missing from a package"
  cmp -s "$old" "$new" && { echo "skip $pkg: file unchanged" >&2; continue; }

  zstd -q -19 -c "$new" > "$d/full.zst"
  "$UPKEEP" delta make "$old" "$new" "$d/p.upk" >/dev/null
  bsdiff "$old" "$new" "$d/p.bsdiff"
  xdelta3 -9 -e -f -s "$old" "$new" "$d/p.xd3"
  zstd -q -19 --long=27 -f --patch-from="$old" "$new" -o "$d/p.zst" 2>/dev/null

  "$UPKEEP" delta apply "$old" "$d/p.upk" "$d/o1" >/dev/null && check_same "$new" "$d/o1" upkeep
  bspatch "$old" "$d/o2" "$d/p.bsdiff" && check_same "$new" "$d/o2" bspatch
  xdelta3 -d -f -s "$old" "$d/p.xd3" "$d/o3" && check_same "$new" "$d/o3" xdelta3
  zstd -q -d -f --long=27 --patch-from="$old" "$d/p.zst" -o "$d/o4" && check_same "$new" "$d/o4" zstd

  # Round-robin, so that a change in machine load hits every tool alike.
  : > "$d/times"
  for _ in $(seq "$REPS"); do
    echo "upk $(timed "$UPKEEP" delta apply "$old" "$d/p.upk" "$d/o1")" >> "$d/times"
    echo "lib $(timed "$APPLY" "$old" "$d/p.upk" "$d/o1")" >> "$d/times"
    echo "bs $(timed bspatch "$old" "$d/o2" "$d/p.bsdiff")" >> "$d/times"
    echo "xd $(timed xdelta3 -d -f -s "$old" "$d/p.xd3" "$d/o3")" >> "$d/times"
    zs=$(timed zstd -q -d -f --long=27 --patch-from="$old" "$d/p.zst" -o "$d/o4")
    dg=$(timed openssl dgst -sha256 "$d/o4")
    sy=$(timed sync "$d/o4")
    echo "zs $zs" >> "$d/times"
    # zstd then openssl dgst of its output (then sync), summed within the round.
    echo "zd $(echo "$zs $dg" | awk '{ printf "%.1f %.1f", $1 + $3, $2 + $4 }')" >> "$d/times"
    echo "zds $(echo "$zs $dg $sy" | awk '{ printf "%.1f %.1f", $1 + $3 + $5, $2 + $4 + $6 }')" >> "$d/times"
    if [ -n "$BEFORE" ]; then
      echo "old $(timed "$BEFORE" delta apply "$old" "$d/p.upk" "$d/o1")" >> "$d/times"
    fi
  done
  t() { echo "$(awk -v k="$1" '$1 == k { print $2 }' "$d/times" | median) / $(awk -v k="$1" '$1 == k { print $3 }' "$d/times" | median)"; }
  t_upk=$(t upk); t_lib=$(t lib); t_bs=$(t bs); t_xd=$(t xd); t_zs=$(t zs); t_zd=$(t zd); t_zds=$(t zds)
  t_old=-; [ -n "$BEFORE" ] && t_old=$(t old)
  # "wall / CPU" over "wall / CPU" -> "wall ratio / CPU ratio"
  ratio() { echo "$1 $2" | awk '{ printf "%.2f / %.2f", $1 / $4, $3 / $6 }'; }

  printf '| %s %s (%s -> %s) | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
    "$pkg" "$(basename "$file")" "$old_v" "$new_v" "$(size "$old")" "$(size "$new")" \
    "$(size "$d/full.zst")" "$(size "$d/p.upk")" "$(size "$d/p.bsdiff")" \
    "$(size "$d/p.xd3")" "$(size "$d/p.zst")" "$t_upk" "$t_lib" "$t_bs" "$t_xd" "$t_zs" \
    "$t_zd" "$t_zds" "$t_old" "$(ratio "$t_upk" "$t_zd")" "$(ratio "$t_upk" "$t_zds")"
  rm -rf "$d"
done
