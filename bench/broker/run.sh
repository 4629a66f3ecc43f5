#!/usr/bin/env bash
# Broker plugin benchmark: the same mosquitto driven by the same load
# generator three ways in one run -- no plugin, upkeep_broker.so, and
# Mosquitto's dynamic-security plugin with 10,000 device accounts and a
# role of per-device ACLs each -- for QoS 0 and QoS 1, printing a table with
# ratios to the no-plugin run.
#
#   bench/broker/run.sh [BUILD_DIR]        (default: build)
#   env: DEVICES=100 MESSAGES=500 (per device) REPEAT=3 DYNSEC_ACCOUNTS=10000
#        THREADS=4 INFLIGHT=20 PAYLOAD=64
#        CONFIGS="none upkeep dynsec" (a subset runs only those brokers, e.g.
#        CONFIGS="upkeep" to compare two builds of the plugin quickly; ratios
#        to none need none)
#        INSTR=1: run each mosquitto under valgrind's callgrind and report the
#        broker's instructions per message instead of its CPU time (see below)
#
# Two figures per run: end-to-end messages/s at the consumer (limited by
# whichever of broker and load generator is slower on this machine), and the
# broker's own CPU time per message (from /proc/PID/stat), whose inverse is
# the rate a single-threaded mosquitto could sustain on one core. The median
# of REPEAT runs is reported. Everything listens on 127.0.0.1 only.
#
# CPU time on a shared machine varies by 30% between runs of the same
# configuration. With INSTR=1 each broker runs under callgrind with
# instrumentation off until the first timed run; around each run the counters
# are zeroed, switched on, switched off and dumped, so the figure is the
# user-space instructions mosquitto and its plugin executed per message
# (connects of the run included): a count that does not depend on what else
# the machine is doing. End-to-end rates are meaningless then (the broker runs
# ~50x slower); use MESSAGES=100.
set -euo pipefail

