#!/usr/bin/env bash
# Update-capability disclosure end to end: a release signed with a support
# object reaches a simulated fleet; `upkeep device label` (text, JSON, HTML
# card) and `upkeep report posture` show what the devices adopted, signed.
# $1 = build dir. Prints every output it checks (docs/update-capability.md
# quotes it).
. "$(dirname "$0")/../fleet/common.sh"
N=4
fl_broker_start
fl_serve_start 200
fl_sim_start fleet --count $N --hw rev-a:50%,rev-b:50% --install-ms 50 --health-ms 20
fl_wait_sim fleet connected $N 120
fl_wait 60 "$N devices registered" fl_devices_are $N
dev=$(fl_json 'sorted(x["id"] for x in d)[0]' upk devices --json)

# Before any signed release: no end of support stated.
upk device label "$dev" > "$FL_DIR/label0.txt"
cat "$FL_DIR/label0.txt"
grep -q "security updates: unknown: no end of support stated" "$FL_DIR/label0.txt" \
    || fl_die "label before the release"

until=$(python3 -c 'import datetime; print((datetime.date.today()+datetime.timedelta(days=730)).isoformat()+"T00:00:00Z")')
fl_make_artifact "$FL_DIR/a1" 16 a1
fl_release fw 2.1.0 7 "$FL_DIR/a1" --support-until "$until" --delivery automatic \
    --notice "release notes on the product page and e-mail to registered owners" \
    --contact "security@example.com" > /dev/null
upk campaign create --id sec --release fw-2.1.0 --stages 50%,100% --soak 0 \
    --max-failures 0% --device-timeout 60s > /dev/null
timeout 120 "$FL_BIN/upkeep" campaign watch sec --interval 1 > /dev/null \
    || fl_die "campaign sec did not complete"
fl_wait 30 "all devices report 2.1.0" e2e_versions_are 2.1.0 $N

echo "\$ upkeep device label $dev"
upk device label "$dev" | tee "$FL_DIR/label.txt"
grep -q "security updates: yes, until ${until:0:10}" "$FL_DIR/label.txt" || fl_die "support date"
grep -q "support end from: signed by the manufacturer" "$FL_DIR/label.txt" \
    || fl_die "signed source"
grep -q "updates arrive:   automatic (signed statement)" "$FL_DIR/label.txt" || fl_die "delivery"
grep -q "contact:          security@example.com" "$FL_DIR/label.txt" || fl_die "contact"
grep -q "last patched:     $(date -u +%Y-%m-%d)" "$FL_DIR/label.txt" || fl_die "last patched"

echo "\$ upkeep device label $dev --json"
upk device label "$dev" --json | tee "$FL_DIR/label.json"
e2e_expect "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["support_source"], d["security_updates"], d["delivery_signed"])' "$FL_DIR/label.json")" \
    "signed-manifest yes True" "label JSON"

upk device label "$dev" --html "$FL_DIR/card.html"
grep -q '<div class="card">' "$FL_DIR/card.html" || fl_die "HTML card"
grep -q "security@example.com" "$FL_DIR/card.html" || fl_die "HTML card contact"
if grep -Eq '(src|href)=' "$FL_DIR/card.html"; then fl_die "HTML card has external resources"; fi

# Unknown device: operation failed (exit 1), usage error (exit 2).
rc=0; upk device label no-such-device > /dev/null 2>&1 || rc=$?
e2e_expect "$rc" 1 "label of an unknown device"
rc=0; upk device label > /dev/null 2>&1 || rc=$?
e2e_expect "$rc" 2 "label without an id"

echo "\$ upkeep report posture"
upk report posture | tee "$FL_DIR/posture.txt"
grep -q "end of support signed: $N, claimed by the device (not verified): 0, from device config: 0, not stated: 0" "$FL_DIR/posture.txt" \
    || fl_die "posture support counts"
grep -q "security updates: $N supported, 0 ending within 90 days, 0 ended" "$FL_DIR/posture.txt" \
    || fl_die "posture support states"
echo "label scenario OK"
