#!/usr/bin/env bash
# TLS with client certificates (issue 8 part 5). One mosquitto with
# upkeep_broker.so and only TLS listeners, certificates made here with the
# openssl binary (a CA, a foreign CA, broker and client certificates), and:
#  - a real upkeep-agent with its own device certificate updates through the
#    device listener, driven by `upkeep serve` and the operator CLI, both also
#    authenticated by certificate (no passwords anywhere: password_logins off);
#  - a device certificate cannot read or write another device's topics, nor
#    take another device's client id; no certificate, a certificate of another
#    CA and an unknown CN are refused;
#  - the agent and the CLI refuse brokers whose certificate comes from another
#    CA, names another host or has expired, and an expired own certificate,
#    each with its named error; an ssl:// config without a CA is refused.
# Usage: test_tls.sh BUILD_DIR
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
# shellcheck source=../../e2e/fleet-lib.sh
. "$root/tests/e2e/fleet-lib.sh"
fl_init "${1:?usage: $0 BUILD_DIR}"
trap fl_cleanup EXIT
trap 'exit 130' INT TERM
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
unset UPKEEP_PASSWORD_FILE
AGENT=$FL_BIN/upkeep-agent
[ -x "$AGENT" ] || fl_die "$AGENT is missing: build upkeep-agent first"
OPENSSL=${UPK_OPENSSL:-openssl}
MOSQ_SUB=$(command -v mosquitto_sub) || fl_die "mosquitto_sub is missing"
MOSQ_PUB=$(command -v mosquitto_pub) || fl_die "mosquitto_pub is missing"
P=$FL_DIR/pki
mkdir -p "$P"
PFX=upkeep/v1
pass=0
ok() { pass=$((pass + 1)); echo "ok $pass - $* (${SECONDS}s)"; }

# ---- certificates ----------------------------------------------------------
# ca NAME: a self-signed P-256 CA.
ca() {
    "$OPENSSL" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$P/$1.key" -out "$P/$1.crt" -subj "/CN=$1" 2> /dev/null
}
# cert NAME CN CA DAYS [EXT]: a certificate signed by CA (DAYS -1: expired,
# which `req -x509` cannot make, so that one takes a CSR and `x509 -req`).
cert() {
    local name=$1 cn=$2 issuer=$3 days=$4 ext=${5:-basicConstraints=CA:FALSE}
    if [ "$days" -gt 0 ]; then
        "$OPENSSL" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
            -keyout "$P/$name.key" -out "$P/$name.crt" -subj "/CN=$cn" -addext "$ext" \
            -CA "$P/$issuer.crt" -CAkey "$P/$issuer.key" 2> /dev/null
        return
    fi
    "$OPENSSL" req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$P/$name.key" -out "$P/$name.csr" -subj "/CN=$cn" 2> /dev/null
    printf '%s\n' "$ext" > "$P/$name.ext"
    "$OPENSSL" x509 -req -in "$P/$name.csr" -CA "$P/$issuer.crt" -CAkey "$P/$issuer.key" \
        -CAcreateserial -days "$days" -extfile "$P/$name.ext" -out "$P/$name.crt" 2> /dev/null
}
SAN="subjectAltName=DNS:localhost,IP:127.0.0.1"
ca fleet-ca
ca other-ca
cert server localhost fleet-ca 2 "$SAN"
cert server-wrongname broker.example fleet-ca 2 "subjectAltName=DNS:broker.example"
cert server-otherca localhost other-ca 2 "$SAN"
cert server-expired localhost fleet-ca -1 "$SAN"
cert dev-1 dev-1 fleet-ca 2
cert dev-2 dev-2 fleet-ca 2
cert dev-1-expired dev-1 fleet-ca -1
cert dev-1-otherca dev-1 other-ca 2
cert controller upkeep-controller fleet-ca 2
cert carol carol fleet-ca 2
cert stranger 'dev#1' fleet-ca 2
cert nobody ops@example.com fleet-ca 2
CA=$P/fleet-ca.crt
ok "certificates made"