BUILD=${1:-build}
DEVICES=${DEVICES:-100}
MESSAGES=${MESSAGES:-500}
REPEAT=${REPEAT:-3}
DYNSEC_ACCOUNTS=${DYNSEC_ACCOUNTS:-10000}
THREADS=${THREADS:-4}
INFLIGHT=${INFLIGHT:-20}
PAYLOAD=${PAYLOAD:-64}
INSTR=${INSTR:-0}
CONFIGS=${CONFIGS:-none upkeep dynsec}
# The load generator gives up after TIMEOUT seconds (callgrind is ~50x slower).
TIMEOUT=${TIMEOUT:-$([ "$INSTR" = 1 ] && echo 900 || echo 120)}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
PLUGIN="$BUILD/lib/upkeep_broker.so"
LOADGEN="$BUILD/bin/upk_broker_loadgen"
DYNSEC=${DYNSEC:-/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so}
MOSQUITTO=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
for f in "$PLUGIN" "$LOADGEN" "$DYNSEC" "$MOSQUITTO"; do
    [ -e "$f" ] || { echo "missing $f (build the upkeep_broker and upk_broker_loadgen targets)" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/upk-bench-broker-XXXXXX")
BROKER_PIDS=
cleanup() {
    for p in $BROKER_PIDS; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    # KEEP_DIR=DIR keeps the callgrind dumps (INSTR=1) for callgrind_annotate.
    if [ -n "${KEEP_DIR:-}" ]; then cp "$WORK"/*.cg.* "$KEEP_DIR"/ 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# ---- configurations -------------------------------------------------------
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/fleet.secret"
: > "$WORK/passwd"
mosquitto_passwd -b "$WORK/passwd" bench-consumer consumer-pw
cat > "$WORK/upkeep.json" <<JSON
{
  "password_file": "passwd",
  "accounts": {"bench-consumer": "controller"},
  "fleet_secret_file": "fleet.secret",
  "rate_limits": {
    "device": {"messages_per_second": 1000000, "burst_messages": 1000000,
               "bytes_per_second": 1000000000, "burst_bytes": 1000000000,
               "max_payload_bytes": 262144}
  },
  "stats_interval_seconds": 10
}
JSON

# Dynamic security: DYNSEC_ACCOUNTS device clients, each with its own role
# holding the device's topic rules (what upkeep_broker enforces by role), plus
# the consumer. Passwords are the same derived device keys, hashed the way
# dynsec stores them (PBKDF2-SHA512, 101 iterations, 12-byte salt).
python3 - "$WORK/fleet.secret" "$DYNSEC_ACCOUNTS" "$WORK/dynsec.json" <<'PY'
import base64, hashlib, hmac, json, os, sys
secret = open(sys.argv[1], 'rb').read().rstrip(b'\r\n \t')
n = int(sys.argv[2])
def pw(p):
    salt = os.urandom(12)
    h = hashlib.pbkdf2_hmac('sha512', p.encode(), salt, 101)
    return base64.b64encode(h).decode(), base64.b64encode(salt).decode()
clients, roles = [], []
for i in range(n):
    d = 'bench-%05d' % i
    key = hmac.new(secret, b'upkeep-device-v1:' + d.encode(), hashlib.sha256).hexdigest()
    h, s = pw(key)
    clients.append({'username': d, 'password': h, 'salt': s, 'iterations': 101,
                    'roles': [{'rolename': 'dev-' + d}]})
    t = 'upkeep/v1/dev/' + d + '/'
    acls = [{'acltype': 'publishClientSend', 'topic': t + k, 'allow': True}
            for k in ('state', 'online', 'events', 'chunk/req')]
    for k in ('desired', 'chunk/data'):
        acls.append({'acltype': 'subscribeLiteral', 'topic': t + k, 'allow': True})
        acls.append({'acltype': 'publishClientReceive', 'topic': t + k, 'allow': True})
    roles.append({'rolename': 'dev-' + d, 'acls': acls})
h, s = pw('consumer-pw')
clients.append({'username': 'bench-consumer', 'password': h, 'salt': s, 'iterations': 101,
                'roles': [{'rolename': 'controller'}]})
roles.append({'rolename': 'controller', 'acls': [
    {'acltype': 'subscribePattern', 'topic': 'upkeep/v1/dev/+/events', 'allow': True},
    {'acltype': 'publishClientReceive', 'topic': 'upkeep/v1/dev/+/events', 'allow': True}]})
json.dump({'clients': clients, 'roles': roles, 'groups': [],
           'defaultACLAccess': {'publishClientSend': False, 'publishClientReceive': False,
                                'subscribe': False, 'unsubscribe': True}},
          open(sys.argv[3], 'w'))
PY

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_broker NAME EXTRA_CONF -> PORT[NAME], PID[NAME]
declare -A PORT PID
start_broker() {
    local port
    port=$(free_port)
    {
        echo "listener $port 127.0.0.1"
        echo "user $(id -un)"
        echo "max_queued_messages 1000000"
        echo "log_dest stderr"
        echo "log_type error"
        echo "log_type warning"
        printf '%s\n' "$2"
    } > "$WORK/$1.conf"
    if [ "$INSTR" = 1 ]; then
        valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/$1.cg.%p" \
            "$MOSQUITTO" -c "$WORK/$1.conf" 2> "$WORK/$1.log" &
    else
        "$MOSQUITTO" -c "$WORK/$1.conf" 2> "$WORK/$1.log" &
    fi
    PID[$1]=$!
    BROKER_PIDS="$BROKER_PIDS ${PID[$1]}"
    PORT[$1]=$port
    local deadline=$((SECONDS + 600))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! kill -0 "${PID[$1]}" 2>/dev/null || [ $SECONDS -gt $deadline ]; then
            echo "broker $1 did not start:" >&2; cat "$WORK/$1.log" >&2; exit 1
        fi
        sleep 0.05
    done
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Instruction count mode: zero and switch on before a run, switch off and dump
# after it; the dump's "totals:" line is the run's instruction count (Ir).
instr_begin() { callgrind_control -z "$1" > /dev/null && callgrind_control -i on "$1" > /dev/null; }
instr_end() { # PID -> Ir of the run
    callgrind_control -i off "$1" > /dev/null && callgrind_control -d "$1" > /dev/null
    local f
    f=$(ls -t "$WORK"/*.cg."$1"* | head -1)
    awk '/^totals:/{print $2}' "$f"
}

# One loadgen run against broker NAME at QOS; appends to RATES/CPUS.
declare -A RATES CPUS
run_once() { # NAME QOS LOADGEN_AUTH_ARGS...
    local name=$1 qos=$2 c0 c1 line rx rate
    shift 2
    c0=$(cpu_ticks "${PID[$name]}")
    [ "$INSTR" != 1 ] || instr_begin "${PID[$name]}"
    line=$("$LOADGEN" --port "${PORT[$name]}" --devices "$DEVICES" --messages "$MESSAGES" \
           --qos "$qos" --threads "$THREADS" --inflight "$INFLIGHT" --payload "$PAYLOAD" \
           --timeout "$TIMEOUT" --label "$name" "$@")
    c1=$(cpu_ticks "${PID[$name]}")
    rx=$(sed -n 's/.*received=\([0-9]*\).*/\1/p' <<< "$line")
    rate=$(sed -n 's/.*msg_per_s=\([0-9]*\).*/\1/p' <<< "$line")
    local cpu
    if [ "$INSTR" = 1 ]; then
        cpu=$(awk -v ir="$(instr_end "${PID[$name]}")" -v n="$rx" 'BEGIN{printf "%.0f", (n > 0 ? ir / n : 0)}')
        echo "  $line broker_instructions_per_msg=$cpu" >&2
    else
        cpu=$(awk -v d=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n="$rx" 'BEGIN{printf "%.2f", (n > 0 ? d / hz / n * 1e6 : 0)}')
        echo "  $line broker_cpu_us_per_msg=$cpu" >&2
    fi
    RATES[$name,$qos]="${RATES[$name,$qos]:-} $rate"
    CPUS[$name,$qos]="${CPUS[$name,$qos]:-} $cpu"
    REP_RATE[$name,$qos,$rep]=$rate
    REP_CPU[$name,$qos,$rep]=$cpu
}
declare -A REP_RATE REP_CPU

median() { tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "mosquitto $("$MOSQUITTO" -h 2>&1 | sed -n 's/^mosquitto version //p'), devices=$DEVICES messages/device=$MESSAGES payload=${PAYLOAD}B repeat=$REPEAT dynsec accounts=$DYNSEC_ACCOUNTS" >&2

# All three brokers run side by side; the runs are interleaved so that load
# from other work on the machine hits each configuration alike, and the
# order turns with each repetition (none upkeep dynsec, then upkeep dynsec
# none, then dynsec none upkeep, ...) so that no configuration always runs
# first or last: in fixed order the last one came out up to 9% faster
# end to end than no plugin at all.
want() { case " $CONFIGS " in *" $1 "*) return 0 ;; esac; return 1; }
for name in $CONFIGS; do
    case "$name" in none | upkeep | dynsec) ;; *) echo "unknown config $name in CONFIGS" >&2; exit 1 ;; esac
