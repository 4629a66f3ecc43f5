#!/usr/bin/env bash
# Agent benchmark: stripped binary size and idle memory of upkeep-agent, side
# by side with Debian's mender-client daemon measured the same way on the
# same machine, and the chunked download throughput over loopback.
#
#   bench/agent/run.sh [BUILD_DIR]      (default: build; needs the targets
#                                        upkeep-agent and upk_agent_bench)
#   env: SIZE_MIB=64 REPEAT=3 CHUNK=65536 IN_FLIGHT=8 IDLE_S=5
#        NOTLS_BUILD=dir  also measure an agent built with -DUPK_AGENT_TLS=OFF
#        BEFORE_BUILD=dir also run that build's upkeep-agent in the download
#                         loop (same harness), alternating with BUILD's:
#                         before/after of a change, side by side in one run
#
# Memory: each daemon is started with a config pointing at an unreachable or
# idle server, left IDLE_S seconds, then VmRSS (resident, shared libraries
# included) and Pss (shared pages divided among their users) are read from
# /proc/PID. mender-client is measured only when /usr/bin/mender exists
# (apt-get install mender-client). Everything listens on 127.0.0.1 only.
set -euo pipefail

BUILD=${1:-build}
SIZE_MIB=${SIZE_MIB:-64}
REPEAT=${REPEAT:-3}
CHUNK=${CHUNK:-65536}
IN_FLIGHT=${IN_FLIGHT:-8}
IDLE_S=${IDLE_S:-5}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
AGENT="$BUILD/bin/upkeep-agent"
BENCH="$BUILD/bin/upk_agent_bench"
MOSQUITTO=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
for f in "$AGENT" "$BENCH" "$MOSQUITTO"; do
    [ -x "$f" ] || { echo "missing $f (build upkeep-agent and upk_agent_bench)" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/upk-bench-agent-XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
kib() { awk -v f="$2:" '$1==f {print $2}' "/proc/$1/${3:-status}"; }

echo "== binary size"
strip -o "$WORK/upkeep-agent.stripped" "$AGENT"
AGENT_SIZE=$(stat -c %s "$WORK/upkeep-agent.stripped")
echo "upkeep-agent stripped: $AGENT_SIZE bytes"
MENDER_SIZE=
if [ -x /usr/bin/mender ]; then
    strip -o "$WORK/mender.stripped" /usr/bin/mender 2>/dev/null || cp /usr/bin/mender "$WORK/mender.stripped"
    MENDER_SIZE=$(stat -c %s "$WORK/mender.stripped")
    echo "mender (mender-client $(dpkg-query -W -f '${Version}' mender-client 2>/dev/null)) stripped: $MENDER_SIZE bytes"
fi

echo "== idle memory (after ${IDLE_S}s connected/idle)"
PORT=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nuser %s\n' "$PORT" "$(id -un)" > "$WORK/mosquitto.conf"
"$MOSQUITTO" -c "$WORK/mosquitto.conf" >/dev/null 2>&1 &
PIDS+=($!)
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/rel.pem" 2>/dev/null
openssl ec -in "$WORK/rel.pem" -pubout -out "$WORK/rel.pub" 2>/dev/null
cat > "$WORK/agent.json" <<JSON
{"broker":"tcp://127.0.0.1:$PORT","device_id":"bench-idle","hardware":"hw-1",
 "data_dir":"$WORK/agent-data","keys":["$WORK/rel.pub"],"module":"file",
 "module_settings":{"path":"$WORK/app.bin"}}
JSON
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
"$AGENT" -c "$WORK/agent.json" -l warn 2>"$WORK/agent.log" &
APID=$!
PIDS+=($APID)
sleep "$IDLE_S"
A_RSS=$(kib $APID VmRSS); A_PSS=$(kib $APID Pss smaps_rollup); A_THR=$(kib $APID Threads)
echo "upkeep-agent: VmRSS ${A_RSS} KiB, Pss ${A_PSS} KiB, threads ${A_THR}"
if [ -n "${NOTLS_BUILD:-}" ]; then
    case "$NOTLS_BUILD" in /*) ;; *) NOTLS_BUILD="$ROOT/$NOTLS_BUILD" ;; esac
    sed 's/bench-idle/bench-idle-notls/; s/agent-data/agent-data-notls/' "$WORK/agent.json" > "$WORK/agent-notls.json"
    "$NOTLS_BUILD/bin/upkeep-agent" -c "$WORK/agent-notls.json" -l warn 2>"$WORK/agent-notls.log" &
    NPID=$!
    PIDS+=($NPID)
    sleep "$IDLE_S"
    N_RSS=$(kib $NPID VmRSS); N_PSS=$(kib $NPID Pss smaps_rollup)
    strip -o "$WORK/upkeep-agent-notls.stripped" "$NOTLS_BUILD/bin/upkeep-agent"
    echo "upkeep-agent (UPK_AGENT_TLS=OFF): VmRSS ${N_RSS} KiB, Pss ${N_PSS} KiB, stripped $(stat -c %s "$WORK/upkeep-agent-notls.stripped") bytes"
fi
M_RSS=; M_PSS=
if [ -x /usr/bin/mender ]; then
    mkdir -p "$WORK/mender-data"
    echo "device_type=bench" > "$WORK/mender-data/device_type"
    # An unreachable server: the daemon idles in its retry/check-wait states.
    printf '{"ServerURL":"https://127.0.0.1:9","UpdatePollIntervalSeconds":1800,"InventoryPollIntervalSeconds":28800,"RetryPollIntervalSeconds":300}\n' > "$WORK/mender.conf"
    /usr/bin/mender -c "$WORK/mender.conf" -b "$WORK/none.conf" -d "$WORK/mender-data" \
        --no-syslog -L "$WORK/mender.log" daemon >/dev/null 2>&1 &
    MPID=$!
    PIDS+=($MPID)
    sleep "$IDLE_S"
    M_RSS=$(kib $MPID VmRSS); M_PSS=$(kib $MPID Pss smaps_rollup); M_THR=$(kib $MPID Threads)
    echo "mender daemon: VmRSS ${M_RSS} KiB, Pss ${M_PSS} KiB, threads ${M_THR}"
    awk -v a="$A_RSS" -v m="$M_RSS" -v ap="$A_PSS" -v mp="$M_PSS" 'BEGIN {
        printf "ratio mender/upkeep-agent: VmRSS %.1fx, Pss %.1fx\n", m / a, mp / ap }'
    if [ -n "${N_RSS:-}" ]; then
        awk -v a="$N_RSS" -v m="$M_RSS" -v ap="$N_PSS" -v mp="$M_PSS" 'BEGIN {
            printf "ratio mender/upkeep-agent (no TLS): VmRSS %.1fx, Pss %.1fx\n", m / a, mp / ap }'
    fi
fi

echo "== chunked download over loopback (${SIZE_MIB} MiB, chunk ${CHUNK}, ${IN_FLIGHT} in flight, median of ${REPEAT})"
if [ -n "${BEFORE_BUILD:-}" ]; then
    case "$BEFORE_BUILD" in /*) ;; *) BEFORE_BUILD="$ROOT/$BEFORE_BUILD" ;; esac
    [ -x "$BEFORE_BUILD/bin/upkeep-agent" ] || { echo "missing $BEFORE_BUILD/bin/upkeep-agent" >&2; exit 1; }
fi
med() { grep -o "$1=[0-9.]*" "$2" | cut -d= -f2 | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]}'; }
: > "$WORK/dl.txt"
: > "$WORK/dl-before.txt"
for i in $(seq "$REPEAT"); do
    # Alternate before/after, so that a change in machine load hits both alike.
    if [ -n "${BEFORE_BUILD:-}" ]; then
        echo "before:"
        "$BENCH" "$BEFORE_BUILD/bin/upkeep-agent" "$MOSQUITTO" "$SIZE_MIB" "$CHUNK" "$IN_FLIGHT" |
            tee -a "$WORK/dl-before.txt" | grep -E "download_s|cpu"
        echo "after:"
    fi
    "$BENCH" "$AGENT" "$MOSQUITTO" "$SIZE_MIB" "$CHUNK" "$IN_FLIGHT" | tee -a "$WORK/dl.txt" | grep -E "download_s|cpu"
done
echo "median download: $(med download_mb_per_s "$WORK/dl.txt") MB/s"
echo "median agent CPU-bound rate: $(med agent_cpu_bound_mb_per_s "$WORK/dl.txt") MB/s (bytes / agent CPU seconds, desired -> verifying)"
echo "median agent CPU-bound rate to commit: $(med agent_cpu_to_commit_mb_per_s "$WORK/dl.txt") MB/s (desired -> committed, re-hash included)"
if [ -n "${BEFORE_BUILD:-}" ]; then
    B_DL=$(med download_mb_per_s "$WORK/dl-before.txt")
    B_CPU=$(med agent_cpu_bound_mb_per_s "$WORK/dl-before.txt")
    A_CPU=$(med agent_cpu_bound_mb_per_s "$WORK/dl.txt")
    B_CC=$(med agent_cpu_to_commit_mb_per_s "$WORK/dl-before.txt")
    A_CC=$(med agent_cpu_to_commit_mb_per_s "$WORK/dl.txt")
    echo "before ($BEFORE_BUILD): median download $B_DL MB/s, agent CPU-bound rate $B_CPU MB/s, to commit $B_CC MB/s"
    awk -v a="$A_CPU" -v b="$B_CPU" -v ad="$(med download_mb_per_s "$WORK/dl.txt")" -v bd="$B_DL" \
        -v ac="$A_CC" -v bc="$B_CC" 'BEGIN {
        printf "after/before: agent CPU-bound rate %.2fx, to commit %.2fx, download %.2fx\n", a / b, ac / bc, ad / bd }'
fi
echo "load average during the run: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
