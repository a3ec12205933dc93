#!/usr/bin/env bash
# A Debian bookworm base image made from Debian's own packages (debootstrap + docker import), for machines that
# cannot pull from Docker Hub: the project image builds on it (--build-arg BASE_IMAGE=observer-base:bookworm) and
# so does the PostgreSQL image. Needs root (debootstrap), Docker, and Debian's package mirror.
#   bash deploy/docker/base-image.sh [TAG]        (default observer-base:bookworm; kept if it already exists)
set -euo pipefail
tag="${1:-observer-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag: present"
    exit 0
fi
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
# minbase: dpkg, apt and the essential set; python3 + venv for the project image, CA certificates for pip's TLS,
# tzdata for Asia/Seoul
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,tzdata bookworm "$root" "$mirror" \
    >/tmp/observer-debootstrap.log 2>&1 || { tail -20 /tmp/observer-debootstrap.log; exit 1; }
echo "deb $mirror bookworm main" > "$root/etc/apt/sources.list"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "base image $tag: built from Debian's packages ($(docker image inspect -f '{{.Size}}' "$tag") bytes)"
