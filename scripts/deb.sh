#!/usr/bin/env bash
# `make deb`: the Debian packages upkeep-agent, upkeep-broker-plugin and
# upkeep, built by dpkg-buildpackage (debhelper, debian/) from a copy of the
# working tree (tracked and untracked, not ignored files) in DEB_OUT
# (default build-deb/), then checked with lintian (errors fail the build).
# Installs debhelper and lintian through scripts/deps.sh deb, and the
# Build-Depends of debian/control with apt-get build-dep when any is missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${DEB_OUT:-$root/build-deb}"
bash "$root/scripts/deps.sh" deb
rm -rf "$out"
mkdir -p "$out/upkeep"
(cd "$root" && git ls-files -co --exclude-standard -z | xargs -0 -I{} sh -c '[ -e "{}" ] && printf "%s\0" "{}"' \
  | tar --null -T - -cf -) | tar -xf - -C "$out/upkeep"
cd "$out/upkeep"
# The Build-Depends of debian/control, when any is missing.
if ! dpkg-checkbuilddeps >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "deb: installing the build dependencies of debian/control"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get build-dep -y -qq . >/dev/null
fi
nice -n 10 dpkg-buildpackage -us -uc -b -j"${JOBS:-2}" >"$out/build.log" 2>&1 \
  || { tail -n 60 "$out/build.log" >&2; echo "deb: dpkg-buildpackage failed ($out/build.log)" >&2; exit 1; }
cd "$out"
ls -l ./*.deb
# lintian: errors fail; warnings are printed.
lintian --fail-on error --suppress-tags bad-distribution-in-changes-file ./*.changes | tee lintian.txt
echo "deb: $(ls ./*.deb | wc -l) packages in $out, lintian has no errors"
