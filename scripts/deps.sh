#!/usr/bin/env bash
# Installs the Debian bookworm packages upkeep needs to build, test and run its
# demo. Installs only what is missing; uses sudo when not root. Idempotent.
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config git ca-certificates openssl
  clang clang-format clang-tidy cppcheck libclang-rt-dev
  libssl-dev libpaho-mqtt-dev libmbedtls-dev libcjson-dev libuv1-dev libsqlite3-dev
  libzstd-dev zstd libdivsufsort-dev
  nettle-dev  # SHA-256 with SHA-NI / ARMv8 crypto extensions (proto/src/hash.c; mbedTLS 2.28 has only C)
  mosquitto mosquitto-dev mosquitto-clients libmosquitto-dev
  libcmocka-dev
  python3  # demo, e2e tests and scale bench: free ports and JSON (tests/e2e/fleet-lib.sh)
  chromium  # headless render check of the update-capability HTML card (tests/integration/health)
  valgrind  # memcheck of the agent and the broker plugin (tests/fault/valgrind)
  sqlite3  # fault tests read the controller's store between SIGKILLs (tests/fault/controller_crash)
)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "deps: all ${#pkgs[@]} packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The Debian mosquitto package starts a broker on port 1883 through its
# service; upkeep never uses it: tests start their own on free loopback ports.