# ---- broker: TLS listeners only --------------------------------------------
cat > "$FL_DIR/upkeep-broker-tls.json" << 'EOF'
{
  "password_logins": false,
  "certificate_identities": {
    "devices": true,
    "accounts": {"upkeep-controller": "controller", "carol": "operator"}
  },
  "lockout": {"max_failures_per_username": 0, "max_failures_per_address": 0},
  "stats_interval_seconds": 2
}
EOF
# listener PORT CERT [EXTRA]: a TLS listener that wants fleet-ca client
# certificates and makes their CN the username.
listener() {
    printf 'listener %s 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n' "$1" "$CA" \
        "$P/$2.crt" "$P/$2.key"
    printf 'require_certificate true\nuse_identity_as_username true\n%s\n' "${3:-}"
}
broker_up() {
    local attempt
    for attempt in 1 2 3 4 5; do
        # Five distinct free ports from one python start (a loaded machine
        # takes seconds per interpreter start).
        read -r PD PA PW PO PE < <(python3 -c 'import socket
ss = [socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
        {
            printf 'user %s\nper_listener_settings false\nallow_anonymous false\n' "$(id -un)"
            printf 'log_type error\nlog_type warning\nlog_type notice\nlog_type information\n'
            listener "$PD" server "use_username_as_clientid true" # devices
            listener "$PA" server                                   # controller, operators
            listener "$PW" server-wrongname
            listener "$PO" server-otherca
            listener "$PE" server-expired
            printf 'plugin %s\nplugin_opt_config %s\n' "$FL_PLUGIN" "$FL_DIR/upkeep-broker-tls.json"
        } > "$FL_DIR/mosquitto.conf"
        "$FL_MOSQUITTO" -c "$FL_DIR/mosquitto.conf" >> "$FL_DIR/mosquitto.log" 2>&1 &
        FL_BROKER_PID=$!
        fl_track "$FL_BROKER_PID"
        local deadline=$((SECONDS + 10))
        while [ $SECONDS -le $deadline ]; do
            if fl_port_open "$PD" && fl_port_open "$PA" && fl_port_open "$PE"; then
                return 0
            fi
            kill -0 "$FL_BROKER_PID" 2> /dev/null || break
            sleep 0.05
        done
        fl_stop "$FL_BROKER_PID" 5
    done
    cat "$FL_DIR/mosquitto.log" >&2
    fl_die "mosquitto with TLS listeners did not start"
}
broker_up
ok "mosquitto with 5 TLS listeners and the plugin"

# mq_sub PORT NAME ARGS...: mosquitto_sub as certificate NAME (MQTT 5).
mq_sub() {
    local port=$1 name=$2
    shift 2
    "$MOSQ_SUB" -h localhost -p "$port" -V 5 --cafile "$CA" --cert "$P/$name.crt" \
        --key "$P/$name.key" "$@"
}
mq_pub() {
    local port=$1 name=$2
    shift 2
    "$MOSQ_PUB" -h localhost -p "$port" -V 5 --cafile "$CA" --cert "$P/$name.crt" \
        --key "$P/$name.key" "$@"
}
log_has() { grep -qF -- "$1" "$FL_DIR/mosquitto.log"; }

# ---- controller and operator over TLS, by certificate ----------------------
cat > "$FL_DIR/serve.json" << EOF
{
  "data_dir": "$FL_DIR/ctl",
  "broker": "ssl://localhost:$PA",
  "client_id": "upkeep-controller",
  "ca_file": "$CA",
  "cert_file": "$P/controller.crt",
  "key_file": "$P/controller.key",
  "release_keys": ["$FL_DIR/release.pub"],
  "tick_ms": 200
}
EOF
"$FL_BIN/upkeep" serve -c "$FL_DIR/serve.json" >> "$FL_DIR/serve.log" 2>&1 &
FL_SERVE_PID=$!
fl_track "$FL_SERVE_PID"
export UPKEEP_BROKER="ssl://localhost:$PA" UPKEEP_USER=carol UPKEEP_CA_FILE=$CA \
    UPKEEP_CERT_FILE=$P/carol.crt UPKEEP_KEY_FILE=$P/carol.key
fl_wait 30 "the controller to answer over TLS" upk campaign list --timeout 2
log_has "certificate login user=upkeep-controller role=controller" \
    || fl_die "the controller did not log in by certificate"
log_has "certificate login user=carol role=operator" \
    || fl_die "the operator did not log in by certificate"
ok "upkeep serve and the CLI connect with TLS and client certificates"

# ---- a real agent with its own certificate updates -------------------------
# agent_conf NAME BROKER_URL CA CERT: writes $FL_DIR/NAME.json for device dev-1.
agent_conf() {
    local name=$1 url=$2 ca=$3 crt=$4
    mkdir -p "$FL_DIR/$name"
    cat > "$FL_DIR/$name.json" << EOF
{
  "broker": "$url",
  "device_id": "dev-1",
  "hardware": "rev-a",
  "data_dir": "$FL_DIR/$name",
  "keys": ["$FL_DIR/release.pub"],
  "module": "file",
  "module_settings": {"path": "$FL_DIR/$name/firmware.bin"},
  "modules_dir": "$root/examples/agent/modules",
  "reconnect_min_ms": 200,
  "reconnect_max_ms": 1000,
  "tls": {"ca_file": "$ca", "cert_file": "$P/$crt.crt", "key_file": "$P/$crt.key"}
}
EOF
}
agent_start() {
    "$AGENT" -c "$FL_DIR/$1.json" >> "$FL_DIR/$1.log" 2>&1 &
    AGENT_PID=$!
    fl_track "$AGENT_PID"
}
agent_conf agent "ssl://localhost:$PD" "$CA" dev-1
agent_start agent
devices_has() { upk devices --json | grep -q '"dev-1"'; }
fl_wait 30 "dev-1 to register over TLS" devices_has
log_has "certificate login user=dev-1 role=device client=dev-1" \
    || fl_die "dev-1 did not log in by certificate"

fl_make_artifact "$FL_DIR/fw1" 48 fw1
upk release create "$FL_DIR/fw1" --name fw --version 1.0.0 --security-version 1 --hw rev-a \
    --module file --expires 30d --key "$FL_DIR/release.key" --out "$FL_DIR/rel" --upload \
    > /dev/null || fl_die "release upload over TLS failed"
upk campaign create --id tls --release fw-1.0.0 --stages 100% --soak 0 --max-failures 0% \
    --device-timeout 60s > /dev/null || fl_die "campaign create over TLS failed"
timeout 120 "$FL_BIN/upkeep" campaign watch tls --interval 1 > "$FL_DIR/watch.txt" \
    || fl_die "the TLS campaign did not complete"
[ "$(fl_campaign_state tls)" = completed ] || fl_die "campaign tls is not completed"
dev1_version() { [ "$(fl_json 'd.get("version","")' upk devices show dev-1 --json)" = 1.0.0 ]; }
fl_wait 30 "dev-1 to report fw 1.0.0" dev1_version
cmp -s "$FL_DIR/fw1" "$FL_DIR/agent/firmware.bin" || fl_die "installed firmware differs"
ok "dev-1 updated to fw 1.0.0 through the TLS device listener (campaign completed)"

# ---- a device certificate is that device and nothing more ------------------
# Another device's desired state (retained), written by the controller's role.
mq_pub "$PA" controller -i spy-ctl -q 1 -r -t "$PFX/dev/dev-2/desired" -m '{"secret":"d2"}' \
    || fl_die "controller certificate cannot write desired"
# One subscribe with four filters: the client reports "all denied" only when
# every one of them is refused.
out=$(mq_sub "$PD" dev-1 -i dev-1 -t "$PFX/dev/dev-2/desired" -t "$PFX/dev/+/desired" -t "#" \
    -t "$PFX/dev/dev-2/chunk/data" -W 2 2>&1 || true)
case $out in
*"All subscription requests were denied"*) ;;
*) fl_die "a subscription of dev-1 to dev-2's topics was not denied: $out" ;;
esac
case $out in *secret*) fl_die "dev-1 read dev-2's desired" ;; esac
ok "dev-1's certificate cannot subscribe to dev-2's desired/chunks, dev/+/desired or #"

