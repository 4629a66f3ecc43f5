#!/bin/bash
# Agent container: one simulated device. Its device id comes from
# $UPKEEP_DEVICE_ID or else from the container id (so `--scale agent=N` gives
# N distinct, restart-stable ids), its broker password from the fleet secret
# (standing in for factory provisioning), and its pinned release key from the
# shared volume. `agent.sh health` is the image's health check.
set -euo pipefail
ROLE=agent
. /usr/lib/upkeep/docker/common.sh

conf=/etc/upkeep/agent.json
data_dir=/var/lib/upkeep/agent
app_dir=/var/lib/upkeep/app

case "${1:-run}" in
  health)
    # healthy = the agent runs and holds a connection to the broker
    [ "$(cat /proc/1/comm 2>/dev/null)" = upkeep-agent ] && has_socket 1 "$PORT" 01
    exit
    ;;
  run) ;;
  *) die "usage: agent.sh run|health" ;;
esac

id="${UPKEEP_DEVICE_ID:-}"
if [ -z "$id" ]; then
  cid="$(container_id)"
  [ -n "$cid" ] || die "cannot find this container's id; set UPKEEP_DEVICE_ID"
  id="${UPKEEP_DEVICE_PREFIX:-dock-}${cid:0:12}"
fi
ROLE="agent $id"
wait_fleet

pass_file="$data_dir/password"
mkdir -p "$data_dir" "$app_dir"
umask 077
upkeep device-key --secret-file "$FLEET/fleet.secret" "$id" >"$pass_file" \
  || die "upkeep device-key failed for $id"
umask 022
# The installed "firmware" of this simulated device: what campaigns replace.
[ -f "$app_dir/firmware.bin" ] || printf 'upkeep docker fleet: factory image\n' >"$app_dir/firmware.bin"

cat >"$conf" <<JSON
{
  "broker": "$BROKER_URL",
  "device_id": "$id",
  "password_file": "$pass_file",
  "hardware": "${UPKEEP_HARDWARE:-docker-sim}",
  "data_dir": "$data_dir",
  "keys": ["$FLEET/release.pub"],
  "module": "file",
  "module_settings": { "path": "$app_dir/firmware.bin" },
  "topic_prefix": "${UPKEEP_TOPIC_PREFIX:-upkeep/v1}"
}
JSON

log "device $id -> $BROKER_URL"
exec upkeep-agent -c "$conf"
