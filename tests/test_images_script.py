"""scripts/test_images.py without a container runtime: its datums are the runner's, its merge and read-back checks.

The containers themselves run in `make test-images` (buildah, root); its last full run is in docs/cluster.md.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from conftest import PIPELINES_DIR, REPO_ROOT

from ambientgen.local import Store
from ambientgen.local.specs import datums_for, input_datums, load_specs
from ambientgen.util import StageError

SCRIPT = REPO_ROOT / "scripts" / "test_images.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("ambientgen_test_images_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def shape(datums) -> list[list[tuple[str, str, list[str]]]]:
    return sorted([sorted((di.name, di.path, sorted(di.files)) for di in d.inputs) for d in datums])


def test_folder_datums_are_the_store_datums_for_every_spec(script, tmp_path):
    """Per-file globs, whole-repo globs and the generate cross give the same datums from folders as from a store."""
    pfs = tmp_path / "pfs"
    layout = {
        "audio-unprocessed": ["a.mp3", "b c.mp3"], "audio-processed": ["a.mp3", "b_c.mp3"],
        "audio-processed-wav": ["a.wav"], "midi": ["a.mid", "b.mid"], "transformer-preprocess": ["train.tfrecord",
                                                                                                 "meta/info.json"],
        "music-transformer": ["model.safetensors", "config.json"], "generation-config": ["night.toml", "day.toml"],
        "music-transformer-generate": ["night-0/night-0.mid", "night-0/night-0.json", "day-0/day-0.mid"],
    }
    store = Store(tmp_path / "store")
    heads = {}
    for repo, files in layout.items():
        for rel in files:
            (pfs / repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (pfs / repo / rel).write_text(rel)
        heads[repo] = store.put_files(repo, [pfs / repo]).id  # the folder: paths kept
    specs = load_specs(PIPELINES_DIR)
    assert len(specs) == 7
    for spec in specs.values():
        ours = input_datums(spec.spec["input"], script.listing(pfs))
        theirs = datums_for(spec.spec["input"], heads, store)
        assert ours and shape(ours) == shape(theirs), spec.name
    generate = input_datums(specs["music-transformer-generate"].spec["input"], script.listing(pfs))
    assert len(generate) == 2  # the whole model crossed with each request


def test_merge_joins_datum_outputs_and_refuses_a_conflict(script, tmp_path):
    dest = tmp_path / "repo"
    dest.mkdir()
    for i, text in enumerate(["same", "same"]):
        out = tmp_path / f"d{i}"
        (out / "sub").mkdir(parents=True)
        (out / "sub" / "x.txt").write_text(text)
        (out / f"own-{i}.txt").write_text(str(i))
        script.merge(out, dest)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.txt")) == ["own-0.txt", "own-1.txt",
                                                                                   "sub/x.txt"]
    clash = tmp_path / "d2"
    (clash / "sub").mkdir(parents=True)
    (clash / "sub" / "x.txt").write_text("different")
    with pytest.raises(SystemExit, match="two datums wrote sub/x.txt"):
        script.merge(clash, dest)


def test_outputs_are_read_back_and_broken_ones_named(script, sample_mp3s, sample_midis, tmp_path):
    """Real files pass with what they hold; a truncated MP3, an empty MIDI and a fake PNG are findings."""
    assert script.check_file(sample_mp3s[0]).endswith(" s")
    assert script.check_file(sample_midis[0]).endswith(" notes")
    (tmp_path / "c.json").write_text(json.dumps({"a": 1}))
    assert script.check_file(tmp_path / "c.json") == "JSON"
    repo = tmp_path / "midi"
    repo.mkdir()
    (repo / "bad.mid").write_bytes(b"MThd\x00\x00")
    (repo / "bad.png").write_bytes(b"GIF89a" + b"\0" * 30)
    (repo / "cut.mp3").write_bytes(sample_mp3s[0].read_bytes()[:100])
    (repo / "good.mid").write_bytes(sample_midis[0].read_bytes())
    problems = script.check_outputs(lambda msg: None, "midi", repo)
    text = "\n".join(problems)
    for name in ("midi/bad.mid: unreadable", "midi/bad.png: unreadable", "midi/cut.mp3: unreadable"):
        assert name in text
    assert "midi/good.mid: written by uid" in text  # this test's files are its user's, not the images' uid 1000
    assert "good.mid: unreadable" not in text


def test_help_names_the_make_target_and_the_steps():
    res = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert res.returncode == 0 and "make test-images" in res.stdout and "--skip-build" in res.stdout
    assert "test-images:" in (REPO_ROOT / "Makefile").read_text()


def test_tfrecords_are_verified_and_only_an_empty_training_split_is_a_finding(script, tmp_path):
    from ambientgen.music.tfrecord_io import write_records

    repo = tmp_path / "transformer-preprocess"
    repo.mkdir()
    write_records(repo / "eval.tfrecord", [])  # a handful of files leaves eval and test empty: fine
    write_records(repo / "train.tfrecord", [])
    assert script.check_file(repo / "eval.tfrecord") == "0 records"
    with pytest.raises(ValueError, match="empty training split"):
        script.check_file(repo / "train.tfrecord")
    write_records(repo / "train.tfrecord", [b"one", b"two"])
    assert script.check_file(repo / "train.tfrecord") == "2 records"
    data = bytearray((repo / "train.tfrecord").read_bytes())
    data[-6] ^= 0xFF  # flip a byte of the last record: its CRC no longer matches
    (repo / "train.tfrecord").write_bytes(bytes(data))
    with pytest.raises(StageError, match="checksum"):
        script.check_file(repo / "train.tfrecord")
