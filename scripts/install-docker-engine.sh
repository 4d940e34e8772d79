#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine (Debian, root).
# CI machines have only the docker client and no systemd, so install Debian's
# docker.io when dockerd is missing and start it in the background ourselves.
# A dockerd started in the background here forwards the published ports in the kernel
# (--userland-proxy=false) instead of through one docker-proxy process per port: the tests'
# pollers open a connection per request, and that process spent about 0.14 CPU-seconds per
# second of polling (measured: /healthz at 50 requests/s through HAProxy's published port,
# 10.5 against 6.2 CPU-s in 30 s), CPU the two scenarios running side by side on two cores
# share. An engine already running or started by systemd is left as it is configured.
set -euo pipefail

if docker info >/dev/null 2>&1; then
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io >/dev/null
fi
if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
    systemctl start docker
else
    mkdir -p /var/log
    nohup dockerd --userland-proxy=false >/var/log/dockerd.log 2>&1 &
fi
for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        exit 0
    fi
    sleep 1
done
echo "dockerd did not answer within 60 s; see /var/log/dockerd.log" >&2
exit 1
