#!/usr/bin/env bash
# `make docker-test`: end-to-end test of the docker-compose fleet. Installs
# docker.io, docker-compose and debootstrap when missing, starts dockerd when
# none runs (and stops only that one at the end), makes debian:bookworm-slim
# locally when no registry can be reached, builds the three images, brings up
# a broker, a controller and $UPKEEP_TEST_AGENTS agents on a free loopback
# port, runs a staged campaign to completion, checks every device ran it, and
# tears everything down: containers and volumes always; the images it built
# are retagged upkeep-{build,broker,controller,agent}:cache so that the next
# run reuses their layers (the apt layers above all), and the previous cache
# generation is pruned. The base image stays too. Nothing keeps running.
# Env: UPKEEP_TEST_AGENTS (default 3), UPKEEP_TEST_TIMEOUT (seconds for the
# campaign, default 300), UPKEEP_DOCKER_KEEP_IMAGES=1 keeps the images under
# this run's tag as well, UPKEEP_DOCKER_CACHE=0 removes every image it built
# (the next run then starts cold, except for the base image).
set -euo pipefail
started=$SECONDS

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
agents="${UPKEEP_TEST_AGENTS:-3}"
timeout_s="${UPKEEP_TEST_TIMEOUT:-300}"
project="upkeeptest$$"
tag="test$$"
work="$(mktemp -d /tmp/upkeep-docker-test.XXXXXX)"
dockerd_pid=""
compose=()
up=0
status=1

say() { printf '\n=== docker-test %s: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
fail() {
  printf 'docker-test: FAIL: %s\n' "$*" >&2
  exit 1
}

# ---- 1. packages -----------------------------------------------------------
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ "${#need[@]}" -gt 0 ]; then
  say "installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  compose=(docker compose)
fi

cleanup() {
  local rc=$?
  if [ "$up" = 1 ]; then
    if [ "$status" != 0 ]; then
      say "logs of the failed run (last 60 lines per service)"
      "${compose[@]}" logs --no-color --tail=60 2>&1 | tail -n 400 || true
    fi
    say "tearing down"
    "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  if [ -n "$tag" ] && docker info >/dev/null 2>&1; then
    local img
    for img in build broker controller agent; do
      docker image inspect "upkeep-$img:$tag" >/dev/null 2>&1 || continue
      if [ "${UPKEEP_DOCKER_CACHE:-1}" = 1 ]; then
        docker tag "upkeep-$img:$tag" "upkeep-$img:cache" >/dev/null 2>&1 || true
      else
        docker image rm -f "upkeep-$img:cache" >/dev/null 2>&1 || true
      fi
      [ "${UPKEEP_DOCKER_KEEP_IMAGES:-0}" = 1 ] || docker image rm "upkeep-$img:$tag" >/dev/null 2>&1 || true
    done
    # Untagged images of docker/Dockerfile (the previous :cache generation,
    # the layers of a failed build) carry the label upkeep.fleet; tagged ones
    # (this run's cache, images of a run going on beside this one) stay.
    docker image prune -f --filter label=upkeep.fleet >/dev/null 2>&1 || true
    docker image ls --filter label=upkeep.fleet --format '{{.Repository}}:{{.Tag}} {{.Size}}' 2>/dev/null \
      | sed 's/^/kept image: /' || true
  fi
  if [ -n "$dockerd_pid" ]; then
    say "stopping the dockerd this test started (pid $dockerd_pid)"
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 1 30); do
      kill -0 "$dockerd_pid" 2>/dev/null || break
      sleep 1
    done
  fi
  rm -rf "$work"
  if [ "$rc" = 0 ] && [ "$status" = 0 ]; then
    echo "docker-test: PASS in $((SECONDS - started)) s"
  else
    echo "docker-test: FAIL (exit $rc) after $((SECONDS - started)) s" >&2
  fi
}
trap cleanup EXIT

# ---- 2. the daemon ---------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  say "starting dockerd (host networking only: --bridge=none)"
  [ "$(id -u)" -eq 0 ] || fail "dockerd is not running and starting it needs root"
  nice -n 15 dockerd --iptables=false --bridge=none >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || { cat "$work/dockerd.log" >&2; fail "dockerd exited"; }
    sleep 1
  done
  docker info >/dev/null 2>&1 || { tail -n 30 "$work/dockerd.log" >&2; fail "dockerd did not answer in 60 s"; }
