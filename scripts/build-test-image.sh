#!/usr/bin/env bash
# Build the systemd images the Molecule scenarios, the sandbox and the benchmark run on:
# flaskstack/debian13-systemd (trixie, the current stable) and flaskstack/debian12-systemd
# (bookworm), and on each an SSH variant, flaskstack/<release>-ssh, for the real-servers test,
# and a stack variant, flaskstack/<release>-stack, with the stacks' Debian packages and uv
# installed (Dockerfile.stack), where most Molecule scenarios run.
# No container registry is reachable here, so each base comes from debootstrap, with
# debootstrap's own default mirror (set DEBIAN_MIRROR to use yours).
# Usage: build-test-image.sh [RELEASE...] (default: both). Re-uses an image built from the same
# Dockerfiles and CA bundle (a label records their digest); FLASKSTACK_REBUILD_IMAGE=1 forces a rebuild. With a registry of your own, skip this and
# point MOLECULE_IMAGE at a systemd image.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# The uv that flask_app installs goes into the stack image, where flask_app looks for it.
uv_package="$(sed -n 's/^flask_app_uv_package: *//p' "$here/../roles/flask_app/defaults/main.yml")"
recipe="$( (cat "$here/test-image/Dockerfile" "$here/test-image/Dockerfile.ssh" "$here/test-image/Dockerfile.stack" \
    "$here/test-image/ansible_bytecode_cache.py" /etc/ssl/certs/ca-certificates.crt; echo "$uv_package") | sha256sum | cut -c1-16)"
declare -A codename=([debian13]=trixie [debian12]=bookworm)

recipe_of() {
    docker image inspect --format '{{ index .Config.Labels "flaskstack.recipe" }}' "$1" 2>/dev/null || true
}

build() {
    local release="$1" image="flaskstack/$1-systemd:latest" ssh_image="flaskstack/$1-ssh:latest"
    local stack_image="flaskstack/$1-stack:latest" base_image="flaskstack/$1-base:latest"
    [ -n "${codename[$release]:-}" ] || { echo "unknown release $release (debian12 or debian13)" >&2; return 2; }
    if [ "${FLASKSTACK_REBUILD_IMAGE:-0}" != 1 ] && [ "$(recipe_of "$image")" = "$recipe" ] \
        && [ "$(recipe_of "$ssh_image")" = "$recipe" ] && [ "$(recipe_of "$stack_image")" = "$recipe" ]; then
        echo "images $image, $ssh_image and $stack_image present"
        return 0
    fi
    if ! docker image inspect "$base_image" >/dev/null 2>&1; then
        local rootfs
        rootfs="$(mktemp -d)"
        scratch+=("$rootfs")
        # shellcheck disable=SC2086 # DEBIAN_MIRROR is one optional word
        debootstrap --variant=minbase \
            --include=python3,python3-apt,systemd,systemd-sysv,dbus,ca-certificates,procps,iproute2,curl,sudo \
            "${codename[$release]}" "$rootfs" ${DEBIAN_MIRROR:-} >/dev/null
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -c . | docker import - "$base_image" >/dev/null
    fi
    local context
    context="$(mktemp -d)"
    scratch+=("$context")
    cp "$here/test-image/Dockerfile" "$here/test-image/ansible_bytecode_cache.py" "$context/"
    # Containers reach PyPI only when they trust the host's CA bundle. It goes
    # into the test image, never into the roles.
    cp /etc/ssl/certs/ca-certificates.crt "$context/host-ca-bundle.crt"
    cp "$here/test-image/Dockerfile.ssh" "$here/test-image/Dockerfile.stack" "$context/"
    docker build -q -t "$image" --build-arg BASE_IMAGE="$base_image" --label flaskstack.recipe="$recipe" "$context" >/dev/null
    docker build -q -t "$ssh_image" -f "$context/Dockerfile.ssh" --build-arg BASE_IMAGE="$image" \
        --label flaskstack.recipe="$recipe" "$context" >/dev/null
    docker build -q -t "$stack_image" -f "$context/Dockerfile.stack" --build-arg BASE_IMAGE="$image" \
        --build-arg UV_PACKAGE="$uv_package" --label flaskstack.recipe="$recipe" "$context" >/dev/null
    echo "images $image, $ssh_image and $stack_image built"
}

releases=("$@")
[ ${#releases[@]} -gt 0 ] || releases=(debian13 debian12)
# Installed once, before the builds start side by side: two apt-get runs would race for its lock.
for release in "${releases[@]}"; do
    if ! docker image inspect "flaskstack/$release-base:latest" >/dev/null 2>&1 && ! command -v debootstrap >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
done
# The releases build side by side: each build is mostly one dpkg or one download at a time, so
# two of them use the machine's cores and network better than one after the other.
builds=()
for release in "${releases[@]}"; do
    # A subshell does not run the parent's EXIT trap: each removes its own scratch directories.
    ( scratch=(); trap 'rm -rf "${scratch[@]}"' EXIT; build "$release" ) &
    builds+=("$!")
done
failed=0
for pid in "${builds[@]}"; do
    wait "$pid" || failed=1
done
exit "$failed"