done
! want none || start_broker none "allow_anonymous true"
! want upkeep || start_broker upkeep "allow_anonymous false
plugin $PLUGIN
plugin_opt_config $WORK/upkeep.json"
! want dynsec || start_broker dynsec "allow_anonymous false
plugin $DYNSEC
plugin_opt_config_file $WORK/dynsec.json"
AUTH=(--secret-file "$WORK/fleet.secret" --sub-user bench-consumer --sub-pass consumer-pw)
read -r -a ORDER <<< "$CONFIGS"
for rep in $(seq "$REPEAT"); do
    for qos in 0 1; do
        for ((i = 0; i < ${#ORDER[@]}; i++)); do
            name=${ORDER[$(((i + rep - 1) % ${#ORDER[@]}))]}
            if [ "$name" = none ]; then run_once none "$qos"; else run_once "$name" "$qos" "${AUTH[@]}"; fi
        done
    done
done
# Ratios are taken within each repetition (paired runs, back to back) and
# then the median over repetitions, which cancels most of the drift in load.
declare -A RATE CPU RRATIO CRATIO
for k in "${!RATES[@]}"; do
    RATE[$k]=$(median <<< "${RATES[$k]}")
    CPU[$k]=$(median <<< "${CPUS[$k]}")
done
for qos in 0 1; do
    for name in $CONFIGS; do
        rr="" cr=""
        for rep in $(seq "$REPEAT"); do
            rr="$rr $(awk -v a="${REP_RATE[$name,$qos,$rep]}" -v b="${REP_RATE[none,$qos,$rep]:-0}" 'BEGIN{printf "%.3f", (b > 0 ? a / b : 0)}')"
            cr="$cr $(awk -v a="${REP_CPU[$name,$qos,$rep]}" -v b="${REP_CPU[none,$qos,$rep]:-0}" 'BEGIN{printf "%.3f", (a > 0 ? b / a : 0)}')"
        done
        RRATIO[$name,$qos]=$(median <<< "$rr")
        CRATIO[$name,$qos]=$(median <<< "$cr")
    done
done

if [ "$INSTR" = 1 ]; then
    printf '\n| config | QoS | broker instructions per message (median) | ratio to none: none / config (paired median) |\n'
    printf '| --- | --- | --- | --- |\n'
    for qos in 0 1; do
        for name in $CONFIGS; do
            awk -v n="$name" -v q="$qos" -v c="${CPU[$name,$qos]}" -v cr="${CRATIO[$name,$qos]}" \
                'BEGIN{ printf "| %s | %d | %d | %.3fx |\n", n, q, c, cr }'
        done
    done
    exit 0
fi
printf '\n| config | QoS | msg/s end-to-end (median) | ratio to none (paired median) | broker CPU us/msg (median) | broker-limited msg/s | its ratio to none (paired median) |\n'
printf '| --- | --- | --- | --- | --- | --- | --- |\n'
for qos in 0 1; do
    for name in $CONFIGS; do
        awk -v n="$name" -v q="$qos" -v r="${RATE[$name,$qos]}" -v rr="${RRATIO[$name,$qos]}" \
            -v c="${CPU[$name,$qos]}" -v cr="${CRATIO[$name,$qos]}" 'BEGIN{
            printf "| %s | %d | %d | %.2fx | %.1f | %d | %.2fx |\n", n, q, r, rr, c, (c > 0 ? 1e6 / c : 0), cr }'
    done
done
