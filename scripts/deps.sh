#!/usr/bin/env bash
# Installs the Debian bookworm packages upkeep needs to build, test and run its
# demo. Installs only what is missing; uses sudo when not root. Idempotent.
set -euo pipefail
#
#   scripts/deps.sh             the native set below (build, test, demo)
#   scripts/deps.sh cross ARCH  what `make cross ARCH=arm64|armhf` needs: the
#                               Debian cross toolchain, the agent's libraries
#                               as multiarch ARCH packages, and (arm64)
#                               qemu-user to run the result in tests
#   scripts/deps.sh deb         what `make deb` needs (debhelper, lintian)

case "${1:-}" in
cross)
  arch="${2:?usage: deps.sh cross arm64|armhf}"
  case "$arch" in arm64 | armhf) ;; *) echo "deps: unsupported ARCH $arch (arm64, armhf)" >&2; exit 2 ;; esac
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    echo "deps: adding the $arch architecture to dpkg"
    $sudo dpkg --add-architecture "$arch"
  fi
  pkgs=(
    cmake pkg-config file
    "crossbuild-essential-$arch"  # gcc, binutils and libc6-dev for $arch
    # The agent's libraries (docs/agent.md, "Building for your board"):
    "libcjson-dev:$arch"      # JSON of messages, manifests and the config
    "libuv1-dev:$arch"        # event loop, timers, child processes
    "libpaho-mqtt-dev:$arch"  # MQTT client
    "libssl-dev:$arch"        # TLS under Paho's paho-mqtt3as (named by its CMake package)
    "libmbedtls-dev:$arch"    # ECDSA P-256 signatures (mbedcrypto only)
    "nettle-dev:$arch"        # SHA-256 and HMAC, with the ARMv8 crypto extensions on arm64
    "libzstd-dev:$arch"       # delta patches' compressed streams
  )
  # The cross-built arm64 agent runs under qemu-user in tests/e2e/cross.
  [ "$arch" != arm64 ] || pkgs+=(qemu-user)
  ;;
deb)
  pkgs=(debhelper dpkg-dev devscripts lintian fakeroot systemd)
  ;;
"")
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
  rauc grub-common squashfs-tools dbus e2fsprogs  # the rauc update module against the real rauc (tests/integration/rauc)
  swupdate libubootenv-tool u-boot-tools cpio  # the swupdate module, U-Boot env tools (tests/integration/swupdate)
  qemu-system-x86 mmdebstrap grub-pc-bin fdisk bc  # the virtual A/B device: QEMU, its rootfs, BIOS GRUB, sfdisk (scripts/vdev, ctest vdev_fallback)
)
  ;;
*)
  echo "usage: deps.sh [cross arm64|armhf | deb]" >&2
  exit 2
  ;;
esac

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
