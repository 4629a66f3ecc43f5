#!/usr/bin/env bash
# Size of upkeep-agent per architecture and link mode, and its idle memory on
# arm64 (docs/benchmarks.md, "Agent size per architecture").
#
#   bench/size/run.sh            builds every variant (Release, UPK_PARTS=agent)
#                                into bench/out/size/, prints the tables
#   env: ARCHS="amd64 arm64 armhf"  IDLE_S=10  JOBS=2
#
# Builds: amd64 natively, arm64 and armhf with scripts/cross.sh (Debian's
# cross toolchains, installed by scripts/deps.sh cross ARCH); each dynamic
# and static (-DUPK_STATIC=ON), with TLS and without (-DUPK_AGENT_TLS=OFF);
# arm64 also with 4 KiB segment alignment (PAGE_SIZE=4096). Size: the
# executable after `<triplet>-strip`.
#
# Idle memory: each agent connects to a plain mosquitto on 127.0.0.1 (no
# TLS), sits IDLE_S seconds, then
#   - amd64: VmRSS from /proc/PID/status, Pss from /proc/PID/smaps_rollup;
#   - arm64: under qemu-user (-L /) with the guest's address space placed by
#     `-B 0x4000000000 -R 0x100000000` (a 4 GiB window at 256 GiB), so every
#     page of the guest, and nothing of qemu's own, lies in that window; the
#     figures are the sums of Rss and Pss over the mappings of the qemu
#     process's /proc/PID/smaps inside the window. That counts what the arm64
#     agent itself maps and touches (its code, libraries, heap, stacks), as
#     a board would. Pss is close to Rss here, since no other arm64 process
#     shares the libraries; on a board, glibc's pages are shared and Pss is
#     lower.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/bench/out/size"
archs=${ARCHS:-"amd64 arm64 armhf"}
idle=${IDLE_S:-10}
jobs=${JOBS:-2}
mkdir -p "$out"
log="$out/build.log"
: >"$log"

triplet() { case "$1" in amd64) echo x86_64-linux-gnu ;; arm64) echo aarch64-linux-gnu ;; armhf) echo arm-linux-gnueabihf ;; esac; }

# build ARCH STATIC TLS [PAGE]: prints the build dir
build() {
  local arch=$1 st=$2 tls=$3 page=${4:-} d
  d="$out/$arch-$([ "$st" = 1 ] && echo static || echo dynamic)-$([ "$tls" = 1 ] && echo tls || echo notls)${page:+-page$page}"
  if [ "$arch" = amd64 ]; then
    local args=(-DCMAKE_BUILD_TYPE=Release -DUPK_PARTS=agent -DUPK_TESTS=OFF -DUPK_AGENT_TLS=$([ "$tls" = 1 ] && echo ON || echo OFF))
    if [ "$st" = 1 ]; then
      args+=(-DUPK_STATIC=ON -DUPK_CJSON_SOURCE_DIR="$(bash "$root/scripts/cjson-source.sh" "$root/build-cross-cjson-src")")
    fi
    cmake -S "$root" -B "$d" "${args[@]}" >>"$log" 2>&1
    nice -n 10 cmake --build "$d" -j "$jobs" --target upkeep-agent >>"$log" 2>&1
    strip -o "$d/bin/upkeep-agent.stripped" "$d/bin/upkeep-agent"
  else
    ARCH=$arch STATIC=$st TLS=$tls PAGE_SIZE=$page JOBS=$jobs CROSS_BUILD="$d" \
      bash "$root/scripts/cross.sh" >>"$log" 2>&1
  fi
  echo "$d"
}
size() { stat -c %s "$1/bin/upkeep-agent.stripped"; }
fmt() { echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }

declare -A S
for a in $archs; do
  for st in 0 1; do
    for tls in 1 0; do
      d=$(build "$a" $st $tls) || { tail -n 30 "$log" >&2; exit 1; }
      S[$a-$st-$tls]=$(size "$d")
    done
  done
  if [ "$a" = arm64 ]; then
    for tls in 1 0; do
      d=$(build arm64 0 $tls 4096) || { tail -n 30 "$log" >&2; exit 1; }
      S[arm64p-$tls]=$(size "$d")
    done
  fi
done

