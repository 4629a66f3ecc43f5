#!/usr/bin/env bash
# examples/ is one coherent deployment (issue 16, item 4; issue 23: TLS by
# default, plain TCP test-only): the broker, controller, CLI and agent
# examples are used as they are, with only paths, ports and the broker's
# host name (broker.example.internal -> localhost) replaced, and the
# accounts created as docs/broker-plugin.md says. Mosquitto starts with
# both listeners, `upkeep serve` and the CLI log in over TLS as the
# accounts the examples name, an agent from examples/agent/agent.json
# registers over TLS, and the test-only loopback listener serves tcp://.
. "$(dirname "$0")/common.sh"
EX=$e2e_root/examples
OPENSSL=${UPK_OPENSSL:-openssl}
E=$FL_DIR/ex
mkdir -p "$E/certs" "$E/var" "$E/ag" "$E/home/.config/upkeep"
# The broker's certificate, from a CA every client gets as ca_file.
"$OPENSSL" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$E/certs/ca.key" -out "$E/broker-ca.crt" -subj "/CN=upkeep test CA" 2> /dev/null
"$OPENSSL" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$E/certs/server.key" -out "$E/certs/server.crt" -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost" -addext "basicConstraints=CA:FALSE" \
    -CA "$E/broker-ca.crt" -CAkey "$E/certs/ca.key" 2> /dev/null || fl_die "openssl"
# docs/broker-plugin.md steps 2 and 3: the accounts and the fleet secret.
: > "$E/upkeep.passwd"
for u in upkeep-controller alice root; do
    head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$E/$u.password"
    "$FL_PASSWD_BIN" -b "$E/upkeep.passwd" "$u" "$(cat "$E/$u.password")" || fl_die "mosquitto_passwd"
done
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$E/upkeep-fleet.secret"
cp "$FL_DIR/release.pub" "$E/release.pub"
TLS_PORT=$(fl_free_port)
TCP_PORT=$(fl_free_port)
# Only paths, ports and the host name change.
ex() {
    sed -e "s|/etc/mosquitto/certs/|$E/certs/|g; s|/etc/mosquitto/|$E/|g; s|/etc/upkeep/|$E/|g" \
        -e "s|/usr/lib/upkeep/upkeep_broker.so|$FL_PLUGIN|; s|/var/lib/upkeep|$E/var|" \
        -e "s|/home/alice/.config/upkeep/password|$E/alice.password|" \
        -e "s|/home/alice/.config/upkeep/broker-ca.crt|$E/broker-ca.crt|" \
        -e "s|broker.example.internal:8883|localhost:$TLS_PORT|; s|^listener 8883|listener $TLS_PORT|" \
        -e "s|^listener 1883 127.0.0.1|listener $TCP_PORT 127.0.0.1|" "$1"
}
ex "$EX/broker/mosquitto.conf" > "$E/mosquitto.conf"
printf 'user %s\n' "$(id -un)" >> "$E/mosquitto.conf"
ex "$EX/broker/upkeep-broker.json" > "$E/upkeep-broker.json"
"$FL_MOSQUITTO" -c "$E/mosquitto.conf" > "$E/mosquitto.log" 2>&1 &
fl_track $!
BROKER=$!
tcp_up() { fl_port_open "$TCP_PORT" && fl_port_open "$TLS_PORT"; }
fl_wait 10 "mosquitto with the example config listens" tcp_up
grep -q "upkeep_broker: loaded .*accounts=3 device_keys=derived" "$E/mosquitto.log" \
    || { cat "$E/mosquitto.log" >&2; fl_die "the plugin did not load the example config"; }

# The controller from examples/controller/serve.json, over TLS.
ex "$EX/controller/serve.json" > "$E/serve.json"
"$FL_BIN/upkeep" serve -c "$E/serve.json" > "$E/serve.log" 2>&1 &
fl_track $!
# The CLI from examples/controller/cli.json (as ~/.config/upkeep/cli.json).
ex "$EX/controller/cli.json" > "$E/home/.config/upkeep/cli.json"
unset UPKEEP_BROKER UPKEEP_USER UPKEEP_PASSWORD_FILE
cli() { HOME=$E/home "$FL_BIN/upkeep" "$@"; }
fl_wait 30 "the CLI reaches serve over TLS as alice" cli campaign list --timeout 2
grep -q "as upkeep-controller (.*u'upkeep-controller')" "$E/mosquitto.log" \
    || fl_die "serve did not log in as upkeep-controller"

# A device from examples/agent/agent.json, over TLS.
"$FL_BIN/upkeep" device-key --secret-file "$E/upkeep-fleet.secret" pump-0001 > "$E/agent.password"
ex "$EX/agent/agent.json" | sed -e "s|$E/var|$E/ag|" -e "s|/opt/pump/firmware.bin|$E/ag/firmware.bin|" \
    -e "s|/usr/lib/upkeep/modules|$EX/agent/modules|" > "$E/agent.json"
python3 - "$E/agent.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d.pop("health_check", None)  # the example's command is the pump's own service
json.dump(d, open(sys.argv[1], "w"))
PY
"$FL_BIN/upkeep-agent" --check-config -c "$E/agent.json" > /dev/null || fl_die "agent.json refused"
"$FL_BIN/upkeep-agent" -c "$E/agent.json" > "$E/agent.log" 2>&1 &
fl_track $!
has_pump() { cli devices --json | grep -q '"pump-0001"'; }
fl_wait 30 "pump-0001 registers over TLS" has_pump

# The test-only loopback listener serves the docs' tcp:// URLs.
cli campaign list --broker "tcp://127.0.0.1:$TCP_PORT" > /dev/null \
    || fl_die "the plain loopback listener"
echo "e2e examples: ok"