fi

# ---- 3. base image and images ----------------------------------------------
say "base image"
root_cmd=()
[ "$(id -u)" -eq 0 ] || root_cmd=(sudo) # debootstrap needs root
nice -n 15 "${root_cmd[@]}" bash "$here/base.sh" debian:bookworm-slim

# A free loopback port for the broker, chosen now (nothing on the host is
# allowed to clash with it; the fleet uses host networking).
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export UPKEEP_PORT="$port" UPKEEP_TAG="$tag" COMPOSE_PROJECT_NAME="$project"
compose+=(-f "$here/docker-compose.yml" -p "$project")

say "building images (tag $tag; a few minutes cold, cached layers are reused)"
# The build stage first, under a tag of its own: the three targets reuse it,
# and the tag keeps its layers (the -dev packages' apt layer) for the next run.
t0=$SECONDS
DOCKER_BUILDKIT=0 nice -n 15 docker build --force-rm --network host -f "$here/Dockerfile" \
  --target build -t "upkeep-build:$tag" --build-arg BUILD_NICE=15 --build-arg BUILD_LABEL="$tag" \
  "$root" >"$work/build.log" 2>&1 \
  || { tail -n 60 "$work/build.log" >&2; fail "build stage failed"; }
rm_flag=()
[ "${compose[0]}" != docker-compose ] || rm_flag=(--force-rm) # Compose v1 only
DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0 nice -n 15 "${compose[@]}" build "${rm_flag[@]}" \
  --build-arg BUILD_NICE=15 --build-arg BUILD_LABEL="$tag" >>"$work/build.log" 2>&1 \
  || { tail -n 60 "$work/build.log" >&2; fail "image build failed"; }
echo "images built in $((SECONDS - t0)) s ($(grep -c 'Using cache' "$work/build.log") steps from the cache)"
for img in broker controller agent; do
  size=$(docker image inspect -f '{{.Size}}' "upkeep-$img:$tag") || fail "no image upkeep-$img:$tag"
  user=$(docker image inspect -f '{{.Config.User}}' "upkeep-$img:$tag")
  hc=$(docker image inspect -f '{{if .Config.Healthcheck}}yes{{end}}' "upkeep-$img:$tag")
  echo "upkeep-$img:$tag  $((size / 1048576)) MiB  user=$user  healthcheck=${hc:-no}"
  [ "$user" = upkeep ] || fail "upkeep-$img runs as '$user', not the non-root user upkeep"
  [ "$hc" = yes ] || fail "upkeep-$img has no health check"
done

# ---- 4. the fleet ----------------------------------------------------------
say "bringing up broker, controller and $agents agents on 127.0.0.1:$port"
up=1
"${compose[@]}" up -d --scale agent="$agents" >"$work/up.log" 2>&1 \
  || { cat "$work/up.log" >&2; fail "compose up failed"; }

# Every long-running container healthy, within a deadline.
healthy_count() {
  local n=0 id
  for id in $("${compose[@]}" ps -q broker controller agent 2>/dev/null); do
    [ "$(docker inspect -f '{{.State.Health.Status}}' "$id" 2>/dev/null)" = healthy ] && n=$((n + 1))
  done
  echo "$n"
}
want=$((agents + 2))
deadline=$((SECONDS + 180))
while [ "$(healthy_count)" -lt "$want" ]; do
  [ "$SECONDS" -lt "$deadline" ] || { "${compose[@]}" ps >&2; fail "only $(healthy_count)/$want containers healthy after 180 s"; }
  sleep 2
done
echo "all $want containers healthy"
[ "$(docker inspect -f '{{.State.ExitCode}}' "$("${compose[@]}" ps -q init)")" = 0 ] || fail "init did not exit 0"

# ---- 5. a staged campaign --------------------------------------------------
# shellcheck source=docker/campaign.sh
. "$here/campaign.sh"
run_campaign

status=0
