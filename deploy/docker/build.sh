#!/usr/bin/env bash
# Build the CPU node image with podman and run `swarm --version` inside it.
#   bash deploy/docker/build.sh              # base python:3.11-slim-bookworm from a registry
#   bash deploy/docker/build.sh --local-base # no registry: a Debian bookworm base made here with
#                                            # debootstrap (Debian's python3 is 3.11, with its headers as in python:3.11-slim), then imported
# Where the PyTorch index is unreachable, TORCH_WHEELS=/dir with torch-2.13.0+cpu*.whl in it is
# mounted into the build and used instead. Needs root (debootstrap, rootful podman).
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${IMAGE:-capaswarm-node:cpu}
BASE=${BASE:-python:3.11-slim-bookworm}
TORCH_WHEELS=${TORCH_WHEELS:-}
WORK=${WORK:-/var/tmp/capaswarm-image}

# This machine's cgroups are hybrid (v1 + v2), which crun refuses; runc handles them. The
# default container rlimits exceed this machine's hard limits, so ask for modest ones.
PODMAN=(podman)
command -v runc >/dev/null 2>&1 && PODMAN+=(--runtime runc)
LIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

if [ "${1:-}" = "--local-base" ]; then
  BASE=localhost/capaswarm-base:bookworm
  if ! "${PODMAN[@]}" image exists "$BASE"; then
    rm -rf "$WORK/rootfs" && mkdir -p "$WORK"
    debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3.11-dev,python3-distutils,python3-pip-whl,python3-setuptools-whl,ca-certificates \
      bookworm "$WORK/rootfs" http://deb.debian.org/debian
    tar -C "$WORK/rootfs" -c . | "${PODMAN[@]}" import - "$BASE"
    rm -rf "$WORK/rootfs"
  fi
fi

# docker format: the OCI format ignores SHELL (the Dockerfile's pipefail)
ARGS=(--format docker --build-arg "BASE=$BASE" -f deploy/docker/Dockerfile.node -t "$IMAGE" --network host)
# behind a TLS-inspecting proxy, pip inside the build needs this machine's CA bundle and pip.conf
if [ -f /etc/pip.conf ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  ARGS+=(-v /etc/pip.conf:/etc/pip.conf:ro -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi
if [ -n "$TORCH_WHEELS" ]; then
  ARGS+=(-v "$TORCH_WHEELS:/wheels:ro" --build-arg TORCH_FIND_LINKS=/wheels
         --build-arg TORCH_VERSION=2.13.0+cpu --build-arg TORCH_INDEX=https://pypi.org/simple)
fi
"${PODMAN[@]}" build "${LIMITS[@]}" "${ARGS[@]}" .
"${PODMAN[@]}" run --rm --network none "${LIMITS[@]}" "$IMAGE" --version
