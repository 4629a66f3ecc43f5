#!/usr/bin/env bash
# Release uploads through a real broker whose plugin has the rate limits of
# examples/broker/upkeep-broker.json (operators: 10 messages/s, 64 KiB/s),
# the controller and the operator CLI (docs/operator-guide.md, "Import it to
# the controller"):
#  - a multi-megabyte import paced to the example's limits completes and the
#    broker drops nothing;
#  - an import not told the limits is throttled by the broker, says so, and
#    still completes;
#  - an import killed midway resumes where the controller stopped receiving
#    (another operator gets BUSY meanwhile), and sends only the rest;
#  - a progress line is drawn on a terminal and not into a file;
#  - `release create --out` makes a missing folder, the bundle names its
#    artifact relatively, and a bundle moved to another folder imports with
#    the artifact beside it or named with --artifact.
# Usage: upload.sh BUILD_DIR
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../../.." && pwd)
. "$here/../fleet-lib.sh"
fl_init "${1:?usage: upload.sh BUILD_DIR}"
trap fl_cleanup EXIT

# The example's rate limits, with this fleet's accounts and files.
python3 - "$FL_DIR/upkeep-broker.json" "$src/examples/broker/upkeep-broker.json" <<'EOF'
import json, sys
cfg = json.load(open(sys.argv[1]))
cfg["rate_limits"] = json.load(open(sys.argv[2]))["rate_limits"]
cfg["stats_interval_seconds"] = 1
json.dump(cfg, open(sys.argv[1], "w"), indent=1)
EOF
fl_broker_start
fl_serve_start

# broker/stats as the admin (root): dropped_rate so far.
dropped_rate() {
    mosquitto_sub -V mqttv5 -h 127.0.0.1 -p "$FL_PORT" -u root -P "$(cat "$FL_DIR/root.pw")" \
        -t upkeep/v1/broker/stats -C 1 -W 5 \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["dropped_rate"])'
}
# The example's operator limits, as the operator guide says to pass them.
example_rate=(--bytes-per-second 65536 --messages-per-second 10)

sign() { # sign NAME VERSION ARTIFACT OUTDIR
    upk release create "$3" --name "$1" --version "$2" --security-version 1 --hw rev-a \
        --module ab-dir --expires 30d --key "$FL_DIR/release.key" --out "$4"
}

# ---- --out makes the folder; the bundle does not keep an absolute path
mkdir -p "$FL_DIR/offline"
fl_make_artifact "$FL_DIR/offline/big.bin" 2048
sign fw 1.0.0 "$FL_DIR/offline/big.bin" "$FL_DIR/offline/out/deep" > "$FL_DIR/create.out" \
    || fl_die "release create --out into a missing folder failed"
bundle="$FL_DIR/offline/out/deep/fw-1.0.0.release.json"
[ -f "$bundle" ] || fl_die "no bundle in the --out folder"
art=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["artifact"])' "$bundle")
[ "$art" = "../../big.bin" ] || fl_die "bundle artifact is '$art', not relative to the bundle"
: > "$FL_DIR/not-a-dir"
if sign fw 1.0.1 "$FL_DIR/offline/big.bin" "$FL_DIR/not-a-dir/out" 2> "$FL_DIR/err"; then
    fl_die "release create --out under a file succeeded"
fi
grep -q "cannot make the --out folder .*: Not a directory" "$FL_DIR/err" \
    || fl_die "--out error has no errno text: $(cat "$FL_DIR/err")"

# ---- a 2 MiB import paced to the example's limits: complete, nothing dropped
before=$(dropped_rate)
upk release import "$bundle" "${example_rate[@]}" > "$FL_DIR/import.out" 2> "$FL_DIR/import.err" \
    || fl_die "import with the example's limits failed: $(cat "$FL_DIR/import.err")"
grep -q "imported release fw-1.0.0" "$FL_DIR/import.out" || fl_die "no import line"
grep -q ", 0 refused by the broker" "$FL_DIR/import.out" \
    || fl_die "paced import was refused: $(cat "$FL_DIR/import.out")"
