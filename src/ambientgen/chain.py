"""The chain's repos, in order: the one statement of them that the runner's callers, the report and the demo use.

Pipeline and repo names follow the original pachyderm/ambient-music-generation; a pipeline's output repo carries
its name (pipelines/*.json).
"""

from __future__ import annotations

INPUT_REPOS = ("audio-unprocessed", "generation-config")  # what the user puts files into
REPOS = (
    "audio-unprocessed", "audio-processed", "audio-processed-wav", "midi", "transformer-preprocess",
    "music-transformer", "generation-config", "music-transformer-generate", "ambient-render",
)
