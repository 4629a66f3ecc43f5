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
#
# Two figures per run: end-to-end messages/s at the consumer (limited by
# whichever of broker and load generator is slower on this machine), and the
# broker's own CPU time per message (from /proc/PID/stat), whose inverse is
# the rate a single-threaded mosquitto could sustain on one core. The median
# of REPEAT runs is reported. Everything listens on 127.0.0.1 only.
set -euo pipefail

BUILD=${1:-build}
DEVICES=${DEVICES:-100}
MESSAGES=${MESSAGES:-500}
REPEAT=${REPEAT:-3}
DYNSEC_ACCOUNTS=${DYNSEC_ACCOUNTS:-10000}
THREADS=${THREADS:-4}
INFLIGHT=${INFLIGHT:-20}
PAYLOAD=${PAYLOAD:-64}

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
BROKER_PID=
cleanup() {
    if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
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

# start_broker NAME EXTRA_CONF -> sets PORT and BROKER_PID
start_broker() {
    PORT=$(free_port)
    {
        echo "listener $PORT 127.0.0.1"
        echo "user $(id -un)"
        echo "max_queued_messages 1000000"
        echo "log_dest stderr"
        echo "log_type error"
        echo "log_type warning"
        printf '%s\n' "$2"
    } > "$WORK/$1.conf"
    "$MOSQUITTO" -c "$WORK/$1.conf" 2> "$WORK/$1.log" &
    BROKER_PID=$!
    local deadline=$((SECONDS + 30))
    until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
        if ! kill -0 "$BROKER_PID" 2>/dev/null || [ $SECONDS -gt $deadline ]; then
            echo "broker $1 did not start:" >&2; cat "$WORK/$1.log" >&2; exit 1
        fi
        sleep 0.05
    done
}

stop_broker() {
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

declare -A RATE CPU
run_config() { # NAME EXTRA_CONF LOADGEN_AUTH_ARGS...
    local name=$1 conf=$2
    shift 2
    start_broker "$name" "$conf"
    echo "$name: broker up after $SECONDS s" >&2
    for qos in 0 1; do
        local rates=() cpus=()
        for _ in $(seq "$REPEAT"); do
            local c0 c1 line rx rate
            c0=$(cpu_ticks "$BROKER_PID")
            line=$("$LOADGEN" --port "$PORT" --devices "$DEVICES" --messages "$MESSAGES" \
                   --qos "$qos" --threads "$THREADS" --inflight "$INFLIGHT" --payload "$PAYLOAD" \
                   --label "$name" "$@")
            c1=$(cpu_ticks "$BROKER_PID")
            echo "  $line" >&2
            rx=$(sed -n 's/.*received=\([0-9]*\).*/\1/p' <<< "$line")
            rate=$(sed -n 's/.*msg_per_s=\([0-9]*\).*/\1/p' <<< "$line")
            rates+=("$rate")
            cpus+=("$(awk -v d=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n="$rx" 'BEGIN{printf "%.2f", (n > 0 ? d / hz / n * 1e6 : 0)}')")
        done
        RATE[$name,$qos]=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
        CPU[$name,$qos]=$(printf '%s\n' "${cpus[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
    done
    stop_broker
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "mosquitto $("$MOSQUITTO" -h 2>&1 | sed -n 's/^mosquitto version //p'), devices=$DEVICES messages/device=$MESSAGES payload=${PAYLOAD}B repeat=$REPEAT dynsec accounts=$DYNSEC_ACCOUNTS" >&2

run_config none "allow_anonymous true"
run_config upkeep "allow_anonymous false
plugin $PLUGIN
plugin_opt_config $WORK/upkeep.json" --secret-file "$WORK/fleet.secret" --sub-user bench-consumer --sub-pass consumer-pw
run_config dynsec "allow_anonymous false
plugin $DYNSEC
plugin_opt_config_file $WORK/dynsec.json" --secret-file "$WORK/fleet.secret" --sub-user bench-consumer --sub-pass consumer-pw

printf '\n| config | QoS | msg/s end-to-end | ratio to none | broker CPU us/msg | broker-limited msg/s | ratio to none |\n'
printf '| --- | --- | --- | --- | --- | --- | --- |\n'
for qos in 0 1; do
    for name in none upkeep dynsec; do
        awk -v n="$name" -v q="$qos" -v r="${RATE[$name,$qos]}" -v r0="${RATE[none,$qos]}" \
            -v c="${CPU[$name,$qos]}" -v c0="${CPU[none,$qos]}" 'BEGIN{
            lim = c > 0 ? 1e6 / c : 0; lim0 = c0 > 0 ? 1e6 / c0 : 0;
            printf "| %s | %d | %d | %.2fx | %.2f | %d | %.2fx |\n", n, q, r, (r0 > 0 ? r / r0 : 0), c, lim, (lim0 > 0 ? lim / lim0 : 0) }'
    done
done