# Writes: a retained value of dev-2's own is not replaced by dev-1's forgery.
mq_pub "$PD" dev-2 -i dev-2 -q 1 -r -t "$PFX/dev/dev-2/online" -m real-dev-2 \
    || fl_die "dev-2 cannot write its own topic"
mq_pub "$PD" dev-1 -i dev-1 -q 1 -r -t "$PFX/dev/dev-2/online" -m forged-by-dev-1 \
    > "$FL_DIR/forge.out" 2>&1 || true
got=$(mq_sub "$PA" controller -i spy-ctl -t "$PFX/dev/dev-2/online" -C 1 -W 5 || true)
[ "$got" = real-dev-2 ] || fl_die "dev-2's online topic holds '$got' after dev-1's forgery"
log_has "publish denied user=dev-1 error=DENIED" || fl_die "no denial logged for dev-1's forgery"
ok "dev-1's certificate cannot publish to dev-2's topics"

# The sender stamp comes from the certificate, whatever the client claims
# (retained, so that the reader needs no race-prone subscribe-first).
mq_pub "$PD" dev-2 -i dev-2 -q 1 -r -t "$PFX/dev/dev-2/events" -m '{}' \
    -D publish user-property upkeep-sender controller:upkeep-controller \
    || fl_die "dev-2 cannot publish its events"
