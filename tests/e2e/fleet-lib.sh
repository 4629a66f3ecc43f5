# Shell helpers that bring up a whole upkeep system on 127.0.0.1 in one temp
# directory: mosquitto with upkeep_broker.so, `upkeep serve`, simulated
# fleets (upkeep-sim) and the operator CLI. Used by scripts/demo.sh and the
# end-to-end tests in tests/e2e/. Every process started here is recorded by
# pid and ended by fl_cleanup (install it with `trap fl_cleanup EXIT`);
# nothing else is ever killed. Every wait polls a condition under a deadline.
#
#   . tests/e2e/fleet-lib.sh
#   fl_init BUILD_DIR            # FL_DIR, binaries, keys, accounts
#   trap fl_cleanup EXIT
#   fl_broker_start              # FL_PORT, FL_URL
#   fl_serve_start
#   fl_sim_start fleet --count 200 --hw rev-a:50%,rev-b:50%
#   fl_wait_sim fleet connected 200 60
#   fl_release fw 1.0.0 1 64     # signs and uploads fw-1.0.0 (64 KiB artifact)
#   upk campaign create --release fw-1.0.0 ...
#
# Needs bash, python3 (free ports, JSON), mosquitto, mosquitto_passwd.

FL_PIDS=()
FL_KEEP=${FL_KEEP:-0}

fl_log() { printf '%s\n' "$*" >&2; }
fl_die() { fl_log "FAIL: $*"; exit 1; }

