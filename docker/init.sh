#!/bin/bash
# First-start init of the test fleet (the `init` service, controller image):
# fills the shared volume once with the fleet secret, the passwords of the
# controller, operator and admin accounts, and the release signing key pair.
# Later starts find $FLEET/ready and change nothing, so keys survive
# `docker compose down` (without -v) and `up` again.
set -euo pipefail
ROLE=init
. /usr/lib/upkeep/docker/common.sh

if fleet_ready; then
  log "$FLEET already initialised; nothing to do"
  exit 0
fi
[ -w "$FLEET" ] || die "$FLEET is not writable by $(id -un)"

umask 077
tmp="$(mktemp -d "$FLEET/.init.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# Secrets are hex text: the broker and `upkeep device-key` use the file's bytes.
printf '%s' "$(random_hex 32)" >"$tmp/fleet.secret"
for user in controller operator monitor admin; do
  printf '%s' "$(random_hex 24)" >"$tmp/$user.pass"
done
upkeep keygen --out "$tmp/release" >/dev/null \
  || die "upkeep keygen failed"
chmod 0644 "$tmp/release.pub"

for f in fleet.secret controller.pass operator.pass monitor.pass admin.pass release.key release.pub; do
  mv -f "$tmp/$f" "$FLEET/$f"
done
date -u +%Y-%m-%dT%H:%M:%SZ >"$FLEET/ready"
log "initialised $FLEET (fleet secret, account passwords, release key)"
