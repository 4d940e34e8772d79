#!/usr/bin/env bash
# Build the Debian 12 systemd image the Molecule scenarios and the sandbox run on.
# No container registry is reachable here, so the base comes from debootstrap.
# Re-uses an existing image; FLASKSTACK_REBUILD_IMAGE=1 forces a rebuild.
# Users with a registry can skip this and set MOLECULE_IMAGE to a systemd image.
set -euo pipefail

image="${MOLECULE_IMAGE:-flaskstack/debian12-systemd:latest}"
base_image="flaskstack/debian12-base:latest"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
here="$(cd "$(dirname "$0")" && pwd)"

if [ "${FLASKSTACK_REBUILD_IMAGE:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "image $image present"
    exit 0
fi

if ! docker image inspect "$base_image" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null 2>&1 || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    rootfs="$(mktemp -d)"
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase \
        --include=python3,python3-apt,systemd,systemd-sysv,dbus,ca-certificates,procps,iproute2,curl,sudo \
        bookworm "$rootfs" "$mirror" >/dev/null
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import - "$base_image" >/dev/null
fi

context="$(mktemp -d)"
cp "$here/test-image/Dockerfile" "$context/"
# Containers reach PyPI only when they trust the host's CA bundle. It goes
# into the test image, never into the roles.
cp /etc/ssl/certs/ca-certificates.crt "$context/host-ca-bundle.crt"
docker build -q -t "$image" --build-arg BASE_IMAGE="$base_image" "$context" >/dev/null
rm -rf "$context"
echo "image $image built"