echo "== stripped upkeep-agent (bytes; Release, UPK_PARTS=agent, Debian bookworm gcc 12)"
echo "| architecture | dynamic, TLS | dynamic, no TLS | static, TLS | static, no TLS |"
echo "| --- | ---: | ---: | ---: | ---: |"
for a in $archs; do
  echo "| $a | $(fmt "${S[$a-0-1]}") | $(fmt "${S[$a-0-0]}") | $(fmt "${S[$a-1-1]}") | $(fmt "${S[$a-1-0]}") |"
  if [ "$a" = arm64 ]; then
    echo "| arm64, PAGE_SIZE=4096 | $(fmt "${S[arm64p-1]}") | $(fmt "${S[arm64p-0]}") | | |"
  fi
done

# ---- idle memory
mosq=$(command -v mosquitto || echo /usr/sbin/mosquitto)
work=$(mktemp -d "${TMPDIR:-/tmp}/upk-bench-size-XXXXXX")
pids=()
cleanup() {
  local p
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\nuser %s\n' "$port" "$(id -un)" >"$work/mosquitto.conf"
"$mosq" -c "$work/mosquitto.conf" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
openssl ecparam -name prime256v1 -genkey -noout -out "$work/rel.pem" 2>/dev/null
openssl ec -in "$work/rel.pem" -pubout -out "$work/rel.pub" 2>/dev/null

# window_kib PID: "Rss Pss" (KiB) summed over mappings in the guest window
window_kib() {
  python3 - "$1" <<'PY'
import sys
lo, hi = 0x4000000000, 0x4000000000 + 0x100000000
rss = pss = 0
inside = False
for line in open(f"/proc/{sys.argv[1]}/smaps"):
    f = line.split()
    if "-" in f[0] and len(f[0].split("-")) == 2 and all(c in "0123456789abcdef-" for c in f[0]):
        s = int(f[0].split("-")[0], 16)
        inside = lo <= s < hi
    elif inside and f[0] == "Rss:":
        rss += int(f[1])
    elif inside and f[0] == "Pss:":
        pss += int(f[1])
print(rss, pss)
PY
}
# idle ARCH TLS: "VmRSS Pss" in KiB
idle() {
  local a=$1 tls=$2 d id pid
  d="$out/$a-dynamic-$([ "$tls" = 1 ] && echo tls || echo notls)"
  id="idle-$a-$tls"
  cat >"$work/$id.json" <<JSON
{"broker":"tcp://127.0.0.1:$port","device_id":"$id","hardware":"hw-1",
 "data_dir":"$work/$id-data","keys":["$work/rel.pub"],"module":"file",
 "module_settings":{"path":"$work/$id.bin"}}
JSON
  if [ "$a" = amd64 ]; then
    "$d/bin/upkeep-agent" -c "$work/$id.json" -l warn 2>"$work/$id.log" &
  else
    qemu-aarch64 -B 0x4000000000 -R 0x100000000 -L / "$d/bin/upkeep-agent" -c "$work/$id.json" -l warn \
      2>"$work/$id.log" &
  fi
  pid=$!
  pids+=($pid)
  sleep "$idle"
  kill -0 "$pid" 2>/dev/null || { cat "$work/$id.log" >&2; echo "agent $id exited" >&2; exit 1; }
  if [ "$a" = amd64 ]; then
    echo "$(awk '$1=="VmRSS:"{print $2}' /proc/$pid/status) $(awk '$1=="Pss:"{print $2}' /proc/$pid/smaps_rollup)"
  else
    window_kib "$pid"
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
echo
echo "== idle memory after ${idle} s connected to an idle broker (KiB; dynamic builds)"
echo "| agent | VmRSS | Pss | method |"
echo "| --- | ---: | ---: | --- |"
for a in amd64 arm64; do
  case " $archs " in *" $a "*) ;; *) continue ;; esac
  for tls in 1 0; do
    read -r r p < <(idle $a $tls)
    m="/proc/PID/status, smaps_rollup"
    [ "$a" = amd64 ] || m="qemu-user, guest window of /proc/PID/smaps"
    echo "| $a, $([ "$tls" = 1 ] && echo TLS || echo no TLS) | $(fmt "$r") | $(fmt "$p") | $m |"
  done
done
