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
# (the bases are only build inputs). Deploy with `scripts/pach.py deploy --registry REGISTRY` when REGISTRY
# is not docker.io/ambientgen.
#
# Environment: DOCKER (default docker; podman works), PLATFORM (e.g. linux/amd64, the GPU nodes' platform),
# STAGES (space-separated subset), CPU_TORCH_INDEX_URL, CUDA_TORCH_INDEX_URL (default: PyPI's CUDA build),
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
export DOCKER_BUILDKIT=1  # per-Dockerfile .dockerignore files need BuildKit

run() {
  echo "+ $*"
  [ "$dry_run" -eq 1 ] || "$@"
}

if [ "$dry_run" -eq 0 ] && ! command -v "$docker" > /dev/null; then
  echo "build_images.sh: '$docker' not found: install Docker (or set DOCKER=podman)" >&2
  exit 1
fi

# the shared bases
run "$docker" build "${platform_args[@]}" -f "$root/images/base/Dockerfile" \
  --build-arg "TORCH_INDEX_URL=$cpu_index" --build-arg "VERSION=$version" \
  -t "ambientgen/base:$version" "$root"
run "$docker" build "${platform_args[@]}" -f "$root/images/base/Dockerfile" \
  --build-arg "TORCH_INDEX_URL=$cuda_index" --build-arg "VERSION=$version" \
  -t "ambientgen/base-cuda:$version" "$root"

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
  if [ "$stage" = transcribe-onsets-frames ]; then
    if [ -z "${MAESTRO_CHECKPOINT_SHA256:-}" ]; then
      echo "build_images.sh: skipping $stage (set MAESTRO_CHECKPOINT_SHA256 to build it)" >&2
      continue
    fi
    extra=(--build-arg "MAESTRO_CHECKPOINT_SHA256=$MAESTRO_CHECKPOINT_SHA256")
  fi
  run "$docker" build "${platform_args[@]}" -f "$dockerfile" --build-arg "VERSION=$version" "${extra[@]}" \
    -t "ambientgen/$stage:$version" -t "$registry/$stage:$version" "$dir"
  built+=("$stage")
done

if [ "$push" -eq 1 ]; then
  for stage in "${built[@]}"; do
    run "$docker" push "$registry/$stage:$version"
  done
fi
echo "built: ${built[*]}" >&2