stamp=$(mq_sub "$PA" controller -i spy-ctl2 -t "$PFX/dev/dev-2/events" -C 1 -W 5 -F '%P' || true)
case $stamp in
*"upkeep-sender:device:dev-2"*) ;;
*) fl_die "events of dev-2 not stamped device:dev-2 (properties: $stamp)" ;;
esac
case $stamp in *controller:upkeep-controller*) fl_die "a forged upkeep-sender survived" ;; esac
ok "a certificate client's messages are stamped upkeep-sender=device:dev-2; a forged one is removed"

# Client id: on the device listener (use_username_as_clientid) dev-1's
# certificate asking for client id dev-2 is connected as dev-1 and dev-2's
# session is untouched; on a listener without it the plugin refuses it.
mq_sub "$PD" dev-2 -i dev-2 -t "$PFX/dev/dev-2/desired" -W 60 > "$FL_DIR/dev2-sub.out" 2>&1 &
dev2_sub=$!
fl_track "$dev2_sub"
fl_wait 10 "dev-2's subscriber" grep -q secret "$FL_DIR/dev2-sub.out"
mq_pub "$PD" dev-1 -i dev-2 -q 1 -t "$PFX/dev/dev-1/online" -m x > /dev/null 2>&1 \
    || fl_die "dev-1 could not publish on its own topic"
kill -0 "$dev2_sub" 2> /dev/null || fl_die "dev-2's session was taken over"
log_has "Client dev-2 already connected" && fl_die "dev-1's certificate took dev-2's client id"
out=$(mq_sub "$PA" dev-1 -i dev-2 -t "$PFX/dev/dev-2/desired" -W 10 2>&1 || true)
case $out in *secret*) fl_die "dev-1 with client id dev-2 read dev-2's desired" ;; esac
fl_wait 10 "the refusal of dev-1 as dev-2" log_has \
    "login refused user=dev-1 client=dev-2 address=127.0.0.1 error=AUTH_FAILED (device client id differs from its certificate's CN)"
fl_stop "$dev2_sub" 5
ok "dev-1's certificate cannot use client id dev-2 (renamed on the device listener, refused elsewhere)"

# ---- refused clients --------------------------------------------------------
rc=0
"$MOSQ_SUB" -h localhost -p "$PD" -V 5 --cafile "$CA" -i dev-1 -t "$PFX/dev/dev-1/#" -W 3 \
    > "$FL_DIR/nocert.out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && ! grep -q secret "$FL_DIR/nocert.out" || fl_die "a client without certificate got in"
ok "no client certificate: refused (rc=$rc)"
rc=0
mq_sub "$PD" dev-1-otherca -i dev-1 -t "$PFX/dev/dev-1/#" -W 3 > "$FL_DIR/otherca.out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fl_die "a certificate of another CA got in"
ok "client certificate of another CA: refused (rc=$rc)"
for who in nobody stranger; do
    out=$(mq_sub "$PA" "$who" -i "$who-1" -t "$PFX/dev/dev-1/#" -W 10 2>&1 || true)
    case $out in *secret* | *real-dev*) fl_die "unknown identity $who read something" ;; esac
done
fl_wait 10 "the refusal of the unknown CN" log_has \
    "login refused user=ops@example.com client=nobody-1 address=127.0.0.1 error=AUTH_FAILED (certificate identity is not listed"
fl_wait 10 "the refusal of the unsafe CN" log_has "login refused user=? client=stranger-1"
ok "certificates with an unlisted CN or an unsafe CN: refused"

