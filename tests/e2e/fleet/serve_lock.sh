#!/usr/bin/env bash
# One `upkeep serve` per data directory (issue 16, item 6): a second daemon
# on the same config exits at once, naming the lock and the pid holding it,
# without ever logging in to the broker (where the two would knock each
# other off every few seconds); the first keeps serving.
. "$(dirname "$0")/common.sh"
fl_broker_start
fl_serve_start 200
logins() { grep -c "as upkeep-controller " "$FL_DIR/mosquitto.log" || true; }
before=$(logins)
rc=0
start=$SECONDS
timeout 20 "$FL_BIN/upkeep" serve -c "$FL_DIR/serve.json" > "$FL_DIR/serve2.out" 2>&1 || rc=$?
took=$((SECONDS - start))
e2e_expect "$rc" 1 "exit code of a second serve"
[ "$took" -le 3 ] || fl_die "the second serve took ${took}s to give up"
want="upkeep serve: the data directory $FL_DIR/ctl is in use: its lock $FL_DIR/ctl/serve.lock is held by pid $FL_SERVE_PID (another \`upkeep serve\`)"
grep -qF "$want" "$FL_DIR/serve2.out" || { cat "$FL_DIR/serve2.out" >&2; fl_die "second serve's message"; }
e2e_expect "$(logins)" "$before" "controller logins at the broker"
upk campaign list > /dev/null || fl_die "the first serve stopped answering"
# After the first stops, the same config starts again.
fl_serve_stop
fl_serve_start 200
echo "e2e serve_lock: ok"
