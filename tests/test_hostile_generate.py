"""Hostile generation requests, model folders and primers: each is one clear error, the rest still run."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import note_seq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from note_seq.protobuf import music_pb2

from ambientgen.cli import main as cli
from ambientgen.models.base import check_model_dir
from ambientgen.stages.gen_request import MAX_SECONDS, MAX_TOKENS, GenerationRequest, parse_request_file
from ambientgen.stages.train import TrainOptions, train
from ambientgen.util import StageError

pytestmark = pytest.mark.usefixtures("torch_one_thread")

BAD_REQUESTS = {
    "huge-seconds.toml": ("seconds = 1e308\n", "seconds must be between"),
    "many-seconds.json": ('{"seconds": 1e9}', "seconds must be between"),
    "many-tokens.json": ('{"tokens": 1000000000}', "tokens must be between"),
    "neg-seed.json": ('{"seed": -1}', "seed must be between"),
    "big-seed.json": (json.dumps({"seed": 2**64}), "seed must be between"),
    "deep.json": ("[" * 30_000 + "]" * 30_000, "nested too deeply"),
    "deep.toml": ("a = " + "[" * 30_000 + "]" * 30_000 + "\n", "nested too deeply"),
    "huge.json": ("[" * 100_000 + "]" * 100_000, "a generation request is a few lines"),
    "nul-name.json": (json.dumps({"name": "a\x00b"}), "name must be"),
    "newline-name.json": (json.dumps({"name": "a\nb"}), "name must be"),
    "glob-name.json": (json.dumps({"name": "a*[b]"}), "name must be"),
    "long-name.json": (json.dumps({"name": "x" * 300}), "name must be"),
    "slash-name.json": (json.dumps({"name": "../../etc/x"}), "name must be"),
    "list-piece.json": (json.dumps({"primer_piece": [1, 2]}), "primer_piece must be"),
    "escape-primer.json": (json.dumps({"primer_midi": "../../../../etc/passwd"}), "outside the request's folder"),
}


def test_each_bad_request_is_named_and_the_others_still_run(model_dir, tmp_path, caplog):
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    for name, (text, _) in BAD_REQUESTS.items():
        (cfg / name).write_text(text)
    (cfg / "fine.toml").write_text("tokens = 20\nseed = 3\n")
    out = tmp_path / "out"
    assert cli(["generate", str(model_dir), str(out), "--config-dir", str(cfg)]) == 1
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["fine-0.json", "fine-0.mid"]
    for name, (_, msg) in BAD_REQUESTS.items():
        assert f"{cfg / name}: " in caplog.text and msg in caplog.text, name
    assert "Traceback" not in caplog.text


def _request_values():
    scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                       st.text(max_size=40), st.lists(st.integers(), max_size=3))
    keys = st.sampled_from(["name", "num_samples", "seconds", "tokens", "temperature", "top_k", "top_p", "seed",
                            "primer_piece", "primer_seconds", "include_primer", "program"])
    return st.dictionaries(keys, scalar, max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=_request_values())
def test_fuzzed_requests_are_valid_or_one_clear_error(values, tmp_path):
    path = tmp_path / "req.json"
    path.write_text(json.dumps({k: v for k, v in values.items() if v is not None}, allow_nan=True))
    try:
        req = parse_request_file(path, GenerationRequest())
    except StageError as exc:
        assert exc.path == str(path) and exc.cause
        return
    # what is accepted is inside every documented bound
    assert 1 <= req.num_samples <= 64 and 0 <= req.seed < 2**63 and 0 <= req.program <= 127
    assert req.tokens is None or 0 < req.tokens <= MAX_TOKENS
    assert req.seconds is None or 0 < req.seconds <= MAX_SECONDS
    assert req.temperature > 0 and 0 < req.top_p <= 1


def _bad_folder(model_dir: Path, tmp: Path, edit) -> Path:
    d = tmp / "bad"
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(model_dir, d, ignore=shutil.ignore_patterns("checkpoints", "best.safetensors"))
    meta = json.loads((d / "config.json").read_text())
    edit(d, meta)
    (d / "config.json").write_text(json.dumps(meta))
    return d


@pytest.mark.parametrize("edit, msg", [
    (lambda d, m: m["model"].update(d_model=10**6), "d_model must be an integer"),
    (lambda d, m: m["model"].update(n_layer=10**5), "n_layer must be an integer"),
    (lambda d, m: m["model"].update(n_layer=2, d_model=4096, d_ff=16384, max_len=16384), "larger than"),
    (lambda d, m: m["model"].update(d_ff=64), "weights do not match config.json"),
    (lambda d, m: m["model"].update(vocab_size="many"), "vocab_size must be an integer"),
    (lambda d, m: m.update(model=[1, 2]), "not a valid model config"),
    (lambda d, m: (d / "model.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}"), "not a safetensors"),
    (lambda d, m: (d / "model.safetensors").write_bytes(b"\x01"), "not a safetensors"),
    (lambda d, m: m.update(first_tokens={"x": "y"}), "first_tokens must map"),
    (lambda d, m: (d / "primers.json").write_text(json.dumps({"primers": [{"tokens": [5000]}]})), "primers"),
])
def test_hostile_model_folders_are_one_clear_error(model_dir, tmp_path, edit, msg, capsys, caplog):
    bad = _bad_folder(model_dir, tmp_path, edit)
    args = ["generate", str(bad), str(tmp_path / "out"), "--tokens", "8"]
    if "primers" in msg:
        args += ["--primer-piece", "0"]
    rc = cli(args)
    assert rc == 1
    err = capsys.readouterr().err + caplog.text
    assert msg in err and "Traceback" not in err


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.dictionaries(st.sampled_from(["n_layer", "n_head", "d_model", "d_ff", "max_len", "vocab_size",
                                               "dropout", "attention", "pad_id"]),
                              st.one_of(st.integers(-5, 2**40), st.floats(), st.text(max_size=8), st.none()),
                              max_size=4))
def test_fuzzed_config_json_never_allocates_or_crashes(model_dir, tmp_path, values):
    bad = _bad_folder(model_dir, tmp_path, lambda d, m: m["model"].update(values))
    try:
        cfg, _ = check_model_dir(bad)
    except StageError as exc:
        assert exc.cause
        return
    assert cfg.d_model <= 4096 and cfg.n_layer <= 64  # accepted only within the bounds, and it matches the weights


def test_checkpoint_without_rng_state_is_a_clear_error(chorale_dataset, tmp_path):
    from safetensors.torch import load_file, save_file

    out = tmp_path / "m"
    opts = dict(config="tiny", seq_len=64, batch_size=4, eval_windows=4, eval_every=2, checkpoint_every=2)
    train(chorale_dataset, out, TrainOptions(steps=2, **opts))
    ck = sorted((out / "checkpoints").iterdir())[-1]
    t = load_file(str(ck / "state.safetensors"))
    t.pop("rng.torch")
    save_file(t, str(ck / "state.safetensors"))
    with pytest.raises(StageError, match="cannot restore checkpoint: KeyError"):
        train(chorale_dataset, out, TrainOptions(steps=4, resume=True, **opts))


def _midi(path: Path, notes) -> Path:
    ns = music_pb2.NoteSequence(ticks_per_quarter=220)
    ns.tempos.add(qpm=120)
    for s, e, p in notes:
        ns.notes.add(start_time=s, end_time=e, pitch=p, velocity=80)
    note_seq.sequence_proto_to_midi_file(ns, str(path))
    return path


def test_primers_and_render_use_the_midi_limits(model_dir, tmp_path, caplog):
    from ambientgen.stages.render import RenderOptions, render

    cfg = tmp_path / "cfg"
    cfg.mkdir()
    _midi(cfg / "long.mid", [(0.0, 14 * 3600.0, 60)])  # one 14-hour note in a few dozen bytes
    _midi(cfg / "busy.mid", [(i * 0.001, i * 0.001 + 0.01, 40 + i % 40) for i in range(60_000)])
    (cfg / "a.json").write_text(json.dumps({"primer_midi": "long.mid", "tokens": 8}))
    (cfg / "b.json").write_text(json.dumps({"primer_midi": "busy.mid", "tokens": 8}))
    (cfg / "ok.json").write_text(json.dumps({"tokens": 8}))
    out = tmp_path / "out"
    assert cli(["generate", str(model_dir), str(out), "--config-dir", str(cfg)]) == 1
    assert "more than the limit" in caplog.text and "notes" in caplog.text
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["ok-0.json", "ok-0.mid"]
    # render: the 14-hour note is refused before any audio is written; a good piece beside it is rendered (a
    # known one: what a 6-step model samples may lie outside the soundfont's keys, which is an error of its own)
    src = tmp_path / "render-in"
    src.mkdir()
    shutil.copy(cfg / "long.mid", src / "long.mid")
    _midi(src / "ok-0.mid", [(0.0, 2.0, 60), (0.5, 2.0, 64)])
    res = render(src, tmp_path / "rendered", RenderOptions(formats=("wav",), pianoroll=False, preset="original"))
    assert "long.mid" in res.failed and "h" in res.failed["long.mid"]
    assert set(res.done) == {"ok-0.mid"}
    assert not any("long" in p.name for p in (tmp_path / "rendered").iterdir())


def test_an_unknown_note_off_share_is_refused_naming_the_request_file(tmp_path):
    bad = tmp_path / "loud.toml"
    bad.write_text('note_off_share = "loud"\n')
    with pytest.raises(StageError) as err:
        parse_request_file(bad, GenerationRequest())
    assert "loud.toml" in str(err.value) and "note_off_share must be one of held, model" in str(err.value)