# ---- clients refuse bad brokers, with named errors --------------------------
fl_stop "$AGENT_PID" 20
# check_agent CONF-NAME URL CA CERT NEEDLE: the agent logs NEEDLE and never connects.
check_agent() {
    local name=$1 url=$2 ca=$3 crt=$4 needle=$5
    local logins
    logins=$(grep -c "certificate login user=dev-1 " "$FL_DIR/mosquitto.log" || true)
    agent_conf "$name" "$url" "$ca" "$crt"
    agent_start "$name"
    fl_wait 30 "$name: $needle" grep -qF -- "$needle" "$FL_DIR/$name.log"
    fl_stop "$AGENT_PID" 20
    [ "$(grep -c "certificate login user=dev-1 " "$FL_DIR/mosquitto.log" || true)" = "$logins" ] \
        || fl_die "$name logged in although its TLS check failed"
}
check_agent ag-wrongname "ssl://localhost:$PW" "$CA" dev-1 \
    "error=TLS_UNTRUSTED (broker certificate: hostname mismatch"
ok "agent refuses a broker certificate for another name: TLS_UNTRUSTED"
check_agent ag-otherca "ssl://localhost:$PO" "$CA" dev-1 \
    "error=TLS_UNTRUSTED (broker certificate: unable to get local issuer certificate"
ok "agent refuses a broker certificate of another CA: TLS_UNTRUSTED"
check_agent ag-expired "ssl://localhost:$PE" "$CA" dev-1 \
    "error=TLS_UNTRUSTED (broker certificate: certificate has expired"
ok "agent refuses an expired broker certificate: TLS_UNTRUSTED"
check_agent ag-ownexpired "ssl://localhost:$PD" "$CA" dev-1-expired \
    "error=TLS_FAILED (our certificate $P/dev-1-expired.crt has expired)"
ok "agent with an expired certificate of its own: TLS_FAILED"
check_agent ag-ip-wrongname "ssl://127.0.0.1:$PW" "$CA" dev-1 \
    "error=TLS_UNTRUSTED (broker certificate: IP address mismatch"
ok "agent refuses a broker certificate without its IP address: TLS_UNTRUSTED"

# Config: ssl:// without a CA, or with an unreadable one, never starts.
agent_conf ag-noca "ssl://localhost:$PD" "" dev-1
python3 - "$FL_DIR/ag-noca.json" << 'EOF'
import json, sys
p = sys.argv[1]; d = json.load(open(p)); del d["tls"]["ca_file"]; json.dump(d, open(p, "w"))
EOF
rc=0
"$AGENT" -c "$FL_DIR/ag-noca.json" --check-config > "$FL_DIR/ag-noca.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && grep -q "tls.ca_file" "$FL_DIR/ag-noca.log" \
    || fl_die "an ssl:// agent without ca_file was accepted (rc=$rc)"
agent_conf ag-badca "ssl://localhost:$PD" "$FL_DIR/no-such-ca.pem" dev-1
rc=0
timeout 20 "$AGENT" -c "$FL_DIR/ag-badca.json" > "$FL_DIR/ag-badca.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q "CONFIG_INVALID (ca_file" "$FL_DIR/ag-badca.log" \
    || fl_die "an agent with an unreadable ca_file did not stop with CONFIG_INVALID (rc=$rc)"
ok "agent: ssl:// without tls.ca_file, or with an unreadable one, refused at start"

# The operator CLI: a CA that does not sign the broker -> TLS_UNTRUSTED.
rc=0
out=$(upk campaign list --ca-file "$P/other-ca.crt" --timeout 5 2>&1) || rc=$?
[ "$rc" -ne 0 ] || fl_die "the CLI trusted a broker signed by another CA"
case $out in *TLS_UNTRUSTED*) ;; *) fl_die "CLI error does not name TLS_UNTRUSTED: $out" ;; esac
rc=0
out=$(UPKEEP_CA_FILE= upk campaign list --timeout 5 2>&1) || rc=$?
[ "$rc" -ne 0 ] || fl_die "the CLI connected to ssl:// without a CA"
ok "CLI: broker of another CA -> TLS_UNTRUSTED; no CA -> refused"

# serve: ssl:// without ca_file is a config error.
python3 - "$FL_DIR/serve.json" "$FL_DIR/serve-noca.json" << 'EOF'
import json, sys
d = json.load(open(sys.argv[1])); del d["ca_file"]; json.dump(d, open(sys.argv[2], "w"))
EOF
rc=0
out=$(timeout 20 "$FL_BIN/upkeep" serve -c "$FL_DIR/serve-noca.json" 2>&1) || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fl_die "serve started on ssl:// without ca_file (rc=$rc)"
case $out in *ca_file*) ;; *) fl_die "serve's error does not name ca_file: $out" ;; esac
ok "serve: ssl:// without ca_file refused"

echo "test_tls: $pass checks passed"
