#!/usr/bin/env bash
# Fetches and unpacks Debian's own source package of cJSON (the version of
# the installed libcjson-dev) into DIR, for a static agent
# (-DUPK_STATIC=ON -DUPK_CJSON_SOURCE_DIR=DIR): Debian's libcjson-dev ships
# only the shared library. Nothing is written into the source tree or the
# system's apt state: a private deb-src list over the mirrors the system
# already uses, and apt-get's ordinary `source` command.
# Usage: scripts/cjson-source.sh DIR     (prints DIR/<cjson-x.y.z> on stdout)
set -euo pipefail
out="${1:?usage: cjson-source.sh DIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
existing=$(find "$out" -maxdepth 2 -name cJSON.c -printf '%h\n' 2>/dev/null | head -n 1)
if [ -n "$existing" ]; then
  echo "$existing"
  exit 0
fi
ver=$(dpkg-query -W -f='${source:Version}\n' libcjson-dev 2>/dev/null | head -n 1 || true)
state="$out/.apt"
mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' | sort -u \
  | while read -r uri rel; do echo "deb-src $uri $rel main"; done >"$state/sources.list"
[ -s "$state/sources.list" ] || { echo "cjson-source: no apt source configured" >&2; exit 1; }
opts=(-o "Dir::Etc::SourceList=$state/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache" -o "Debug::NoLocking=1")
apt-get "${opts[@]}" -qq update >&2
cd "$out"
if [ -n "$ver" ]; then
  apt-get "${opts[@]}" -qq source "cjson=$ver" >&2 || apt-get "${opts[@]}" -qq source cjson >&2
else
  apt-get "${opts[@]}" -qq source cjson >&2
fi
rm -rf "$state"
find "$out" -maxdepth 2 -name cJSON.c -printf '%h\n' | head -n 1
