#!/usr/bin/env bash
# `make cross ARCH=arm64|armhf [STATIC=1] [TLS=0]`: installs Debian's cross
# toolchain and the agent's multiarch -dev packages (scripts/deps.sh cross),
# then builds upkeep-agent for ARCH into build-cross-ARCH[-static][-notls]/bin.
# Env: ARCH (arm64), STATIC (0), TLS (1), CROSS_BUILD (the build dir),
# PAGE_SIZE (empty: the toolchain's; 4096 links arm64 with 4 KiB segment
# alignment, docs/agent.md), CROSS_CMAKE_ARGS (more -D options), JOBS (2).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
arch="${ARCH:-arm64}"
static="${STATIC:-0}"
tls="${TLS:-1}"
case "$arch" in
arm64) triplet=aarch64-linux-gnu ;;
armhf) triplet=arm-linux-gnueabihf ;;
*) echo "cross: ARCH must be arm64 or armhf, not '$arch'" >&2; exit 2 ;;
esac
suffix=""
[ "$static" = 1 ] && suffix="$suffix-static"
[ "$tls" = 1 ] || suffix="$suffix-notls"
[ -z "${PAGE_SIZE:-}" ] || suffix="$suffix-page${PAGE_SIZE}"
bld="${CROSS_BUILD:-$root/build-cross-$arch$suffix}"

bash "$root/scripts/deps.sh" cross "$arch"

args=(-DCMAKE_TOOLCHAIN_FILE="$root/cmake/toolchain-$triplet.cmake" -DCMAKE_BUILD_TYPE=Release
  -DUPK_PARTS=agent -DUPK_TESTS=OFF)
[ "$tls" = 1 ] || args+=(-DUPK_AGENT_TLS=OFF)
[ -z "${PAGE_SIZE:-}" ] || args+=("-DCMAKE_EXE_LINKER_FLAGS=-Wl,-z,max-page-size=$PAGE_SIZE -Wl,-z,common-page-size=$PAGE_SIZE")
if [ "$static" = 1 ]; then
  # Debian ships no static cJSON: compile Debian's own source of it.
  src=$(bash "$root/scripts/cjson-source.sh" "$root/build-cross-cjson-src")
  args+=(-DUPK_STATIC=ON -DUPK_CJSON_SOURCE_DIR="$src")
fi
# shellcheck disable=SC2206
args+=(${CROSS_CMAKE_ARGS:-})
cmake -S "$root" -B "$bld" "${args[@]}"
nice -n 10 cmake --build "$bld" -j "${JOBS:-2}" --target upkeep-agent
file "$bld/bin/upkeep-agent"
"$triplet-strip" -o "$bld/bin/upkeep-agent.stripped" "$bld/bin/upkeep-agent"
echo "cross: $bld/bin/upkeep-agent ($(stat -c %s "$bld/bin/upkeep-agent.stripped") B stripped: upkeep-agent.stripped)"
