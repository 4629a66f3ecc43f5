#!/usr/bin/env bash
# Bounded receive (issue 23, attack 8): a real upkeep-agent announces its
# limits.max_packet to the broker (MQTT 5 Maximum Packet Size), so one
# 100 MB publish by a stolen admin account on the device's chunk/data topic
# never reaches it and its memory does not grow. A control subscriber
# without a limit receives the same 100 MB, which shows that the broker and
# the plugin let it through and dropped it for the agent alone.
. "$(dirname "$0")/common.sh"
FL_MOSQ_EXTRA="log_type debug"
fl_broker_start
PUB=$(command -v mosquitto_pub || echo /usr/bin/mosquitto_pub)
SUB=$(command -v mosquitto_sub || echo /usr/bin/mosquitto_sub)
TOPIC=upkeep/v1/dev/dev-1/chunk/data
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
  "modules_dir": "$e2e_root/examples/agent/modules"
}
JSON
"$FL_BIN/upkeep-agent" -c "$FL_DIR/agent.json" -l debug > "$FL_DIR/agent.log" 2>&1 &
AG=$!
fl_track $AG
suback_count() { grep -c "Sending SUBACK to $1\$" "$FL_DIR/mosquitto.log" || true; }
subacks_are() { [ "$(suback_count "$1")" -ge "$2" ]; }
# desired, chunk/data, ack: three subscriptions, in that order.
fl_wait 20 "the agent subscribes to $TOPIC" subacks_are dev-1 3

# The control: root subscribed with no packet limit, for one message.
"$SUB" -h 127.0.0.1 -p "$FL_PORT" -V 5 -u root -P "$(cat "$FL_DIR/root.pw")" -i ctl-sub \
    -t "$TOPIC" -C 1 > "$FL_DIR/control.bin" 2> "$FL_DIR/control.err" &
CS=$!
fl_track $CS
fl_wait 20 "the control subscribes" subacks_are ctl-sub 1

kb() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$AG/status"; }
rss0=$(kb VmRSS)
head -c $((100 * 1024 * 1024)) /dev/zero > "$FL_DIR/big.bin"
"$PUB" -h 127.0.0.1 -p "$FL_PORT" -V 5 -u root -P "$(cat "$FL_DIR/root.pw")" -i attacker \
    -t "$TOPIC" -f "$FL_DIR/big.bin" -q 1 || fl_die "the 100 MB publish was refused by the broker"
# A small malformed chunk after it, from the same publisher: once the agent
# has logged this one, it has been sent everything before it.
"$PUB" -h 127.0.0.1 -p "$FL_PORT" -V 5 -u root -P "$(cat "$FL_DIR/root.pw")" -i attacker \
    -t "$TOPIC" -m "marker" -q 1 || fl_die "the marker publish failed"
control_has_all() { [ "$(stat -c %s "$FL_DIR/control.bin")" -ge $((100 * 1024 * 1024)) ]; }
fl_wait 60 "the control receives the 100 MB" control_has_all
fl_wait 30 "the agent sees the marker" grep -q "malformed chunk ignored" "$FL_DIR/agent.log"
e2e_expect "$(grep -c "malformed chunk ignored" "$FL_DIR/agent.log")" 1 "chunks the agent was sent"
grep -q "Dropping too large outgoing PUBLISH for dev-1 " "$FL_DIR/mosquitto.log" \
    || fl_die "the broker's log does not show the drop for the agent"
rss1=$(kb VmRSS)
hwm=$(kb VmHWM)
fl_log "agent VmRSS ${rss0} kB before, ${rss1} kB after, peak ${hwm} kB"
[ $((rss1 - rss0)) -lt 20480 ] || fl_die "the agent's memory grew by $((rss1 - rss0)) kB"
[ $((hwm - rss0)) -lt 20480 ] || fl_die "the agent's peak memory grew by $((hwm - rss0)) kB"
kill -0 $AG || fl_die "the agent died"
rm -f "$FL_DIR/big.bin" "$FL_DIR/control.bin"
fl_stop $AG 10
echo "e2e bounded_receive: ok"
