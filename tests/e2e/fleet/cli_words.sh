#!/usr/bin/env bash
# The CLI's wording and exit codes (issue 16, item 15; the table in
# docs/operator-guide.md section 3): a command that dumps its usage says
# first what was wrong, and a missing broker is a settings error (2), not
# an unreachable one (3). No broker is needed.
. "$(dirname "$0")/common.sh"
unset UPKEEP_BROKER
# first_line_is WANT_RC WANT_FIRST_LINE CMD...: stderr's first line and rc.
first_line_is() {
    local want_rc=$1 want=$2 rc=0
    shift 2
    "$FL_BIN/upkeep" "$@" > /dev/null 2> "$FL_DIR/err" || rc=$?
    e2e_expect "$rc" "$want_rc" "exit code of 'upkeep $*'"
    e2e_expect "$(head -n 1 "$FL_DIR/err")" "$want" "first line of 'upkeep $*'"
}
first_line_is 2 "upkeep: a command is missing"
first_line_is 2 "upkeep campaign: a subcommand is missing (create, list, show, watch, pause, resume, abort, rollback)" campaign
first_line_is 2 "upkeep keygen: --out PREFIX is missing" keygen
first_line_is 2 "upkeep devices label: give a device ID and a GROUP (\"\" removes the label)" devices label dev-1
first_line_is 2 "upkeep devices: unknown subcommand 'lable' (list, show, label)" devices lable
first_line_is 2 "upkeep device: a subcommand is missing (label)" device
first_line_is 2 "upkeep device label: the device ID is missing" device label
first_line_is 2 "upkeep release: the operand is missing (a bundle file or release id)" release show
first_line_is 2 "upkeep audit: unexpected operand 'x'" audit x
first_line_is 2 "upkeep: no broker or user: pass --broker URL --user NAME --password-file F, set UPKEEP_BROKER/UPKEEP_USER/UPKEEP_PASSWORD_FILE, or write ~/.config/upkeep/cli.json (docs/operator-guide.md)" campaign list
echo "e2e cli_words: ok"
