#!/usr/bin/env bash
# The agent stops within its stated bound (issue 16, item 14; docs/agent.md:
# 5 s after SIGTERM) whatever its outbox holds and whether or not the broker
# answers: with events that no controller acknowledged, (a) against a broker
# that hangs with the connection open (SIGSTOP: no PUBACK ever comes, no
# connection loss is seen), then (b) with the broker gone.
. "$(dirname "$0")/common.sh"
FL_MOSQ_EXTRA="log_type debug"
fl_broker_start
PUB=$(command -v mosquitto_pub || echo /usr/bin/mosquitto_pub)
"$FL_BIN/upkeep" device-key --secret-file "$FL_DIR/fleet.secret" dev-1 > "$FL_DIR/dev-1.pw"
mkdir -p "$FL_DIR/ag"
cat > "$FL_DIR/agent.json" <<JSON
{
  "broker": "$FL_URL",
  "device_id": "dev-1",
  "password_file": "$FL_DIR/dev-1.pw",
  "hardware": "rev-a",
  "data_dir": "$FL_DIR/ag",
  "keys": ["$FL_DIR/release.pub"],
  "module": "file",
  "module_settings": {"path": "$FL_DIR/ag/firmware.bin"},
  "modules_dir": "$e2e_root/examples/agent/modules",
  "reconnect_min_ms": 200,
  "reconnect_max_ms": 1000
}
JSON
agent_start() {
    "$FL_BIN/upkeep-agent" -c "$FL_DIR/agent.json" >> "$FL_DIR/agent.log" 2>&1 &
    AG=$!
    fl_track $AG
}
# stop_within PID SECONDS: SIGTERM, then the time until it is gone.
stop_within() {
    local pid=$1 bound=$2 start=$SECONDS i rc=0
    kill -TERM "$pid"
    for ((i = 0; i < 600; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && fl_die "the agent still runs $((SECONDS - start)) s after SIGTERM"
    wait "$pid" || rc=$?
    [ $((SECONDS - start)) -le "$bound" ] || fl_die "the agent took $((SECONDS - start)) s to stop (bound ${bound} s)"
    e2e_expect "$rc" 0 "the agent's exit status after SIGTERM"
}
agent_start
fl_wait 20 "the agent connects" grep -q "connected to" "$FL_DIR/agent.log"
# Malformed desired messages (a broker admin may publish them): each is
# rejected with an event that no controller will ever acknowledge.
for i in 1 2 3; do
    "$PUB" -h 127.0.0.1 -p "$FL_PORT" -V 5 -u root -P "$(cat "$FL_DIR/root.pw")" -q 1 \
        -t upkeep/v1/dev/dev-1/desired -m "not a desired $i" || fl_die "publish failed"
done
events_seen() { [ "$(grep -c "Received PUBLISH from dev-1 .*dev-1/events" "$FL_DIR/mosquitto.log")" -ge 1 ]; }
fl_wait 20 "an event from the agent" events_seen

# (a) The broker hangs: the connection stays open and nothing answers.
kill -STOP "$FL_BROKER_PID"
stop_within "$AG" 6
kill -CONT "$FL_BROKER_PID"

# (b) The broker is gone; the unacknowledged events are still in the outbox.
agent_start
connected_twice() { [ "$(grep -c "connected to" "$FL_DIR/agent.log")" -ge 2 ]; }
fl_wait 20 "the agent reconnects" connected_twice
fl_broker_stop
fl_wait 20 "the agent notices" grep -q "connection lost\|connect failed" "$FL_DIR/agent.log"
stop_within "$AG" 6
echo "e2e agent_stop: ok"
