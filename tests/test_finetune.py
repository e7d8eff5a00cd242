"""Fine-tuning (`train --init`), the small-data eval split and the shipped base model folder."""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil

import pytest

from ambientgen.models import base as base_mod
from ambientgen.stages.make_dataset import DatasetOptions, make_dataset
from ambientgen.stages.train import TrainOptions, train
from ambientgen.util import StageError

FAST = dict(seq_len=64, batch_size=4, eval_windows=8, log_every=2, warmup=3, primer_seconds=4.0)
pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def tiny_model(chorale_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-base")
    train(chorale_dataset, out, TrainOptions(config="tiny", steps=6, eval_every=3, checkpoint_every=3, **FAST))
    return out


def _eval_rows(model_dir):
    with open(model_dir / "metrics.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r.get("eval_nll")]


def test_finetune_starts_from_the_init_model_and_keeps_the_best(chorale_dataset, tiny_model, tmp_path):
    out = tmp_path / "ft"
    res = train(chorale_dataset, out, TrainOptions(init=str(tiny_model), steps=12, eval_every=3, **FAST))
    assert res.init == str(tiny_model)
    rows = _eval_rows(out)
    assert rows[0]["step"] == "0"  # the starting point is measured first
    # step 0 evaluates the init weights: the same NLL the init model reached on the same eval windows
    init_nll = float(json.loads((tiny_model / "config.json").read_text())["eval_nll"])
    assert float(rows[0]["eval_nll"]) == pytest.approx(init_nll, rel=1e-4)
    meta = json.loads((out / "config.json").read_text())
    best = min(rows, key=lambda r: float(r["eval_nll"]))
    # metrics.csv keeps 6 significant digits, config.json the full float
    assert meta["best_step"] == int(best["step"]) and meta["eval_nll"] == pytest.approx(float(best["eval_nll"]), rel=1e-5)
    assert meta["model"]["d_model"] == json.loads((tiny_model / "config.json").read_text())["model"]["d_model"]


def test_early_stopping_ends_a_run_that_stops_improving(chorale_dataset, tiny_model, tmp_path):
    # a learning rate this high only makes things worse: patience 2 ends the run long before its 200 steps
    res = train(chorale_dataset, tmp_path / "ft", TrainOptions(init=str(tiny_model), steps=200, eval_every=2,
                                                               lr=5.0, patience=2, **{**FAST, "warmup": 1}))
    assert res.step < 200
    assert res.best_step is not None and res.best_step <= 2


def test_init_with_another_vocabulary_is_refused(chorale_dataset, tmp_path):
    other = tmp_path / "vocab400"
    train(chorale_dataset, other, TrainOptions(config="tiny", steps=2, eval_every=2, checkpoint_every=2,
                                               model_overrides={"vocab_size": 400}, **FAST))
    with pytest.raises(StageError, match="vocabulary 400"):
        train(chorale_dataset, tmp_path / "ft", TrainOptions(init=str(other), steps=2, **FAST))


def test_init_with_another_shape_is_refused(chorale_dataset, tiny_model, tmp_path):
    with pytest.raises(StageError, match="fine-tuning keeps the model's shape"):
        train(chorale_dataset, tmp_path / "ft", TrainOptions(init=str(tiny_model), config="small", steps=2, **FAST))


def test_init_folder_whose_weights_do_not_match_its_config_is_refused(chorale_dataset, tiny_model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    meta = json.loads((broken / "config.json").read_text())
    meta["model"]["d_ff"] = 512
    (broken / "config.json").write_text(json.dumps(meta))
    with pytest.raises(StageError, match="weights do not match config.json"):
        train(chorale_dataset, tmp_path / "ft", TrainOptions(init=str(broken), steps=2, **FAST))


def test_missing_base_falls_back_to_scratch_with_a_warning(chorale_dataset, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(base_mod, "BASE_DIR", tmp_path / "no-base-here")
    with caplog.at_level(logging.WARNING):
        res = train(chorale_dataset, tmp_path / "m", TrainOptions(init="base", config="tiny", steps=2,
                                                                  eval_every=2, **FAST))
    assert res.init is None
    assert "no shipped base model" in caplog.text
    assert json.loads((tmp_path / "m" / "config.json").read_text())["init"] == "scratch"


def test_shipped_base_model_folder_is_valid():
    if not (base_mod.BASE_DIR / "model.safetensors").is_file():
        pytest.skip("no base model shipped in this checkout")
    cfg, meta = base_mod.check_model_dir(base_mod.BASE_DIR)
    assert cfg.vocab_size == 390 and math.isfinite(meta["eval_nll"])
    assert (base_mod.BASE_DIR / "TRAINING.md").is_file()
    assert (base_mod.BASE_DIR / "model.safetensors").stat().st_size < 32 * 2**20
    header = base_mod.read_safetensors_header(base_mod.BASE_DIR / "model.safetensors")
    assert {v["dtype"] for v in header.values()} == {"F16"}


def test_small_data_set_holds_out_the_end_of_each_file(sample_midis, tmp_path):
    src = tmp_path / "two"
    src.mkdir()
    for p in sample_midis[:2]:
        shutil.copy(p, src / p.name)
    # 0% eval by hash: no file can land in eval, so the tail of each file must
    summary = make_dataset(src, tmp_path / "ds", DatasetOptions(augment=False, eval_percent=0, test_percent=0,
                                                                max_events=512))
    assert summary["settings"]["eval_mode"] == "tail"
    sp = summary["splits"]
    assert sp["eval"]["records"] >= 2 and sp["eval"]["files"] == 0
    from ambientgen.music.midi_io import load_midi

    total = sum(len(load_midi(p).notes) for p in src.iterdir())
    assert sp["train"]["notes"] + sp["eval"]["notes"] == total  # every note in exactly one split
    assert 0.03 < sp["eval"]["notes"] / total < 0.25
    # a data set large enough for the hash split keeps the hash split
    big = make_dataset(sample_midis[0].parent, tmp_path / "ds2", DatasetOptions(augment=False, eval_percent=50,
                                                                                test_percent=0))
    assert big["settings"]["eval_mode"] == "hash"


def test_rehearsal_windows_join_every_fine_tuning_batch(chorale_dataset, tiny_model, tmp_path, caplog):
    """With a replay.safetensors beside the init model and --replay 0.5, half of each batch comes from it (none by
    default); the run resumes with both samplers where they were; a damaged rehearsal file is refused with its
    name."""
    import numpy as np
    from safetensors.numpy import save_file

    from ambientgen.stages.finetune import REPLAY_FILE, load_replay
    from ambientgen.stages.train_data import MixedSampler, WindowSampler, make_sampler

    init = tmp_path / "init"
    shutil.copytree(tiny_model, init, ignore=shutil.ignore_patterns("checkpoints"))
    replay = np.full((6, 65), 0, dtype=np.int16)
    replay[:, :40] = np.arange(2, 42)  # note-ons 0..39: nothing in the chorales looks like this
    save_file({"tokens": replay}, str(init / REPLAY_FILE))
    windows = load_replay(init, 390, 0)
    assert len(windows) == 6 and all(len(w) == 40 for w in windows)  # the PAD tail is dropped

    assert TrainOptions(init=str(init), steps=4).resolved().replay == 0  # no rehearsal unless asked for
    opts = TrainOptions(init=str(init), steps=4, eval_every=2, replay=0.5, **FAST).resolved()
    sampler = make_sampler([np.arange(300) % 300 + 2], windows, opts, 65)
    assert isinstance(sampler, MixedSampler)
    batch = sampler.next()
    assert len(batch) == 4 and sum(int(w[0]) == 2 and len(w) == 40 for w in batch) == 2
    state = sampler.state()
    again = [w.tolist() for w in sampler.next()]
    sampler.set_state(state)
    assert [w.tolist() for w in sampler.next()] == again
    assert isinstance(make_sampler(windows, windows, TrainOptions(init="scratch", steps=1).resolved(), 65),
                      WindowSampler)  # no rehearsal from scratch

    with caplog.at_level(logging.INFO):
        train(chorale_dataset, tmp_path / "ft", TrainOptions(init=str(init), steps=4, eval_every=2, replay=0.5,
                                                             **FAST))
    assert "rehearsal: 6 corpus windows" in caplog.text and "2 of every 4 windows" in caplog.text

    replay[0, 0] = 999
    save_file({"tokens": replay}, str(init / REPLAY_FILE))
    with pytest.raises(StageError, match=r"replay.safetensors: token ids outside the vocabulary"):
        load_replay(init, 390, 0)
    save_file({"tokens": replay.astype(np.float32)}, str(init / REPLAY_FILE))
    with pytest.raises(StageError, match="one int16 tensor 'tokens'"):
        load_replay(init, 390, 0)


def test_shipped_rehearsal_set_is_corpus_music():
    """The shipped windows are real performance events: notes start and end, time moves on."""
    from ambientgen.music import performance as perf
    from ambientgen.stages.finetune import load_replay

    windows = load_replay(base_mod.BASE_DIR, perf.VOCAB_SIZE, perf.PAD_ID)
    assert len(windows) >= 1000
    counts = perf.event_type_counts(windows[0])
    assert counts["note_on"] > 10 and counts["note_off"] > 10 and counts["time_shift"] > 10
