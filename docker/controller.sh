#!/bin/bash
# Controller container: writes the `upkeep serve` config from the shared
# volume and runs the controller against the broker on 127.0.0.1:$UPKEEP_PORT.
# `controller.sh health` is the image's health check: a real round trip
# (CLI -> broker -> controller -> broker -> CLI) as the read-only operator
# `monitor`.
set -euo pipefail
ROLE=controller
. /usr/lib/upkeep/docker/common.sh

conf=/etc/upkeep/serve.json
data_dir=/var/lib/upkeep/controller

case "${1:-serve}" in
  health)
    exec upkeep devices list --limit 1 --json --broker "$BROKER_URL" --user monitor \
      --password-file "$FLEET/monitor.pass" --timeout 3 >/dev/null
    ;;
  serve) ;;
  *) die "usage: controller.sh serve|health" ;;
esac

wait_fleet
mkdir -p "$data_dir"
cat >"$conf" <<JSON
{
  "data_dir": "$data_dir",
  "broker": "$BROKER_URL",
  "username": "controller",
  "password_file": "$FLEET/controller.pass",
  "topic_prefix": "${UPKEEP_TOPIC_PREFIX:-upkeep/v1}",
  "release_keys": ["$FLEET/release.pub"],
  "tick_ms": 500,
  "readonly_operators": ["monitor"]
}
JSON
log "upkeep serve -> $BROKER_URL (data in $data_dir)"
exec upkeep serve -c "$conf"