# fl_init BUILD_DIR: finds the binaries and makes FL_DIR with the fleet
# secret, the broker accounts and a release key pair.
fl_init() {
    local build=$1
    FL_BIN=$(cd "$build/bin" && pwd) || fl_die "no $build/bin: build first"
    FL_PLUGIN=$(cd "$build/lib" && pwd)/upkeep_broker.so
    for f in "$FL_BIN/upkeep" "$FL_BIN/upkeep-sim" "$FL_PLUGIN"; do
        [ -e "$f" ] || fl_die "$f is missing: build first"
    done
    FL_MOSQUITTO=${UPK_MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
    FL_PASSWD_BIN=$(command -v mosquitto_passwd || echo /usr/bin/mosquitto_passwd)
    FL_DIR=$(mktemp -d "${TMPDIR:-/tmp}/upkeep-fleet-XXXXXX") || fl_die "mktemp"
    export UPK_SIM_TMPDIR="$FL_DIR/sim-tmp"
    mkdir -p "$UPK_SIM_TMPDIR" "$FL_DIR/ctl" "$FL_DIR/rel" "$FL_DIR/mosq"
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$FL_DIR/fleet.secret"
    : > "$FL_DIR/passwd"
    local u
    for u in controller alice bob root; do
        head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$FL_DIR/$u.pw"
        "$FL_PASSWD_BIN" -b "$FL_DIR/passwd" "$u" "$(cat "$FL_DIR/$u.pw")" \
            || fl_die "mosquitto_passwd failed"
    done
    cat > "$FL_DIR/upkeep-broker.json" <<EOF
{
  "password_file": "passwd",
  "fleet_secret_file": "fleet.secret",
  "accounts": {"controller": "controller", "alice": "operator", "bob": "operator",
               "root": "admin"},
  "lockout": {"max_failures_per_username": 0, "max_failures_per_address": 0},
  "rate_limits": {"operator": {"messages_per_second": 100, "burst_messages": 200,
                               "bytes_per_second": 8388608, "burst_bytes": 16777216}},
  "stats_interval_seconds": 2
}
EOF
    "$FL_BIN/upkeep" keygen --out "$FL_DIR/release" > "$FL_DIR/keygen.out" \
        || fl_die "upkeep keygen failed"
    # Operator CLI as alice by default (a second terminal uses fl_as bob).
    export UPKEEP_USER=alice UPKEEP_PASSWORD_FILE="$FL_DIR/alice.pw"
}

# Runs the operator CLI (as $UPKEEP_USER).
upk() { "$FL_BIN/upkeep" "$@"; }
# fl_as USER CMD...: the CLI as another operator, as from a second terminal.
fl_as() { local who=$1; shift; UPKEEP_USER=$who UPKEEP_PASSWORD_FILE="$FL_DIR/$who.pw" "$FL_BIN/upkeep" "$@"; }

fl_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

fl_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# fl_wait TIMEOUT_S DESCRIPTION CMD...: polls CMD every 0.1 s until it
# succeeds; fails the run with DESCRIPTION at the deadline.
fl_wait() {
    local timeout=$1 what=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    while ! "$@" > /dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || fl_die "timed out after ${timeout}s waiting for: $what"
        sleep 0.1
    done
}

fl_track() { FL_PIDS+=("$1"); }

# fl_stop PID [TIMEOUT_S]: SIGTERM, wait, then SIGKILL. Only our own pids.
fl_stop() {
    local pid=$1 timeout=${2:-20} i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        fl_log "fleet: pid $pid did not stop in ${timeout}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    return 0
}

# fl_broker_start [PORT]: mosquitto + plugin on 127.0.0.1 (a free port, or
# PORT to come back on the same one after fl_broker_stop). Persistence is on,
# so retained desired states and the controller's session survive a restart.
# FL_MOSQ_EXTRA: more config lines (e.g. "autosave_interval 1").
fl_broker_start() {
    local port=${1:-} attempt
    for attempt in 1 2 3 4 5; do
        [ -n "$port" ] || FL_PORT=$(fl_free_port)
        [ -z "$port" ] || FL_PORT=$port
        cat > "$FL_DIR/mosquitto.conf" <<EOF
listener $FL_PORT 127.0.0.1
user $(id -un)
allow_anonymous false
per_listener_settings false
persistence true
persistence_location $FL_DIR/mosq/
max_queued_messages 100000
plugin $FL_PLUGIN
plugin_opt_config $FL_DIR/upkeep-broker.json
log_type error
log_type warning
log_type notice
${FL_MOSQ_EXTRA:-}
EOF
        # Thousands of simulated devices need thousands of sockets.
        (ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$FL_MOSQUITTO" -c "$FL_DIR/mosquitto.conf") \
            >> "$FL_DIR/mosquitto.log" 2>&1 &
        FL_BROKER_PID=$!
        fl_track "$FL_BROKER_PID"
        local deadline=$((SECONDS + 10))
        while [ $SECONDS -le $deadline ]; do
            if fl_port_open "$FL_PORT"; then
                FL_URL="tcp://127.0.0.1:$FL_PORT"
                export UPKEEP_BROKER=$FL_URL
                return 0
            fi
            kill -0 "$FL_BROKER_PID" 2>/dev/null || break
            sleep 0.05
        done
        fl_stop "$FL_BROKER_PID" 5
        [ -z "$port" ] || sleep 0.5 # the same port may still be in TIME_WAIT use
    done
    cat "$FL_DIR/mosquitto.log" >&2
    fl_die "mosquitto did not start"
}

fl_broker_stop() { fl_stop "$FL_BROKER_PID" 20; }

# fl_serve_start [TICK_MS]: the controller daemon, waiting until it answers.
# With FL_LINK=1 it gets a link secret, $FL_DIR/link.secret (made once), for
# simulators started with --link-secret-file "$FL_DIR/link.secret".
fl_serve_start() {
    local tick=${1:-200} link=""
    if [ "${FL_LINK:-0}" = 1 ]; then
        [ -f "$FL_DIR/link.secret" ] || head -c 32 /dev/urandom | base64 > "$FL_DIR/link.secret"
        link=",
  \"link_secret_file\": \"$FL_DIR/link.secret\""
    fi
    cat > "$FL_DIR/serve.json" <<EOF
{
  "data_dir": "$FL_DIR/ctl",
  "broker": "$FL_URL",
  "username": "controller",
  "password_file": "$FL_DIR/controller.pw",
  "client_id": "upkeep-controller",
  "release_keys": ["$FL_DIR/release.pub"],
  "tick_ms": $tick$link
}
EOF
    "$FL_BIN/upkeep" serve -c "$FL_DIR/serve.json" >> "$FL_DIR/serve.log" 2>&1 &
    FL_SERVE_PID=$!
    fl_track "$FL_SERVE_PID"
    fl_wait 30 "the controller to answer" upk campaign list --timeout 2
}

fl_serve_stop() { fl_stop "$FL_SERVE_PID" 20; }

# fl_sim_start NAME ARGS...: a simulated fleet (its status file is
# $FL_DIR/NAME.status.json, its log $FL_DIR/NAME.log); FL_SIM_PID is its pid.
fl_sim_start() {
    local name=$1
    shift
    "$FL_BIN/upkeep-sim" --broker "$FL_URL" --fleet-secret-file "$FL_DIR/fleet.secret" \
        --keys "$FL_DIR/release.pub" --status-file "$FL_DIR/$name.status.json" --quiet "$@" \
        >> "$FL_DIR/$name.log" 2>&1 &
    FL_SIM_PID=$!
    fl_track "$FL_SIM_PID"
    eval "FL_SIM_PID_$name=$FL_SIM_PID"
}

# fl_sim_field NAME KEY: a number from a fleet's status file (connected,
# devices, idle, committed, rolled_back, ...).
fl_sim_field() {
    python3 - "$FL_DIR/$1.status.json" "$2" <<'EOF' 2>/dev/null
import json, sys
d = json.load(open(sys.argv[1]))
k = sys.argv[2]
print(d[k] if k in d else d["status"][k])
EOF
}

fl_sim_is() { [ "$(fl_sim_field "$1" "$2")" = "$3" ]; }

# fl_wait_sim NAME KEY VALUE TIMEOUT_S
fl_wait_sim() { fl_wait "$4" "fleet $1: $2 = $3" fl_sim_is "$1" "$2" "$3"; }

# fl_json EXPR CMD...: runs CMD (printing JSON) and prints python's EXPR of
# it, with the parsed reply as `d`.
fl_json() {
    local expr=$1
    shift
    "$@" | python3 -c "import json,sys; d=json.load(sys.stdin); print($expr)"
}

# fl_campaign_state ID: the campaign's state from the controller.
fl_campaign_state() { fl_json 'd.get("state","")' upk campaign show "$1" --json; }

fl_campaign_is() { [ "$(fl_campaign_state "$1")" = "$2" ]; }

# fl_devices_are N: the controller knows exactly N devices. For fl_wait, which
# re-runs its command: a "$(...)" in fl_wait's arguments runs only once.
fl_devices_are() { [ "$(fl_json 'len(d)' upk devices --json)" = "$1" ]; }

# fl_make_artifact PATH KIB [SEED]: a deterministic pseudo-random file.
fl_make_artifact() {
    python3 - "$1" "$2" "${3:-$1}" <<'EOF'
import hashlib, sys
path, kib, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
out, block, n = bytearray(), hashlib.sha256(seed).digest(), 0
while len(out) < kib * 1024:
    block = hashlib.sha256(block + n.to_bytes(8, "big")).digest()
    out += block
    n += 1
open(path, "wb").write(bytes(out[: kib * 1024]))
EOF
}

# fl_release NAME VERSION SECVER ARTIFACT [EXTRA ARGS...]: signs ARTIFACT for
# rev-a and rev-b and uploads it; the release id is NAME-VERSION.
fl_release() {
    local name=$1 version=$2 secver=$3 art=$4
    shift 4
    upk release create "$art" --name "$name" --version "$version" --security-version "$secver" \
        --hw rev-a,rev-b --module ab-dir --expires 30d --key "$FL_DIR/release.key" \
        --out "$FL_DIR/rel" --upload "$@"
}

# Ends every process this library started (newest first), by pid, and
# removes FL_DIR unless FL_KEEP=1.
fl_cleanup() {
    local rc=$?
    local i
    for ((i = ${#FL_PIDS[@]} - 1; i >= 0; i--)); do
        fl_stop "${FL_PIDS[$i]}" 20
    done
    FL_PIDS=()
    if [ -n "${FL_DIR:-}" ] && [ -d "$FL_DIR" ]; then
        if [ "$rc" -ne 0 ] || [ "$FL_KEEP" = 1 ]; then
            fl_log "fleet: logs of the failed run:"
            local f
            for f in "$FL_DIR"/*.log; do
                [ -f "$f" ] || continue
                fl_log "---- $f (last 30 lines)"
                tail -n 30 "$f" >&2
            done
        fi
        if [ "$FL_KEEP" = 1 ]; then
            fl_log "fleet: kept $FL_DIR"
        else
            rm -rf "$FL_DIR"
        fi
    fi
    return $rc
}
