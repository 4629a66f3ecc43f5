#!/usr/bin/env bash
# `make deb-test`: installs the packages of `make deb` (DEB_DIR, default
# build-deb/) with apt in a clean debian:bookworm-slim container (host
# networking, for apt), then checks inside it:
#   - apt resolves every dependency (dpkg-shlibdeps' Depends) and the three
#     programs start: upkeep-agent --version, upkeep --version, and mosquitto
#     loading upkeep_broker.so from its installed place on a loopback port;
#   - upkeep-agent --check-config accepts a config pointing at installed paths;
#   - `systemd-analyze verify` passes on upkeep-agent.service and
#     upkeep.service (systemd is installed in the container for this; a
#     container without systemd as pid 1 cannot start the units themselves);
#   - dpkg -r removes the packages cleanly.
# Starts dockerd when none runs (and stops only that one), makes the base
# image with docker/base.sh when no registry can be reached.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
debs="$(cd "${1:-$root/build-deb}" && pwd)"
ls "$debs"/upkeep-agent_*.deb "$debs"/upkeep-broker-plugin_*.deb "$debs"/upkeep_*.deb >/dev/null \
  || { echo "deb-test: no packages in $debs (make deb)" >&2; exit 1; }
started=$SECONDS
dockerd_pid=""
work="$(mktemp -d /tmp/upkeep-deb-test.XXXXXX)"
cleanup() {
  local rc=$?
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
  fi
  rm -rf "$work"
  if [ "$rc" = 0 ]; then echo "deb-test: PASS in $((SECONDS - started)) s"; else echo "deb-test: FAIL after $((SECONDS - started)) s" >&2; fi
}
trap cleanup EXIT

if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || { echo "deb-test: dockerd is not running and starting it needs root" >&2; exit 1; }
  nice -n 15 dockerd --iptables=false --bridge=none >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || { cat "$work/dockerd.log" >&2; exit 1; }
    sleep 1
  done
  docker info >/dev/null 2>&1 || { tail -n 30 "$work/dockerd.log" >&2; exit 1; }
fi
nice -n 15 bash "$root/docker/base.sh" debian:bookworm-slim

cat >"$work/inside.sh" <<'INSIDE'
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The packages with their dependencies, and systemd for systemd-analyze.
apt-get install -y -qq --no-install-recommends /debs/upkeep-agent_*.deb \
  /debs/upkeep-broker-plugin_*.deb /debs/upkeep_*.deb systemd >/tmp/apt.log 2>&1 \
  || { tail -n 30 /tmp/apt.log; exit 1; }
echo "installed: $(dpkg-query -W -f='${Package} ${Version}, ' upkeep-agent upkeep-broker-plugin upkeep)"
upkeep-agent --version
upkeep --version
test -d /usr/lib/upkeep/modules
test -f /etc/upkeep/agent.json && test -f /etc/upkeep/serve.json && test -f /etc/upkeep/upkeep-broker.json
plugin=$(ls /usr/lib/*/mosquitto/upkeep_broker.so)
# The agent's config check against installed paths (a throwaway key).
mkdir -p /tmp/dev /opt/pump
upkeep keygen --out /tmp/dev/release >/dev/null
printf 'pw\n' >/tmp/dev/password
sed -e 's|/etc/upkeep/release.pub|/tmp/dev/release.pub|' \
    -e 's|/etc/upkeep/agent.password|/tmp/dev/password|' /etc/upkeep/agent.json >/tmp/dev/agent.json
upkeep-agent --check-config -c /tmp/dev/agent.json
# mosquitto loads the installed plugin (upkeep accounts file, fleet secret).
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >/tmp/dev/fleet.secret
: >/tmp/dev/passwd
printf '{"password_file":"/tmp/dev/passwd","fleet_secret_file":"/tmp/dev/fleet.secret","accounts":{}}\n' >/tmp/dev/broker.json
port=$1
printf 'listener %s 127.0.0.1\nallow_anonymous false\nplugin %s\nplugin_opt_config /tmp/dev/broker.json\nlog_dest file /tmp/dev/mosquitto.log\nlog_type all\n' \
  "$port" "$plugin" >/tmp/dev/mosquitto.conf
chown -R mosquitto /tmp/dev 2>/dev/null || true
mosquitto -c /tmp/dev/mosquitto.conf >/tmp/dev/mosquitto.out 2>&1 &
mpid=$!
ok=0
for _ in $(seq 1 50); do
  if grep -qs 'upkeep_broker: loaded' /tmp/dev/mosquitto.log && grep -qs ' running' /tmp/dev/mosquitto.log; then ok=1; break; fi
  kill -0 "$mpid" 2>/dev/null || break
  sleep 0.2
done
kill "$mpid" 2>/dev/null || true
wait "$mpid" 2>/dev/null || true
[ "$ok" = 1 ] || { echo "mosquitto did not come up with the plugin:"; cat /tmp/dev/mosquitto.log; exit 1; }
echo "mosquitto loaded $plugin"
systemd-analyze verify /lib/systemd/system/upkeep-agent.service /lib/systemd/system/upkeep.service
echo "systemd-analyze verify: ok"
dpkg -r upkeep-agent upkeep-broker-plugin upkeep >/dev/null
! test -e /usr/bin/upkeep-agent
echo "removed"
INSIDE
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
docker run --rm --network host -v "$debs":/debs:ro -v "$work/inside.sh":/inside.sh:ro \
  --label upkeep.deb-test=1 debian:bookworm-slim bash /inside.sh "$port"
