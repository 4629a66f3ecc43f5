# Shell helpers for integration suites: a mosquitto on a free 127.0.0.1 port.
# (C suites: harness.h does the same plus an MQTT 5 test client.)
#
#   . tests/integration/harness/broker.sh
#   dir=$(mktemp -d)
#   upk_broker_start "$dir" "allow_anonymous true"   # sets UPK_BROKER_PORT, UPK_BROKER_PID
#   mosquitto_pub -h 127.0.0.1 -p "$UPK_BROKER_PORT" -t t -m hi
#   upk_broker_stop                                   # SIGTERM by pid, SIGKILL after 5 s
#   rm -rf "$dir"
#
# upk_broker_start DIR [EXTRA_CONF_TEXT] writes DIR/mosquitto.conf (listener
# line + "user <you>" + the extra text), starts mosquitto with its log in
# DIR/mosquitto.log and polls until the port accepts connections (10 s
# deadline; override with UPK_BROKER_TIMEOUT). A port lost to a race is
# retried on a new one. Returns non-zero (and prints the log) on failure.
# Needs bash (for /dev/tcp) and python3 (to find a free port).

upk_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

upk_broker_start() {
    local dir=$1 extra=${2:-} attempt deadline
    local bin=${UPK_MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
    for attempt in 1 2 3 4 5; do
        UPK_BROKER_PORT=$(upk_free_port) || return 1
        printf 'listener %s 127.0.0.1\nuser %s\n%s\n' "$UPK_BROKER_PORT" "$(id -un)" "$extra" \
            > "$dir/mosquitto.conf"
        "$bin" -c "$dir/mosquitto.conf" > "$dir/mosquitto.log" 2>&1 &
        UPK_BROKER_PID=$!
        deadline=$((SECONDS + ${UPK_BROKER_TIMEOUT:-10}))
        while [ $SECONDS -le $deadline ]; do
            if (exec 3<>"/dev/tcp/127.0.0.1/$UPK_BROKER_PORT") 2>/dev/null; then
                return 0
            fi
            kill -0 "$UPK_BROKER_PID" 2>/dev/null || break
            sleep 0.02
        done
        if kill -0 "$UPK_BROKER_PID" 2>/dev/null; then
            kill -9 "$UPK_BROKER_PID"; wait "$UPK_BROKER_PID" 2>/dev/null
            break
        fi
        wait "$UPK_BROKER_PID" 2>/dev/null
        grep -q "Address already in use" "$dir/mosquitto.log" || break
    done
    echo "upk_broker_start: mosquitto did not start; log:" >&2
    cat "$dir/mosquitto.log" >&2
    UPK_BROKER_PID=
    return 1
}

upk_broker_stop() {
    [ -n "${UPK_BROKER_PID:-}" ] || return 0
    kill "$UPK_BROKER_PID" 2>/dev/null
    local i
    for i in $(seq 250); do
        kill -0 "$UPK_BROKER_PID" 2>/dev/null || break
        sleep 0.02
    done
    kill -9 "$UPK_BROKER_PID" 2>/dev/null
    wait "$UPK_BROKER_PID" 2>/dev/null
    UPK_BROKER_PID=
    return 0
}
