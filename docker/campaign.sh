# The campaign step of docker/test.sh (sourced; uses its compose, say, fail,
# agents, timeout_s and work). Signs a release inside the controller
# container, runs a two-stage campaign over every agent, follows it with
# `upkeep campaign watch`, and checks every device installed it.

ctl() { "${compose[@]}" exec -T controller "$@"; }

# json_get EXPR: evaluates a Python expression over the JSON document `d` read
# from stdin and prints the result.
json_get() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

online_devices() {
  ctl upkeep devices list --online --json 2>/dev/null | json_get 'len(d)' 2>/dev/null || echo 0
}

run_campaign() {
  say "waiting for $agents devices to register online"
  local deadline=$((SECONDS + 120)) n=0
  while n=$(online_devices) && [ "$n" -lt "$agents" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "only $n of $agents devices online after 120 s"
    sleep 2
  done
  ctl upkeep devices list

  say "signing and uploading release fw 2.0.0 (the release key is in the fleet volume)"
  ctl bash -c 'set -e; mkdir -p /tmp/rel
    head -c 300000 /dev/urandom >/tmp/rel/fw-2.0.0.bin
    upkeep release create /tmp/rel/fw-2.0.0.bin --name fw --version 2.0.0 --security-version 2 \
      --hw "${UPKEEP_HARDWARE:-docker-sim}" --module file --expires 30d --key /fleet/release.key \
      --out /tmp/rel --upload' || fail "release create/upload failed"
  local sha release
  sha=$(ctl sha256sum /tmp/rel/fw-2.0.0.bin | cut -d' ' -f1)
  release=$(ctl upkeep release list --json | json_get '[r["id"] for r in d if r.get("version") == "2.0.0"][0]') \
    || fail "release 2.0.0 is not listed by the controller"
  echo "release $release, artifact sha256 $sha"

  say "campaign: release $release to all devices in stages 34%,100%"
  ctl upkeep campaign create --release "$release" --target all --stages 34%,100% --soak 3s \
    --max-failures 0% --device-timeout 5m --rate 600/min --id docker-test >"$work/create.out" \
    || { cat "$work/create.out" >&2; fail "campaign create failed"; }
  cat "$work/create.out"

  say "upkeep campaign watch docker-test (at most ${timeout_s} s)"
  local rc=0
  timeout "$timeout_s" "${compose[@]}" exec -T controller \
    upkeep campaign watch docker-test --interval 2 || rc=$?
  [ "$rc" = 0 ] || { ctl upkeep campaign show docker-test --devices >&2 || true; fail "campaign watch exited $rc (124 = timed out)"; }

  say "checking results"
  ctl upkeep campaign show docker-test --devices
  local show
  show=$(ctl upkeep campaign show docker-test --devices --json)
  [ "$(json_get 'd["state"]' <<<"$show")" = completed ] || fail "campaign is not completed"
  [ "$(json_get 'd["stage_count"]' <<<"$show")" = 2 ] || fail "campaign does not have 2 stages"
  [ "$(json_get 'len(d["device_list"])' <<<"$show")" = "$agents" ] || fail "campaign did not cover $agents devices"
  [ "$(json_get 'sum(1 for x in d["device_list"] if x["state"] != "succeeded")' <<<"$show")" = 0 ] \
    || fail "not every device succeeded"
  # Staged: every stage-1 device finished before any stage-2 device started.
  [ "$(json_get 'int(max(x["done_ms"] for x in d["device_list"] if x["stage"] == 1) <= min([x["assigned_ms"] for x in d["device_list"] if x["stage"] == 2] or [float("inf")]))' <<<"$show")" = 1 ] \
    || fail "stage 2 started before stage 1 was done"
  local devs
  devs=$(ctl upkeep devices list --json)
  [ "$(json_get 'sum(1 for x in d if x["version"] == "2.0.0" and x["status"] == "committed")' <<<"$devs")" = "$agents" ] \
    || fail "the controller does not see $agents devices committed on 2.0.0"
  local id got
  for id in $("${compose[@]}" ps -q agent); do
    got=$(docker exec "$id" sha256sum /var/lib/upkeep/app/firmware.bin | cut -d' ' -f1)
    [ "$got" = "$sha" ] || fail "agent container ${id:0:12} runs firmware $got, not $sha"
  done
  echo "all $agents agents run fw 2.0.0 (sha256 $sha)"
  ctl upkeep devices list
}
