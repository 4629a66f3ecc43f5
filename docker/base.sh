#!/usr/bin/env bash
# Makes the base image debian:bookworm-slim locally when it is absent and no
# image registry can be reached: debootstrap --variant=minbase bookworm into a
# temp dir, then `docker import`. Idempotent; an existing image is kept.
# Usage: docker/base.sh [image-tag]   (needs root, debootstrap and a daemon)
set -euo pipefail

tag="${1:-debian:bookworm-slim}"
mirror="${UPKEEP_DEBIAN_MIRROR:-}" # empty: debootstrap's default mirror

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base: $tag present"
  exit 0
fi
if [ "${UPKEEP_TRY_PULL:-1}" = 1 ] && timeout 60 docker pull -q "$tag" >/dev/null 2>&1; then
  echo "base: pulled $tag"
  exit 0
fi

root="$(mktemp -d /tmp/upkeep-base.XXXXXX)"
cleanup() { rm -rf --one-file-system "$root"; }
trap cleanup EXIT

echo "base: no $tag to pull; making it with debootstrap (a few minutes)"
args=(--variant=minbase bookworm "$root/rootfs")
[ -n "$mirror" ] && args+=("$mirror")
if ! nice -n 15 debootstrap "${args[@]}" >"$root/debootstrap.log" 2>&1; then
  tail -n 30 "$root/debootstrap.log" >&2
  echo "base: debootstrap failed (log above)" >&2
  exit 1
fi

# Slim it the way the official -slim image is: no apt lists, docs or caches.
r="$root/rootfs"
rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb \
  "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/var/log/*.log \
  "$r"/tmp/* "$r"/root/.bash_history
# Keep apt from installing docs and recommends in images built on it.
cat >"$r/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
CFG
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
  >"$r/etc/apt/apt.conf.d/docker-no-recommends"
# And to drop downloaded .debs and package caches after every install.
cat >"$r/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG

tar --numeric-owner -C "$r" -c . |
  docker import -c 'CMD ["bash"]' -c 'ENV LANG=C.UTF-8' - "$tag" >/dev/null
echo "base: imported $tag ($(docker image inspect -f '{{.Size}}' "$tag") bytes)"
