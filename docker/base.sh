#!/usr/bin/env bash
# Usage: docker/base.sh
# Makes the base image the Dockerfile builds FROM, when the engine does not have it yet:
# Debian 12 (bookworm, minbase) with python3 and fuse3, made with debootstrap and brought in
# with `docker import` (no container registry is needed). The root filesystem is cached as
# .cache/docker/base-<key>.tar, <key> a hash of this script, so a second build is seconds.
# Prints the image's name: pkgfs-base:<key>. Needs root, debootstrap (installed with
# apt-get when missing) and a Debian mirror ($DEBIAN_MIRROR, default deb.debian.org).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
key=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)
image=pkgfs-base:$key
if docker image inspect "$image" >/dev/null 2>&1; then
    echo "$image"
    exit 0
fi
cache=$here/../.cache/docker
tarball=$cache/base-$key.tar
if [[ ! -f $tarball ]]; then
    if ! command -v debootstrap >/dev/null; then
        echo "base: installing debootstrap with apt-get" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            debootstrap >/dev/null
    fi
    mkdir -p "$cache"
    root=$(mktemp -d "$cache/base-root.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    echo "base: debootstrap of Debian 12 with python3 and fuse3 (a minute or two)" >&2
    debootstrap --variant=minbase --include=python3,fuse3 bookworm "$root" \
        "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$cache/base-$key.log" 2>&1 || {
        echo "base: debootstrap failed: see $cache/base-$key.log" >&2
        exit 1
    }
    # What an image does not need: apt's lists and caches, documentation, locales.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
        "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
    tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
fi
docker import --change 'CMD ["/bin/bash"]' "$tarball" "$image" >/dev/null
echo "$image"
