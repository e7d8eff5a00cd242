#!/usr/bin/env bash
# Install the Debian packages ambientgen needs (ffmpeg, fluidsynth, a General MIDI soundfont) when missing;
# AMBIENTGEN_WITH_BUILDAH=1 adds buildah and mmdebstrap (make test-images), AMBIENTGEN_WITH_CHROMIUM=1 chromium.
set -euo pipefail
missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v fluidsynth >/dev/null || missing+=(fluidsynth)
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || missing+=(fluid-soundfont-gm)
# `make test-images` (AMBIENTGEN_WITH_BUILDAH=1): build and run the stage images without a Docker engine.
if [ "${AMBIENTGEN_WITH_BUILDAH:-0}" = 1 ]; then
  command -v buildah >/dev/null || missing+=(buildah)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
fi
# Optional: headless Chromium for the report's browser test (CI sets AMBIENTGEN_WITH_CHROMIUM=1).
optional=()
if [ "${AMBIENTGEN_WITH_CHROMIUM:-0}" = 1 ] && ! command -v chromium >/dev/null; then optional+=(chromium); fi
if [ ${#optional[@]} -gt 0 ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${optional[*]} with apt-get (optional)" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${optional[@]}" >/dev/null; } \
    || echo "could not install ${optional[*]}; the browser test will be skipped" >&2
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "ambientgen needs these Debian packages: ${missing[*]}" >&2
  echo "run: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
