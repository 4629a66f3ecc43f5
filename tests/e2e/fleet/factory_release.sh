#!/usr/bin/env bash
# A factory-installed release in the agent config (issue 16, item 12): a
# real agent that has never been updated reports it in its state, so the
# controller shows its version and `--target version=...` selects it before
# its first update; a device without it still reports no version.
. "$(dirname "$0")/common.sh"
fl_broker_start
fl_serve_start 200
agent_conf() { # ID EXTRA_JSON
    "$FL_BIN/upkeep" device-key --secret-file "$FL_DIR/fleet.secret" "$1" > "$FL_DIR/$1.pw"
    mkdir -p "$FL_DIR/$1"
    cat > "$FL_DIR/$1.json" <<JSON
{
  "broker": "$FL_URL",
  "device_id": "$1",
  "password_file": "$FL_DIR/$1.pw",
  "hardware": "rev-a",
  "data_dir": "$FL_DIR/$1",
  "keys": ["$FL_DIR/release.pub"],
  "module": "ab-dir",
  "module_settings": {"root": "$FL_DIR/$1/slots"},
  "modules_dir": "$e2e_root/examples/agent/modules"$2
}
JSON
    "$FL_BIN/upkeep-agent" -c "$FL_DIR/$1.json" > "$FL_DIR/$1.log" 2>&1 &
    fl_track $!
}
img=$(printf 'ab%.0s' $(seq 32))
agent_conf dev-f ",
  \"factory_release\": {\"name\": \"fw\", \"version\": \"1.0.0\", \"security_version\": 3,
                        \"image_sha256\": \"$img\"}"
agent_conf dev-n ""
fl_wait 30 "two devices registered" fl_devices_are 2
field() { fl_json "[x.get('$2','') for x in d if x['id']=='$1'][0]" upk devices --json; }
has_version() { [ "$(field dev-f version)" = "1.0.0" ]; }
fl_wait 30 "dev-f reports its factory release" has_version
e2e_expect "$(field dev-f release)" fw "dev-f release"
e2e_expect "$(field dev-n version)" "" "dev-n version"
# The factory release is what --target version= selects.
fl_make_artifact "$FL_DIR/a2" 64 a2
fl_release fw 2.0.0 3 "$FL_DIR/a2" > /dev/null
upk campaign create --id up --release fw-2.0.0 --target version=1.0.0 --stages 100% --soak 0 \
    > /dev/null || fl_die "campaign create --target version=1.0.0"
e2e_expect "$(fl_json 'sum(d["counts"].values())' upk campaign show up --json)" 1 "devices of --target version=1.0.0"
fl_wait 30 "dev-f is offered fw-2.0.0" grep -q "campaign=up release=fw version=2.0.0 accepted" "$FL_DIR/dev-f.log"
grep -q "campaign=up" "$FL_DIR/dev-n.log" && fl_die "dev-n (no version) was selected by version=1.0.0"
echo "e2e factory_release: ok"