grep -q "uploading" "$FL_DIR/import.out" && fl_die "progress line drawn into a file"
[ "$(fl_json 'd["size"]' upk release show fw-1.0.0 --json)" = 2097152 ] || fl_die "wrong size"
sleep 1.5 # the next stats message (interval 1 s)
after=$(dropped_rate)
[ "$before" = "$after" ] || fl_die "the broker dropped $((after - before)) paced messages"

# ---- not told the limits: throttled, named as such, and still complete
fl_make_artifact "$FL_DIR/offline/mid.bin" 512
sign fw 1.1.0 "$FL_DIR/offline/mid.bin" "$FL_DIR/offline/out" > /dev/null || fl_die "sign 1.1.0"
upk release import "$FL_DIR/offline/out/fw-1.1.0.release.json" > "$FL_DIR/thr.out" \
    2> "$FL_DIR/thr.err" || fl_die "throttled import failed: $(cat "$FL_DIR/thr.err")"
grep -q "throttled by the broker's rate limit at byte" "$FL_DIR/thr.err" \
    || fl_die "a throttled import does not say so: $(cat "$FL_DIR/thr.err")"
grep -q "no reply" "$FL_DIR/thr.err" && fl_die "throttling reported as no reply"
grep -q "imported release fw-1.1.0" "$FL_DIR/thr.out" || fl_die "throttled import incomplete"

# ---- killed midway, then resumed at the controller's offset
fl_make_artifact "$FL_DIR/offline/res.bin" 1024
sign fw 1.2.0 "$FL_DIR/offline/res.bin" "$FL_DIR/offline/out" > /dev/null || fl_die "sign 1.2.0"
rb="$FL_DIR/offline/out/fw-1.2.0.release.json"
"$FL_BIN/upkeep" release import "$rb" "${example_rate[@]}" > "$FL_DIR/kill.out" 2>&1 &
cli=$!
fl_track "$cli"
partial_bytes() { # the controller's partial upload file, 0 when none
    local f
    for f in "$FL_DIR"/ctl/blobs/.up-*; do
        [ -f "$f" ] && { stat -c %s "$f"; return 0; }
    done
    echo 0
}
partial_over() { [ "$(partial_bytes)" -ge "$1" ]; }
fl_wait 60 "the first 300 KiB to arrive" partial_over 307200
kill -KILL "$cli"
wait "$cli" 2> /dev/null
had=$(partial_bytes)
[ "$had" -lt 1048576 ] || fl_die "the killed import had finished already"
# Another operator may not take the upload over.
if fl_as bob release import "$rb" "${example_rate[@]}" > /dev/null 2> "$FL_DIR/bob.err"; then
    fl_die "bob took over alice's upload"
fi
grep -q "being uploaded by 'alice'" "$FL_DIR/bob.err" || fl_die "bob: $(cat "$FL_DIR/bob.err")"
upk release import "$rb" "${example_rate[@]}" > "$FL_DIR/resume.out" 2> "$FL_DIR/resume.err" \
    || fl_die "resumed import failed: $(cat "$FL_DIR/resume.err")"
at=$(sed -n 's/^resuming the upload of fw-1.2.0 at byte \([0-9]*\) of 1048576$/\1/p' \
    "$FL_DIR/resume.out")
[ -n "$at" ] || fl_die "the import did not resume: $(cat "$FL_DIR/resume.out")"
[ "$at" -ge "$had" ] || fl_die "resumed at $at, before the $had bytes the controller had"
grep -q "imported release fw-1.2.0" "$FL_DIR/resume.out" || fl_die "resumed import incomplete"
[ "$(fl_json 'd["sha256"]' upk release show fw-1.2.0 --json)" = \
    "$(sha256sum "$FL_DIR/offline/res.bin" | cut -d' ' -f1)" ] || fl_die "resumed artifact differs"

