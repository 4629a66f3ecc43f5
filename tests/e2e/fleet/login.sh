#!/usr/bin/env bash
# A refused login is never a network error (issue 16, item 1), against the
# real broker plugin with its default lockout (5 failures a minute lock the
# username): the CLI tries a wrong password once, says "login refused" with
# the likely causes and exits 4 at once, so the right password works right
# after; `upkeep serve` and the agent, refused, log it once and wait (30 s at
# least) before the next attempt instead of retrying into the lockout.
. "$(dirname "$0")/common.sh"
python3 - "$FL_DIR/upkeep-broker.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["lockout"] = {"max_failures_per_username": 5, "max_failures_per_address": 0,
                "window_seconds": 60, "lockout_seconds": 300}
json.dump(d, open(sys.argv[1], "w"))
PY
fl_broker_start
fl_serve_start 200
refusals() { grep -c "login refused user=$1 " "$FL_DIR/mosquitto.log" || true; }

# ---- the CLI: one attempt, a clear message, exit 4 -------------------------
echo "not-the-password" > "$FL_DIR/bad.pw"
rc=0
start=$SECONDS
upk campaign list --password-file "$FL_DIR/bad.pw" > "$FL_DIR/cli.out" 2> "$FL_DIR/cli.err" || rc=$?
took=$((SECONDS - start))
e2e_expect "$rc" 4 "exit code of a refused login"
[ "$took" -le 5 ] || fl_die "a refused login took ${took}s to report (retried?)"
want="upkeep: login refused for 'alice' by the broker at $FL_URL: wrong password, unknown account, or locked out after repeated failures (see the broker log)"
grep -qxF "$want" "$FL_DIR/cli.err" || { cat "$FL_DIR/cli.err" >&2; fl_die "CLI message"; }
grep -q "cannot reach" "$FL_DIR/cli.err" && fl_die "a refused login was reported as unreachable"
e2e_expect "$(refusals alice)" 1 "refused logins of alice at the broker"
# The right password works at once: the CLI did not lock the account.
upk campaign list > /dev/null || fl_die "the right password was refused after one wrong one"

# ---- serve and the agent: refused once, then a slow backoff ----------------
mkdir -p "$FL_DIR/ctl2" "$FL_DIR/ag"
cat > "$FL_DIR/serve2.json" <<JSON
{
  "data_dir": "$FL_DIR/ctl2",
  "broker": "$FL_URL",
  "username": "controller",
  "password_file": "$FL_DIR/bad.pw",
  "client_id": "upkeep-controller-2",
  "release_keys": ["$FL_DIR/release.pub"]
}
JSON
"$FL_BIN/upkeep" serve -c "$FL_DIR/serve2.json" > "$FL_DIR/serve2.log" 2>&1 &
S2=$!
fl_track $S2
cat > "$FL_DIR/agent.json" <<JSON
{
  "broker": "$FL_URL",
  "device_id": "dev-1",
  "password_file": "$FL_DIR/bad.pw",
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
"$FL_BIN/upkeep-agent" -c "$FL_DIR/agent.json" > "$FL_DIR/agent.log" 2>&1 &
AG=$!
fl_track $AG
fl_wait 20 "serve logs the refusal" grep -q "login refused for 'controller' by the broker at $FL_URL" "$FL_DIR/serve2.log"
fl_wait 20 "the agent logs the refusal" grep -q "login refused for 'dev-1' by the broker at $FL_URL" "$FL_DIR/agent.log"
# Their reconnect backoffs (0.5 s and 0.2 s) would have retried about ten
# times in these 5 s, locking both accounts out; a refusal waits >= 30 s.
sleep 5
e2e_expect "$(refusals controller)" 1 "refused logins of serve"
e2e_expect "$(refusals dev-1)" 1 "refused logins of the agent"
e2e_expect "$(grep -c 'login refused' "$FL_DIR/serve2.log")" 1 "refusal lines in serve's log"
e2e_expect "$(grep -c 'login refused' "$FL_DIR/agent.log")" 1 "refusal lines in the agent's log"
grep -q "next attempt in [0-9]* s" "$FL_DIR/serve2.log" || fl_die "serve does not say when it tries again"
grep -q "error=CONN" "$FL_DIR/serve2.log" "$FL_DIR/agent.log" && fl_die "a refusal was logged as CONN"
grep -q "LOCKED_OUT" "$FL_DIR/mosquitto.log" && fl_die "an account was locked out"
fl_stop $S2 10
fl_stop $AG 10
echo "e2e login: ok"
