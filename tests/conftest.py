"""Shared fixtures: real sample data made from public-domain scores (see ambientgen.sample_data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("AMBIENTGEN_NO_PROGRESS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
PIPELINES_DIR = REPO_ROOT / "pipelines"
SCHEMA_PATH = REPO_ROOT.parent / "shared" / "pachyderm-schema" / "CreatePipelineRequest.schema.json"


def pachyderm_schema() -> dict:
    """Pachyderm's CreatePipelineRequest JSON schema, from the shared folder beside the checkout; without it the
    tests that validate specs fail with where it belongs, not with a bare FileNotFoundError."""
    import json

    if not SCHEMA_PATH.is_file():
        pytest.fail(f"Pachyderm schema not found at {SCHEMA_PATH}: the shared folder (../shared/pachyderm-schema/"
                    "CreatePipelineRequest.schema.json beside the checkout) is needed to validate pipelines/*.json")
    return json.loads(SCHEMA_PATH.read_text())


@pytest.fixture(scope="session")
def sample_midis(tmp_path_factory) -> list[Path]:
    """Four Bach chorales as MIDI, 20 s each, with varied soft General MIDI programs."""
    from ambientgen.sample_data import make_samples

    return make_samples(tmp_path_factory.mktemp("midis"), count=4, seconds=20.0)


@pytest.fixture(scope="session")
def sample_mp3s(tmp_path_factory) -> list[Path]:
    """Two chorales rendered with FluidSynth and encoded to MP3 (12 s each); the MIDI sits beside each MP3."""
    from ambientgen.sample_data import make_samples

    made = make_samples(tmp_path_factory.mktemp("mp3s"), count=2, seconds=12.0, mp3=True)
    return [p for p in made if p.suffix == ".mp3"]


@pytest.fixture(scope="module")
def torch_one_thread():
    """Run a module's torch work on one thread (deterministic and kind to a shared 2-core machine)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def chorale_dataset(sample_midis, tmp_path_factory) -> Path:
    """The sample chorales through the real make-dataset stage (no augmentation, to stay small)."""
    from ambientgen.stages.make_dataset import DatasetOptions, make_dataset

    out = tmp_path_factory.mktemp("dataset")
    make_dataset(sample_midis[0].parent, out, DatasetOptions(augment=False, eval_percent=25, test_percent=0,
                                                             max_events=512))
    assert (out / "performance" / "train.tfrecord").is_file()
    return out


@pytest.fixture(scope="session")
def model_dir(chorale_dataset, tmp_path_factory) -> Path:
    """A tiny model trained for a few steps on the sample chorales (real make-dataset + train stages)."""
    import torch

    from ambientgen.stages.train import TrainOptions, train

    out = tmp_path_factory.mktemp("gen-model")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(chorale_dataset, out, TrainOptions(config="tiny", steps=6, seq_len=64, batch_size=4, eval_windows=4,
                                                 eval_every=6, checkpoint_every=6, primer_seconds=3.0))
    finally:
        torch.set_num_threads(n)
    return out