# ---- sign offline, import elsewhere: artifact beside the bundle, or --artifact
fl_make_artifact "$FL_DIR/offline/small.bin" 64
sign fw 1.3.0 "$FL_DIR/offline/small.bin" "$FL_DIR/offline/o3" > /dev/null || fl_die "sign 1.3.0"
sign fw 1.4.0 "$FL_DIR/offline/small.bin" "$FL_DIR/offline/o4" > /dev/null || fl_die "sign 1.4.0"
mkdir -p "$FL_DIR/elsewhere" "$FL_DIR/other" "$FL_DIR/images"
mv "$FL_DIR/offline/o3/fw-1.3.0.release.json" "$FL_DIR/elsewhere/"
cp "$FL_DIR/offline/small.bin" "$FL_DIR/elsewhere/"
mv "$FL_DIR/offline/o4/fw-1.4.0.release.json" "$FL_DIR/other/"
mv "$FL_DIR/offline/small.bin" "$FL_DIR/images/fw-1.4.0.img"
upk release import "$FL_DIR/elsewhere/fw-1.3.0.release.json" "${example_rate[@]}" \
    > "$FL_DIR/el.out" 2>&1 || fl_die "import beside the bundle failed: $(cat "$FL_DIR/el.out")"
if upk release import "$FL_DIR/other/fw-1.4.0.release.json" > /dev/null 2> "$FL_DIR/na.err"; then
    fl_die "import without its artifact succeeded"
fi
grep -q "cannot open artifact .*No such file or directory (put the artifact beside the bundle, or name it with --artifact FILE)" \
    "$FL_DIR/na.err" || fl_die "missing artifact: $(cat "$FL_DIR/na.err")"
upk release import "$FL_DIR/other/fw-1.4.0.release.json" --artifact "$FL_DIR/images/fw-1.4.0.img" \
    "${example_rate[@]}" > "$FL_DIR/ar.out" 2>&1 || fl_die "--artifact failed: $(cat "$FL_DIR/ar.out")"
# A wrong --artifact is refused before anything is sent.
if upk release import "$bundle" --id fw-x --artifact "$FL_DIR/images/fw-1.4.0.img" \
    > /dev/null 2> "$FL_DIR/wr.err"; then
    fl_die "a wrong --artifact was imported"
fi
grep -q "not the file this bundle was made for" "$FL_DIR/wr.err" || fl_die "$(cat "$FL_DIR/wr.err")"

# ---- the limits from cli.json (a bad value is refused by name); a progress
# line on a terminal
mkdir -p "$FL_DIR/home/.config/upkeep"
echo '{"bytes_per_second": "fast"}' > "$FL_DIR/home/.config/upkeep/cli.json"
if HOME="$FL_DIR/home" upk release import "$bundle" > /dev/null 2> "$FL_DIR/cj.err"; then
    fl_die "a bad bytes_per_second in cli.json was accepted"
fi
grep -q "bytes_per_second: must be a number" "$FL_DIR/cj.err" || fl_die "$(cat "$FL_DIR/cj.err")"
echo '{"bytes_per_second": 65536, "messages_per_second": 10}' \
    > "$FL_DIR/home/.config/upkeep/cli.json"
fl_make_artifact "$FL_DIR/tty.bin" 256
sign fw 1.5.0 "$FL_DIR/tty.bin" "$FL_DIR/out5" > /dev/null || fl_die "sign 1.5.0"
HOME="$FL_DIR/home" script -qec "'$FL_BIN/upkeep' release import \
    '$FL_DIR/out5/fw-1.5.0.release.json'" /dev/null > "$FL_DIR/tty.out" 2>&1 \
    || fl_die "import on a terminal failed: $(cat "$FL_DIR/tty.out")"
grep -q "uploading fw-1.5.0: .* of 256.0 KiB" "$FL_DIR/tty.out" \
    || fl_die "no progress line on a terminal: $(cat "$FL_DIR/tty.out")"
grep -q ", 0 refused by the broker" "$FL_DIR/tty.out" \
    || fl_die "the limits of cli.json were not used: $(cat "$FL_DIR/tty.out")"
fl_log "upload: ok"
