#!/usr/bin/env bash
# Build (and with --push, push) one Docker image per ambientgen stage.
#
#   scripts/build_images.sh REGISTRY VERSION [--push] [--dry-run]
#   scripts/build_images.sh docker.io/ambientgen 0.1.0            # what `make images` runs
#   scripts/build_images.sh ghcr.io/me 0.1.0 --push               # what `make push-images REGISTRY=ghcr.io/me` runs
#   STAGES="train generate" scripts/build_images.sh ghcr.io/me 0.1.0
#
# Order: ambientgen/base:VERSION (CPU torch) and ambientgen/base-cuda:VERSION (CUDA torch) from
# images/base/Dockerfile with the repository root as context, then every other images/<stage>/Dockerfile with
# its own folder as context, FROM one of those bases. Each stage image is tagged ambientgen/<stage>:VERSION
# (the name in pipelines/*.json) and REGISTRY/<stage>:VERSION; --push pushes the REGISTRY tags of the stages
# (the bases are only build inputs). Deploy with `ambientgen cluster deploy --registry REGISTRY` when REGISTRY
# is not docker.io/ambientgen.
#
# Environment: DOCKER (default docker; podman and buildah work), PLATFORM (e.g. linux/amd64, the GPU nodes'
# platform), STAGES (space-separated subset), CPU_TORCH_INDEX_URL, CUDA_TORCH_INDEX_URL (default: PyPI's CUDA
# build), TORCH_WHEELS (a folder holding the CPU torch wheel: the CPU base takes torch from there, not from an
# index), PYTHON_IMAGE (the bases' Python image, default python:3.11.13-slim-bookworm), BUILD_OPTS (more options
# for every build, e.g. "-v /etc/ssl/certs:/etc/ssl/certs:ro --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt"),
# NO_CUDA=1 (skip the CUDA base and the stages built on it),
# MAESTRO_CHECKPOINT_SHA256 (needed to build images/transcribe-onsets-frames; skipped without it).
set -euo pipefail

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
registry=${1%/}
version=$2
shift 2
push=0 dry_run=0
for arg in "$@"; do
  case $arg in
    --push) push=1 ;;
    --dry-run) dry_run=1 ;;
    -h|--help) usage ;;
    *) echo "build_images.sh: unknown option $arg" >&2; usage ;;
  esac
done
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+([.+-][0-9A-Za-z.]+)?$ ]] \
  || { echo "build_images.sh: '$version' is not a version like 0.1.0" >&2; exit 2; }
[ -n "$registry" ] || { echo "build_images.sh: empty REGISTRY" >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)
docker=${DOCKER:-docker}
cpu_index=${CPU_TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
cuda_index=${CUDA_TORCH_INDEX_URL:-}
platform_args=()
[ -n "${PLATFORM:-}" ] && platform_args=(--platform "$PLATFORM")
read -r -a build_opts <<< "${BUILD_OPTS:-}"
[ -n "${PYTHON_IMAGE:-}" ] && build_opts+=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")
export DOCKER_BUILDKIT=1  # per-Dockerfile .dockerignore files need BuildKit

run() {
  echo "+ $*"
  [ "$dry_run" -eq 1 ] || "$@"
}

if [ "$dry_run" -eq 0 ] && ! command -v "$docker" > /dev/null; then
  echo "build_images.sh: '$docker' not found: install Docker (or set DOCKER=podman)" >&2
  exit 1
fi

# build DOCKERFILE CONTEXT ARGS...: one image. Docker's BuildKit reads DOCKERFILE.dockerignore by itself;
# buildah and podman are told.
build() {
  local dockerfile=$1 context=$2
  shift 2
  local ignore=()
  if [ "$(basename "$docker")" != docker ] && [ -f "$dockerfile.dockerignore" ]; then
    ignore=(--ignorefile "$dockerfile.dockerignore")
  fi
  run "$docker" build "${platform_args[@]}" "${build_opts[@]}" "${ignore[@]}" -f "$dockerfile" "$@" "$context"
}

# the shared bases; images/base/wheels/ is always copied, holding the CPU torch wheel only when TORCH_WHEELS says
wheels="$root/images/base/wheels"
rm -f "$wheels"/*.whl
cpu_torch=(--build-arg "TORCH_INDEX_URL=$cpu_index")
if [ -n "${TORCH_WHEELS:-}" ]; then
  torch_pin=$(grep -E '^torch==' "$root/requirements.txt" | cut -d= -f3)
  found=$(find "$TORCH_WHEELS" -maxdepth 1 -name "torch-${torch_pin}*.whl" | head -n 1)
  [ -n "$found" ] || { echo "build_images.sh: no torch-${torch_pin} wheel in $TORCH_WHEELS" >&2; exit 1; }
  cp "$found" "$wheels/"
  cpu_torch=(--build-arg "TORCH_FIND_LINKS=/wheels")
fi
build "$root/images/base/Dockerfile" "$root" "${cpu_torch[@]}" --build-arg "VERSION=$version" \
  -t "ambientgen/base:$version"
if [ "${NO_CUDA:-0}" != 1 ]; then
  build "$root/images/base/Dockerfile" "$root" --build-arg "TORCH_INDEX_URL=$cuda_index" \
    --build-arg "VERSION=$version" -t "ambientgen/base-cuda:$version"
fi
rm -f "$wheels"/*.whl

# the stages
built=()
for dockerfile in "$root"/images/*/Dockerfile; do
  dir=$(dirname "$dockerfile")
  stage=$(basename "$dir")
  [ "$stage" = base ] && continue
  if [ -n "${STAGES:-}" ] && [[ " $STAGES " != *" $stage "* ]]; then
    continue
  fi
  extra=()
  if [ "${NO_CUDA:-0}" = 1 ] && grep -q '^FROM ambientgen/base-cuda' "$dockerfile"; then
    echo "build_images.sh: skipping $stage (NO_CUDA=1)" >&2
    continue
  fi
  if [ "$stage" = transcribe-onsets-frames ]; then
    if [ -z "${MAESTRO_CHECKPOINT_SHA256:-}" ]; then
      echo "build_images.sh: skipping $stage (set MAESTRO_CHECKPOINT_SHA256 to build it)" >&2
      continue
    fi
    extra=(--build-arg "MAESTRO_CHECKPOINT_SHA256=$MAESTRO_CHECKPOINT_SHA256")
  fi
  build "$dockerfile" "$dir" --build-arg "VERSION=$version" "${extra[@]}" \
    -t "ambientgen/$stage:$version" -t "$registry/$stage:$version"
  built+=("$stage")
done

if [ "$push" -eq 1 ]; then
  for stage in "${built[@]}"; do
    run "$docker" push "$registry/$stage:$version"
  done
fi
echo "built: ${built[*]}" >&2
