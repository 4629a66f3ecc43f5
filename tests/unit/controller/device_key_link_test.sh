#!/bin/sh
# `upkeep device-key ID --link-secret-file F` prints the device's link key:
# the vector of docs/protocol.md 8.1 (also checked with openssl there), the
# secret read like serve.json's link_secret_file, and named refusals.
set -u
UPKEEP=$1
dir=$(mktemp -d /tmp/upk-linkkey-XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail=0
printf 'link-secret-0123456789\n' > "$dir/link.secret"
printf 'fifteen-bytes..' > "$dir/short.secret"
got=$("$UPKEEP" device-key --link-secret-file "$dir/link.secret" dev-0001)
want=78f6e06f6b8a8e167a99b5eb34dd37e7f2e4bd00642de7f047cf131174fd2f50
if [ "$got" = "$want" ]; then echo "ok 1 - link key of dev-0001 is the documented vector"
else echo "not ok 1 - got '$got' want '$want'"; fail=1; fi
# It is not the MQTT password derived from the same bytes as a fleet secret.
pw=$("$UPKEEP" device-key --secret-file "$dir/link.secret" dev-0001)
if [ -n "$pw" ] && [ "$pw" != "$got" ]; then echo "ok 2 - link key differs from the password"
else echo "not ok 2 - password '$pw' link key '$got'"; fail=1; fi
if "$UPKEEP" device-key --link-secret-file "$dir/short.secret" dev-0001 >/dev/null 2>"$dir/err" ||
   ! grep -q 'shorter than 16 bytes' "$dir/err"; then
    echo "not ok 3 - short link secret accepted or not named"; cat "$dir/err"; fail=1
else echo "ok 3 - short link secret refused"; fi
if "$UPKEEP" device-key --link-secret-file "$dir/link.secret" 'dev/x' >/dev/null 2>"$dir/err" ||
   ! grep -q 'ID_INVALID' "$dir/err"; then
    echo "not ok 4 - bad id accepted"; fail=1
else echo "ok 4 - bad id refused with ID_INVALID"; fi
exit $fail
