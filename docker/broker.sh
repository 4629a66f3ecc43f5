#!/bin/bash
# Broker container: writes mosquitto.conf, the plugin's JSON config and a
# mosquitto_passwd file from the shared volume, then runs Debian's mosquitto
# with upkeep_broker.so on 127.0.0.1:$UPKEEP_PORT (host networking).
# `broker.sh health` is the image's health check.
set -euo pipefail
ROLE=broker
. /usr/lib/upkeep/docker/common.sh

run_dir="${UPKEEP_RUN_DIR:-/tmp/upkeep-broker}"
data_dir=/var/lib/upkeep/broker

case "${1:-run}" in
  health)
    # healthy = mosquitto (with the plugin loaded: a bad plugin config stops
    # it) listens on the port
    [ "$(cat /proc/1/comm 2>/dev/null)" = mosquitto ] && has_socket 1 "$PORT" 0A
    exit
    ;;
  run) ;;
  *) die "usage: broker.sh run|health" ;;
esac

wait_fleet
mkdir -p "$run_dir" "$data_dir"
chmod 0700 "$run_dir"

# Operators upload release artifacts through the broker (`upkeep release
# import`), which the plugin's default operator limit of 64 KiB/s would drop;
# the test fleet allows 4 MiB/s.
# Accounts other than devices are ordinary mosquitto_passwd entries; devices
# log in with passwords derived from the fleet secret (no per-device entry).
passwd="$run_dir/passwd"
rm -f "$passwd"
touch "$passwd"
chmod 0600 "$passwd"
for user in controller operator monitor admin; do
  mosquitto_passwd -b "$passwd" "$user" "$(cat "$FLEET/$user.pass")" \
    || die "mosquitto_passwd failed for $user"
done

cat >"$run_dir/broker.json" <<JSON
{
  "topic_prefix": "${UPKEEP_TOPIC_PREFIX:-upkeep/v1}",
  "password_file": "$passwd",
  "accounts": { "controller": "controller", "operator": "operator", "monitor": "operator",
                "admin": "admin" },
  "fleet_secret_file": "$FLEET/fleet.secret",
  "rate_limits": {
    "operator": { "bytes_per_second": ${UPKEEP_OPERATOR_BYTES_PER_S:-4194304},
                  "burst_bytes": 8388608, "max_payload_bytes": 1048576 }
  },
  "stats_interval_seconds": 10
}
JSON

# Where the upkeep-broker-plugin package put it (Debian's multiarch libdir).
plugin_so=$(ls /usr/lib/*/mosquitto/upkeep_broker.so 2>/dev/null | head -n 1)
[ -n "$plugin_so" ] || die "upkeep_broker.so is not installed (package upkeep-broker-plugin)"
cat >"$run_dir/mosquitto.conf" <<CONF
# Written by broker.sh at container start.
per_listener_settings false
listener $PORT ${UPKEEP_BIND:-127.0.0.1}
allow_anonymous false
plugin $plugin_so
plugin_opt_config $run_dir/broker.json
persistence true
persistence_location $data_dir/
autosave_interval 30
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
CONF

log "mosquitto on ${UPKEEP_BIND:-127.0.0.1}:$PORT with upkeep_broker.so"
exec mosquitto -c "$run_dir/mosquitto.conf"
