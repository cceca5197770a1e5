#!/usr/bin/env bash
# Build (and push) datawheel's two images, named by the one setting manifests/base/images.env:
#   DATAWHEEL_IMAGE        <- docker/Dockerfile        (CPU: components + `datawheel serve`)
#   DATAWHEEL_TRAIN_IMAGE  <- docker/Dockerfile.train  (CUDA: the train component)
# DATAWHEEL_IMAGE / DATAWHEEL_TRAIN_IMAGE in the environment override the file, as they do for
# `datawheel compile`. The build context is the repository root (see .dockerignore).
#
# REGISTRY=host[:port]/path moves both images into a registry you own (same names and tags) and
# writes them back to images.env, pinned by the pushed digests (NAME:TAG@sha256:...), so the
# manifests, the compiled pipeline and datawheel.deploy.images all use exactly what was pushed.
#
# usage: [REGISTRY=...] docker/build.sh [--no-push]
# exit status: 0 built (and pushed); 1 bad usage or setting; 2 no Docker engine reachable.
set -euo pipefail

usage="usage: docker/build.sh [--no-push]"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
settings="$root/manifests/base/images.env"

fail() { # fail STATUS PROBLEM FIX
    printf 'error: %s. Fix: %s.\n' "$2" "$3" >&2
    exit "$1"
}

push=1
for arg in "$@"; do
    case "$arg" in
        --no-push) push=0 ;;
        -h | --help)
            echo "$usage"
            exit 0
            ;;
        *) fail 1 "unknown argument '$arg'" "$usage" ;;
    esac
done

# Read the setting as data (never `source` it): NAME=VALUE lines, # comments.
[[ -f "$settings" ]] || fail 1 "$settings is missing" "restore manifests/base/images.env"
file_cpu="" file_train=""
while IFS= read -r line || [[ -n "$line" ]]; do
    case "$line" in
        "" | \#*) ;;
        DATAWHEEL_IMAGE=*) file_cpu="${line#*=}" ;;
        DATAWHEEL_TRAIN_IMAGE=*) file_train="${line#*=}" ;;
    esac
done <"$settings"
cpu_image="${DATAWHEEL_IMAGE:-$file_cpu}"
train_image="${DATAWHEEL_TRAIN_IMAGE:-$file_train}"
[[ -n "$cpu_image" && -n "$train_image" ]] ||
    fail 1 "$settings must set DATAWHEEL_IMAGE and DATAWHEEL_TRAIN_IMAGE" \
        "add one NAME=IMAGE:TAG line for each"

registry="${REGISTRY:-}"
if [[ -n "$registry" ]]; then
    cpu_image="${registry%/}/$(basename "${cpu_image%@*}")"
    train_image="${registry%/}/$(basename "${train_image%@*}")"
fi

command -v docker >/dev/null 2>&1 ||
    fail 2 "no docker command on PATH" "install the Docker CLI and engine, then run docker/build.sh again"
docker info >/dev/null 2>&1 ||
    fail 2 "no Docker engine is reachable (\`docker info\` failed; DOCKER_HOST=${DOCKER_HOST:-unset})" \
        "start the Docker engine or point DOCKER_HOST (or \`docker context use\`) at a running one, then run docker/build.sh again"

# pinned IMAGE: IMAGE@sha256:... as the registry stored it (the digest of its push).
pinned() {
    local repo="${1%:*}" digest
    [[ "${1##*/}" == *:* ]] || repo="$1"
    digest="$(docker inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$1" |
        grep -m1 -F "$repo@sha256:")" ||
        fail 1 "docker reports no pushed digest for $1" "push it (drop NO_PUSH) and run again"
    printf '%s@%s\n' "$1" "${digest#*@}"
}

cd "$root"
docker build -f docker/Dockerfile -t "$cpu_image" .
docker build -f docker/Dockerfile.train -t "$train_image" .
if ((push)); then
    docker push "$cpu_image"
    docker push "$train_image"
    echo "built and pushed: $cpu_image $train_image"
    if [[ -n "$registry" ]]; then
        cpu_image="$(pinned "$cpu_image")"
        train_image="$(pinned "$train_image")"
    fi
else
    echo "built (not pushed): $cpu_image $train_image"
fi
if [[ -n "$registry" ]]; then
    printf 'DATAWHEEL_IMAGE=%s\nDATAWHEEL_TRAIN_IMAGE=%s\n' "$cpu_image" "$train_image" >"$settings"
    echo "wrote $settings: $cpu_image $train_image"
fi
