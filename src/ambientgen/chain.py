"""The chain's repos, in order: the one statement of them that the runner's callers, the report and the demo use.

Pipeline and repo names follow the original pachyderm/ambient-music-generation; a pipeline's output repo carries
its name (pipelines/*.json).
"""

from __future__ import annotations

MP3_REPO = "audio-unprocessed"  # the listener's music
CONFIG_REPO = "generation-config"  # requests for new music
INPUT_REPOS = (MP3_REPO, CONFIG_REPO)  # what the user puts files into
GENERATED_REPO = "music-transformer-generate"  # one folder per piece: .mid + JSON sidecar
RENDERED_REPO = "ambient-render"  # the same folders: .wav, .mp3, piano-roll .png, .json
REPOS = (
    MP3_REPO, "audio-processed", "audio-processed-wav", "midi", "transformer-preprocess",
    "music-transformer", CONFIG_REPO, GENERATED_REPO, RENDERED_REPO,
)
