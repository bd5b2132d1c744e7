#!/usr/bin/env bash
# `make images`: build the study image and the MLflow image with docker where a Docker engine runs,
# else with podman. Where no registry can be pulled from, both are built FROM a local Debian
# bookworm + Python 3.11 base (docker/local/base.Containerfile over a debootstrap import) and torch
# comes from the host's own package sources; the Dockerfiles are the same either way.
#
# Variables: ENGINE (docker|podman), LOCAL_BASE (1: always the local base, 0: never),
# DEBIAN_MIRROR (default: the one apt uses here), TORCH_INDEX_URL (local base only).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=docker/local/debian_mirror.sh
source docker/local/debian_mirror.sh

STUDY_IMAGE=taugate-study:0.1.0-ray2.60.0
MLFLOW_IMAGE=taugate-mlflow:3.17.2
DEBIAN_IMAGE=localhost/taugate-debian:bookworm
BASE_IMAGE=localhost/taugate-base:bookworm-py3.11

if [ -z "${ENGINE:-}" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=podman; fi
fi
options=()
if [ "$ENGINE" = podman ]; then
    # crun and podman's default ulimits fail on hosts like the test machine (see containers.conf);
    # --format docker keeps the Dockerfiles' SHELL (pipefail), which the OCI format drops.
    export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/docker/local/containers.conf}"
    options+=(--format docker)
fi

# The official bases when a registry answers, else the local one.
if [ -z "${LOCAL_BASE:-}" ]; then
    if "$ENGINE" pull -q python:3.11-slim-bookworm >/dev/null 2>&1; then LOCAL_BASE=0; else LOCAL_BASE=1; fi
fi
study_args=() mlflow_args=()
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
if [ "$LOCAL_BASE" = 1 ]; then
    if ! "$ENGINE" image inspect "$DEBIAN_IMAGE" >/dev/null 2>&1; then
        mirror="${DEBIAN_MIRROR:-$(debian_mirror)}"
        root="$scratch/rootfs"
        echo "debootstrap bookworm from ${mirror:-http://deb.debian.org/debian}"
        time debootstrap --variant=minbase bookworm "$root" "${mirror:-http://deb.debian.org/debian}" >/dev/null
        rm -f "$root"/var/cache/apt/archives/*.deb
        tar -C "$root" -c . | "$ENGINE" import --change 'CMD ["/bin/bash"]' - "$DEBIAN_IMAGE" >/dev/null
        rm -rf "$root"
    fi
    # Package access through the host's network (apt) and pip configuration (build time only).
    options+=(--network host)
    echo "== base $BASE_IMAGE"
    time "$ENGINE" build "${options[@]}" -f docker/local/base.Containerfile -t "$BASE_IMAGE" docker/local
    read -r -a pip_options <<<"$(python3 docker/local/pip_mounts.py "$scratch")"
    options+=("${pip_options[@]}")
    study_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE"
                --build-arg "TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://pypi.org/simple}")
    mlflow_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi

# --ignorefile: older podman reads only .dockerignore, not <Dockerfile>.dockerignore as BuildKit does.
ignore() { if [ "$ENGINE" = podman ]; then echo --ignorefile "$1"; fi; }
echo "== $STUDY_IMAGE"
# shellcheck disable=SC2046
time "$ENGINE" build "${options[@]}" "${study_args[@]}" $(ignore docker/Dockerfile.dockerignore) \
    -f docker/Dockerfile -t "$STUDY_IMAGE" .
echo "== $MLFLOW_IMAGE"
# shellcheck disable=SC2046
time "$ENGINE" build "${options[@]}" "${mlflow_args[@]}" $(ignore docker/mlflow.Dockerfile.dockerignore) \
    -f docker/mlflow.Dockerfile -t "$MLFLOW_IMAGE" docker
"$ENGINE" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'taugate-(study|mlflow|base)' || true
