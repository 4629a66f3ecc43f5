#!/usr/bin/env bash
# SHA-256 library comparison: throughput (256 MiB in 64 KiB and 4 KiB
# updates, best of 3) and the resident pages each library adds to a process
# (Rss of its mappings in /proc/PID/smaps, read while it hashes), for
# mbedTLS (upkeep's signature library), nettle (upkeep's hash library),
# OpenSSL libcrypto (EVP and the deprecated SHA256_* calls) and libgcrypt,
# each when its -dev package is installed. Also prints which SHA extension
# nettle picked at run time (NETTLE_FAT_VERBOSE).
#
#   bench/hash/run.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/upk-bench-hash-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
CC=${CC:-cc}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')," \
     "SHA extensions: $(grep -o -m1 -w -E 'sha_ni|sha2' /proc/cpuinfo || echo none)"
# name | -D flag | libraries | mapping names to sum | header that must exist
LIBS=(
  "mbedtls 2.28|USE_MBEDTLS|-lmbedcrypto|libmbedcrypto|/usr/include/mbedtls/sha256.h"
  "nettle|USE_NETTLE|-lnettle|libnettle|/usr/include/nettle/sha2.h"
  "openssl EVP|USE_EVP|-lcrypto|libcrypto|/usr/include/openssl/evp.h"
  "openssl SHA256_*|USE_OPENSSL|-lcrypto|libcrypto|/usr/include/openssl/sha.h"
  "libgcrypt|USE_GCRYPT|-lgcrypt|libgcrypt libgpg-error|/usr/include/gcrypt.h"
)
echo "| library | MB/s, 64 KiB updates | MB/s, 4 KiB updates | library Rss KiB |"
echo "|---|--:|--:|--:|"
i=0
NETTLE_BIN=
for l in "${LIBS[@]}"; do
  IFS='|' read -r name def lib maps header <<< "$l"
  [ -f "$header" ] || { echo "| $name | (no $header) | | |"; continue; }
  i=$((i + 1))
  "$CC" -O2 -Wno-deprecated-declarations -D"$def" -o "$WORK/b$i" "$HERE/sha256_libs.c" $lib
  [ "$def" = USE_NETTLE ] && NETTLE_BIN=$WORK/b$i
  r64=$("$WORK/b$i" 65536 | grep -o '[0-9]* MB/s' | cut -d' ' -f1)
  "$WORK/b$i" 4096 > "$WORK/out" &
  pid=$!
  sleep 0.1
  rss=$(awk -v pats="$maps" '
    BEGIN { n = split(pats, p, " ") }
    /^[0-9a-f]+-[0-9a-f]+ / { f = $6 }
    /^Rss:/ { for (k = 1; k <= n; k++) if (index(f, p[k])) s += $2 }
    END { print s + 0 }' "/proc/$pid/smaps" 2>/dev/null || echo "?")
  wait "$pid"
  r4=$(grep -o '[0-9]* MB/s' "$WORK/out" | cut -d' ' -f1)
  echo "| $name | $r64 | $r4 | $rss |"
done
if [ -n "${NETTLE_BIN:-}" ]; then
  NETTLE_FAT_VERBOSE=1 "$NETTLE_BIN" 4096 2>&1 >/dev/null | grep -i 'sha' || true
fi
