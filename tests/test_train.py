"""`ambientgen train`: outputs, metrics, checkpoints, exact resume, signals, NaN rollback, clear errors."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ambientgen.music.performance import complete_window
from ambientgen.stages.train import TrainOptions, train
from ambientgen.stages.train_data import WindowSampler, eval_windows
from ambientgen.stages.train_state import METRIC_COLUMNS, lr_at
from ambientgen.util import StageError

FAST = dict(config="tiny", seq_len=64, batch_size=4, eval_windows=8, log_every=2, warmup=3, primer_seconds=4.0)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_train_writes_model_metrics_primers_and_checkpoints(chorale_dataset, tmp_path):
    out = tmp_path / "model"
    res = train(chorale_dataset, out, TrainOptions(steps=10, eval_every=5, checkpoint_every=3, keep=2, **FAST))
    assert res.step == 10 and not res.interrupted
    assert math.isfinite(res.eval_nll) and 0 <= res.eval_accuracy <= 1
    names = sorted(p.name for p in out.iterdir())
    assert names == ["best.safetensors", "checkpoints", "config.json", "metrics.csv", "model.safetensors", "primers.json"]
    # keep-last-k: steps 9 and 10 (the final one) remain
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step-0000009", "step-0000010"]
    for ck in (out / "checkpoints").iterdir():  # safetensors + JSON only, never pickles
        assert sorted(p.name for p in ck.iterdir()) == ["model.safetensors", "state.json", "state.safetensors"]
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0].keys()) == METRIC_COLUMNS
    assert [int(r["step"]) for r in rows] == [2, 4, 5, 6, 8, 10]
    evals = [r for r in rows if r["eval_nll"]]
    assert [int(r["step"]) for r in evals] == [5, 10]
    assert all(float(r["tokens_per_s"]) > 0 and float(r["lr"]) > 0 for r in rows)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    meta = json.loads((out / "config.json").read_text())
    assert meta["model"]["vocab_size"] == 390 and meta["step"] == 10 and meta["config_name"] == "tiny"
    primers = json.loads((out / "primers.json").read_text())["primers"]
    assert primers and all(p["tokens"] and p["seconds"] <= 4.0 for p in primers)
    assert all(2 <= t < 390 for p in primers for t in p["tokens"])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_resume_after_a_signal_gives_bitwise_the_same_weights(chorale_dataset, tmp_path, signum):
    opts = dict(steps=9, eval_every=4, checkpoint_every=4, **FAST)
    train(chorale_dataset, tmp_path / "straight", TrainOptions(**opts))

    def signal_at_5(step, model):
        if step == 5:
            os.kill(os.getpid(), signum)

    before = signal.getsignal(signum)
    first = train(chorale_dataset, tmp_path / "split", TrainOptions(**opts), fault_hook=signal_at_5)
    # the signal arrives during step 6; the run stops after it, between two regular checkpoints (4 and 8) ...
    assert first.interrupted and first.step == 6
    assert signal.getsignal(signum) is before  # handlers restored
    # ... so the checkpoint of step 6 exists only because the signal saved it
    assert (tmp_path / "split" / "checkpoints" / "step-0000006").is_dir()
    assert not same_weights(tmp_path / "straight", tmp_path / "split")
    second = train(chorale_dataset, tmp_path / "split", TrainOptions(resume=True, **opts))
    assert second.step == 9 and second.resumed_from == 6
    assert same_weights(tmp_path / "straight", tmp_path / "split")
    with open(tmp_path / "split" / "metrics.csv", newline="") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh)]
    assert steps == sorted(set(steps))  # no duplicated rows after the resume


@pytest.mark.slow
def test_kill_9_loses_only_the_steps_since_the_last_checkpoint(chorale_dataset, tmp_path):
    env = {**os.environ, "AMBIENTGEN_NO_PROGRESS": "1"}
    args = [sys.executable, "-m", "ambientgen", "train", str(chorale_dataset), "--init", "scratch", "--config", "tiny",
            "--seq-len", "48",
            "--batch-size", "2", "--steps", "400", "--checkpoint-every", "2", "--eval-every", "1000", "--threads", "1"]
    out = tmp_path / "killed"
    proc = subprocess.Popen([*args, str(out)], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / "step-0000004").is_dir():
            assert proc.poll() is None and time.monotonic() < deadline, "training ended before checkpoint 4"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    done = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*"))
    assert done[-1] >= 4
    res = subprocess.run([*args[:-2], "--steps", str(done[-1] + 2), str(out), "--resume"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"step {done[-1] + 2} (resumed from step {done[-1]})" in res.stdout
    assert json.loads((out / "config.json").read_text())["step"] == done[-1] + 2


def test_nan_loss_rolls_back_to_the_last_good_checkpoint(chorale_dataset, tmp_path, caplog):
    hit = []

    def poison(step, model):
        if step == 5 and not hit:
            hit.append(step)
            with torch.no_grad():
                model.blocks[0].mlp[0].weight[0, 0] = float("nan")

    with caplog.at_level(logging.ERROR):
        res = train(chorale_dataset, tmp_path / "m", TrainOptions(steps=8, checkpoint_every=4, eval_every=4, **FAST),
                    fault_hook=poison)
    assert hit and res.rollbacks == 1 and res.step == 8
    assert "non-finite loss" in caplog.text and "step-0000004" in caplog.text
    assert all(torch.isfinite(t).all() for t in weights(tmp_path / "m").values())
    assert math.isfinite(res.eval_nll)
    # after the rollback the learning rate is half the schedule's
    with open(tmp_path / "m" / "metrics.csv", newline="") as fh:
        lr8 = float(next(r["lr"] for r in csv.DictReader(fh) if r["step"] == "8"))
    assert lr8 == pytest.approx(0.5 * lr_at(7, TrainOptions(steps=8, **FAST).resolved()), rel=1e-4)


def test_rollbacks_are_capped(chorale_dataset, tmp_path):
    def poison_always(step, model):
        if step >= 3:
            with torch.no_grad():
                model.blocks[0].mlp[0].weight[0, 0] = float("nan")

    with pytest.raises(StageError, match="after 2 rollbacks; last good checkpoint"):
        train(chorale_dataset, tmp_path / "m", TrainOptions(steps=8, checkpoint_every=2, eval_every=4,
                                                            max_rollbacks=2, **FAST), fault_hook=poison_always)


def test_errors_name_the_problem(chorale_dataset, tmp_path):
    with pytest.raises(StageError, match="data directory does not exist"):
        train(tmp_path / "nope", tmp_path / "o", TrainOptions(steps=1, **FAST))
    (tmp_path / "empty").mkdir()
    with pytest.raises(StageError, match="no training data"):
        train(tmp_path / "empty", tmp_path / "o", TrainOptions(steps=1, **FAST))
    train(chorale_dataset, tmp_path / "m", TrainOptions(steps=2, **FAST))
    with pytest.raises(StageError, match="pass --resume"):
        train(chorale_dataset, tmp_path / "m", TrainOptions(steps=2, **FAST))
    bad = tmp_path / "bad" / "performance"
    bad.mkdir(parents=True)
    (bad / "train.tfrecord").write_bytes(b"\x00" * 7)
    with pytest.raises(StageError, match="train.tfrecord"):
        train(tmp_path / "bad", tmp_path / "o2", TrainOptions(steps=1, **FAST))


def test_cli_train_minutes_budget(chorale_dataset, tmp_path):
    from ambientgen.cli import main

    rc = main(["train", str(chorale_dataset), str(tmp_path / "m"), "--init", "scratch", "--config", "tiny",
               "--seq-len", "32", "--batch-size",
               "2", "--steps", "100000", "--minutes", "0.05", "--attention", "vanilla"])
    assert rc == 0
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert 0 < meta["step"] < 100000 and meta["complete"] is False and meta["model"]["attention"] == "vanilla"


def test_schedule_warmup_and_decay():
    o = TrainOptions(config="tiny", steps=100, lr=1e-3, warmup=10).resolved()
    lrs = [lr_at(s, o) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] >= 1e-4 * 0.99
    inv = TrainOptions(config="tiny", steps=100, lr=1e-3, warmup=10, schedule="inverse-sqrt").resolved()
    assert lr_at(39, inv) == pytest.approx(1e-3 * math.sqrt(10 / 40))


def test_sampler_windows_batches_and_state():
    rng = np.random.default_rng(0)
    pieces = [rng.integers(2, 390, size=n) for n in (30, 50, 400, 1000, 12)]
    s = WindowSampler(pieces, batch_size=4, window=65, seed=3, pool=4)
    for _ in range(5):
        s.next()
    state = json.loads(json.dumps(s.state()))  # JSON-serialisable
    ahead = [s.next() for _ in range(7)]
    t = WindowSampler(pieces, batch_size=4, window=65, seed=3, pool=4)
    t.set_state(state)
    again = [t.next() for _ in range(7)]
    assert all(np.array_equal(a, b) for x, y in zip(ahead, again) for a, b in zip(x, y))
    lens = [len(w) for b in ahead for w in b]
    assert max(lens) <= 65
    spread = [max(len(w) for w in b) - min(len(w) for w in b) for b in ahead]
    assert sum(spread) < 7 * 30  # similar lengths within a batch


def test_eval_windows_restate_sounding_notes_and_score_every_target_once(sample_midis):
    import note_seq

    from ambientgen.music.performance import encode

    pieces = [encode(note_seq.midi_file_to_note_sequence(str(p))) for p in sample_midis[:3]]
    ev = eval_windows(pieces, 65, 1000)
    kept = [len(complete_window(p, 0, 10**6).ids) for p in pieces]
    assert kept == [len(p) for p in pieces]  # an encoded score pairs every off
    assert sum(len(w) - max(c, 1) for w, c in ev) == sum(n - 1 for n in kept)  # every next-token target once
    assert any(c > 1 for _, c in ev)  # later windows restate the notes sounding at their start


def test_gradient_accumulation_gives_the_full_batch_gradient(chorale_dataset):
    """Two micro-batches of 2 windows accumulate the gradient of one batch of 4 (token-weighted, with padding)."""
    from ambientgen.models.transformer import MusicTransformer, get_config
    from ambientgen.music.tfrecord_io import load_split
    from ambientgen.stages.train import accumulate_gradients
    from ambientgen.stages.train_data import collate

    pieces = load_split(chorale_dataset, "train")
    windows = [pieces[0][:40], pieces[0][40:70], pieces[1][:50], pieces[1][50:90]]  # unequal lengths: padding
    torch.manual_seed(0)
    model = MusicTransformer(get_config("tiny", dropout=0.0)).double()

    def grads(micro):
        model.zero_grad(set_to_none=True)
        loss = accumulate_gradients(model, micro, 0, "cpu")
        return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    whole_loss, whole = grads([collate(windows, 0)])
    acc_loss, acc = grads([collate(windows[:2], 0), collate(windows[2:], 0)])
    assert acc_loss == pytest.approx(whole_loss, rel=1e-9)
    assert whole.keys() == acc.keys() and all(torch.allclose(whole[k], acc[k], atol=1e-10) for k in whole)
    # an unweighted mean of the two micro-batch losses would not be the same gradient
    model.zero_grad(set_to_none=True)
    for x, y in (collate(windows[:2], 0), collate(windows[2:], 0)):
        (model(x, y)[1] / 2).backward()
    assert not all(torch.allclose(whole[k], p.grad, atol=1e-10) for k, p in model.named_parameters()
                   if p.grad is not None)
