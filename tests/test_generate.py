"""`ambientgen generate`: request files, validation, primers, lengths, sounding notes closed, sidecars."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import note_seq
import pytest

from ambientgen.cli import main as cli
from ambientgen.music import performance as perf
from ambientgen.stages.generate import GenerationRequest, close_open_notes, generate, seconds_of

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def notes_of(path: Path):
    return note_seq.midi_file_to_note_sequence(str(path))


def test_config_dir_requests_json_and_toml_with_bad_ones_reported(model_dir, tmp_path, caplog):
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "calm.json").write_text(json.dumps({"seconds": 3, "temperature": 0.9, "top_p": 0.95, "seed": 4,
                                               "num_samples": 2}))
    (cfg / "short.toml").write_text('tokens = 40\ntop_k = 20\nseed = 1\nprogram = 89\n')
    (cfg / "cold.json").write_text('{"temperature": 0}')
    (cfg / "wide.toml").write_text("top_p = 1.5\n")
    (cfg / "typo.json").write_text('{"temprature": 0.5}')
    (cfg / "neg.json").write_text('{"seconds": -2}')
    (cfg / "broken.toml").write_text("seconds = \n")
    (cfg / "readme.txt").write_text("not a request")
    out = tmp_path / "out"
    rc = cli(["generate", str(model_dir), str(out), "--config-dir", str(cfg)])
    assert rc == 1  # some requests were bad ...
    # ... and the good ones were still written
    # one folder per piece: the render pipeline's /* glob gives each piece with its sidecar as one datum
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "calm-0/calm-0.json", "calm-0/calm-0.mid", "calm-1/calm-1.json", "calm-1/calm-1.mid",
        "short-0/short-0.json", "short-0/short-0.mid"]
    for name, msg in [("cold.json", "temperature must be > 0"), ("wide.toml", "top_p must be in (0, 1]"),
                      ("typo.json", "unknown key(s) temprature"), ("neg.json", "seconds must be between 0 and 10800"),
                      ("broken.toml", "not valid TOML")]:
        assert f"{cfg / name}: {msg}" in caplog.text
    side = json.loads((out / "calm-1" / "calm-1.json").read_text())
    assert side["request"]["temperature"] == 0.9 and side["request"]["top_p"] == 0.95 and side["sample"] == 1
    assert side["config_file"] == str(cfg / "calm.json") and side["kv_cache"] is True
    assert side["model"]["step"] == 6
    short = json.loads((out / "short-0" / "short-0.json").read_text())
    assert short["tokens"]["generated"] <= 40
    assert {n.program for n in notes_of(out / "short-0" / "short-0.mid").notes} <= {89}


def test_seconds_length_and_seeded_reproducibility(model_dir, tmp_path):
    req = GenerationRequest(name="a", seconds=4.0, seed=3, num_samples=2)
    generate(model_dir, tmp_path / "o1", defaults=req)
    generate(model_dir, tmp_path / "o2", defaults=req)
    for k in (0, 1):
        a, b = (tmp_path / "o1" / f"a-{k}" / f"a-{k}.mid").read_bytes(), (tmp_path / "o2" / f"a-{k}" / f"a-{k}.mid").read_bytes()
        assert a == b
        side = json.loads((tmp_path / "o1" / f"a-{k}" / f"a-{k}.json").read_text())
        # the continuation stops at the first time shift reaching 4 s (unless the model ended the piece)
        assert side["seconds"] <= 4.0 + 1.0 + 0.5
    other = generate(model_dir, tmp_path / "o3", defaults=GenerationRequest(name="a", seconds=4.0, seed=4))
    assert other["written"][0].read_bytes() != (tmp_path / "o1" / "a-0" / "a-0.mid").read_bytes()


def test_cache_and_no_cache_write_the_same_music(model_dir, tmp_path):
    req = GenerationRequest(name="c", tokens=60, seed=9, temperature=1.1)
    generate(model_dir, tmp_path / "cache", defaults=req, use_cache=True)
    generate(model_dir, tmp_path / "nocache", defaults=req, use_cache=False)
    assert (tmp_path / "cache" / "c-0" / "c-0.mid").read_bytes() == (tmp_path / "nocache" / "c-0" / "c-0.mid").read_bytes()


def test_primer_from_training_piece_and_from_midi(model_dir, sample_midis, tmp_path):
    primers = json.loads((model_dir / "primers.json").read_text())["primers"]
    name = primers[0]["name"]
    res = generate(model_dir, tmp_path / "p", defaults=GenerationRequest(name="p", primer_piece=name, tokens=30))
    side = json.loads((tmp_path / "p" / "p-0" / "p-0.json").read_text())
    assert side["primer"]["source"] == f"piece:{name}" and side["primer"]["tokens"] == len(primers[0]["tokens"])
    primer_ns = perf.decode(primers[0]["tokens"])
    out_ns = notes_of(res["written"][0])
    first = sorted((n.start_time, n.pitch) for n in primer_ns.notes)[:5]
    got = sorted((round(n.start_time, 2), n.pitch) for n in out_ns.notes)[:5]
    assert [(round(t, 2), p) for t, p in first] == got  # the output starts with the primer

    # primer_piece is trimmed to primer_seconds
    res = generate(model_dir, tmp_path / "t", defaults=GenerationRequest(name="t", primer_piece=0, primer_seconds=1.0,
                                                                         tokens=10))
    side = json.loads((tmp_path / "t" / "t-0" / "t-0.json").read_text())
    assert 0 < side["primer"]["seconds"] <= 1.0 and side["primer"]["tokens"] < len(primers[0]["tokens"])

    mid_cfg = tmp_path / "cfgdir"
    mid_cfg.mkdir()
    shutil.copy(sample_midis[1], mid_cfg / "theme.mid")
    shutil.copy(sample_midis[2], mid_cfg / "other.mid")
    base = {"primer_seconds": 2, "tokens": 60, "seed": 5}
    (mid_cfg / "with.json").write_text(json.dumps({**base, "primer_midi": "theme.mid"}))
    (mid_cfg / "cont.json").write_text(json.dumps({**base, "primer_midi": "theme.mid", "include_primer": False}))
    (mid_cfg / "else.json").write_text(json.dumps({**base, "primer_midi": "other.mid", "include_primer": False}))
    rc = cli(["generate", str(model_dir), str(tmp_path / "m"), "--config-dir", str(mid_cfg)])
    assert rc == 0
    side = json.loads((tmp_path / "m" / "cont-0" / "cont-0.json").read_text())
    assert side["primer"]["source"] == "midi:theme.mid" and 0 < side["primer"]["seconds"] <= 2.0
    cut = side["primer"]["seconds"]
    # include_primer = false writes exactly the continuation: the primed piece's notes after the primer, shifted
    whole = [(round(n.start_time - cut, 2), n.pitch) for n in notes_of(tmp_path / "m" / "with-0" / "with-0.mid").notes
             if n.start_time >= cut - 1e-6]
    cont = [(round(n.start_time, 2), n.pitch) for n in notes_of(tmp_path / "m" / "cont-0" / "cont-0.mid").notes]
    assert sorted(cont) == sorted(whole) and len(cont) < len(notes_of(tmp_path / "m" / "with-0" / "with-0.mid").notes)
    # the model is conditioned on the primer: the same seed after another primer gives other music
    other = [(round(n.start_time, 2), n.pitch) for n in notes_of(tmp_path / "m" / "else-0" / "else-0.mid").notes]
    assert other != cont

    (mid_cfg / "missing.json").write_text('{"primer_piece": "nope:9"}')
    assert cli(["generate", str(model_dir), str(tmp_path / "m2"), "--config-dir", str(mid_cfg)]) == 1


def test_notes_still_sounding_at_the_end_are_closed():
    on = [perf.VELOCITY_OFFSET + 20, perf.NOTE_ON_OFFSET + 60, perf.TIME_SHIFT_OFFSET + 49,
          perf.NOTE_ON_OFFSET + 64, perf.NOTE_ON_OFFSET + 67]  # 60 rings 0.5 s, then 64 and 67 start at the end
    ns = perf.decode(close_open_notes(on + [perf.EOS_ID, perf.PAD_ID]))
    pitches = sorted(n.pitch for n in ns.notes)
    assert pitches == [60, 64, 67]
    assert all(n.end_time > n.start_time for n in ns.notes)
    assert seconds_of(on) == pytest.approx(0.5)


def test_model_dir_errors_name_the_file(model_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(["generate", str(empty), str(tmp_path / "o")]) == 1
    assert f"{empty / 'config.json'}: model config is missing" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["model"]["n_layer"] = 5
    (broken / "config.json").write_text(json.dumps(cfg))
    (broken / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    assert cli(["generate", str(broken), str(tmp_path / "o")]) == 1
    assert "model.safetensors: weights" in capsys.readouterr().err
    assert cli(["generate", str(model_dir), str(tmp_path / "o"), "--temperature", "-1"]) == 1
    assert "command line: temperature must be > 0" in capsys.readouterr().err


def test_note_off_mask_spends_offs_only_on_sounding_notes(model_dir):
    """SoundingNotes follows the prompt and every new token; with it no note-off names a silent pitch, without it
    the same model does (a few steps of training leave it far from knowing which notes sound)."""
    import torch

    from ambientgen.models.sampling import generate_tokens
    from ambientgen.models.weights import load_model_dir

    on, off = perf.NOTE_ON_OFFSET, perf.NOTE_OFF_OFFSET
    notes = perf.SoundingNotes(torch.tensor([[on + 60, on + 64, perf.TIME_SHIFT_OFFSET + 9, off + 60, off + 70]]))
    assert notes.count[0, 60] == 0 and notes.count[0, 64] == 1 and int(notes.count.sum()) == 1
    logits = notes.ban(torch.zeros(1, perf.VOCAB_SIZE))
    assert torch.isinf(logits[0, off + 60]) and logits[0, on + 60] == 0
    # the probability of an off stays what the model gave all 128 offs, now all on the one sounding note
    before, after = torch.softmax(torch.zeros(1, perf.VOCAB_SIZE), -1), torch.softmax(logits, -1)
    assert torch.isclose(after[0, off:perf.TIME_SHIFT_OFFSET].sum(), before[0, off:perf.TIME_SHIFT_OFFSET].sum())
    assert torch.isclose(after[0, off + 64], before[0, off:perf.TIME_SHIFT_OFFSET].sum())
    assert torch.isclose(after[0, on + 60], before[0, on + 60])  # other events keep their probability
    rows = torch.randn(3, perf.VOCAB_SIZE)
    two = perf.SoundingNotes(torch.tensor([[on + 60, on + 67]] * 3), off_share="model")
    got = torch.softmax(two.ban(rows), -1)
    ratio = (got[:, off + 60] / got[:, off + 67]) / (rows[:, off + 60] - rows[:, off + 67]).exp()
    assert torch.allclose(ratio, torch.ones(3), atol=1e-5)  # shared as the model ranks the sounding notes
    # "held" (the default): each sounding note keeps its own off, the silent pitches' share goes 3:1 to the note
    # that has sounded 3 times as long, none to a note struck just now
    shift = perf.TIME_SHIFT_OFFSET
    aged = perf.SoundingNotes(torch.tensor([[on + 60, shift + 19, on + 67, shift + 9, on + 72]] * 3))
    got, p = torch.softmax(aged.ban(rows), -1), torch.softmax(rows, -1)
    stray = p[:, off:shift].sum(1) - p[:, [off + 60, off + 67, off + 72]].sum(1)
    assert torch.allclose(got[:, off:shift].sum(1), p[:, off:shift].sum(1), atol=1e-6)
    assert torch.allclose(got[:, off + 60], p[:, off + 60] + 0.75 * stray, atol=1e-6)
    assert torch.allclose(got[:, off + 67], p[:, off + 67] + 0.25 * stray, atol=1e-6)
    assert torch.allclose(got[:, off + 72], p[:, off + 72], atol=1e-6)
    fresh = perf.SoundingNotes(torch.tensor([[on + 60, on + 64]]))  # a chord just struck gets no stray offs
    got, p = torch.softmax(fresh.ban(rows[:1]), -1), torch.softmax(rows[:1], -1)
    kept = got[0, [off + 60, off + 64]] / p[0, [off + 60, off + 64]]
    assert torch.allclose(kept, (got[0, on] / p[0, on]).expand(2))
    silent = perf.SoundingNotes(torch.tensor([[perf.VELOCITY_OFFSET + 3]]))
    assert torch.isinf(silent.ban(torch.zeros(1, perf.VOCAB_SIZE))[0, off:perf.TIME_SHIFT_OFFSET]).all()

    def orphans(rows) -> int:
        n = 0
        for row in rows:
            sounding: dict[int, int] = {}
            for t in row:
                if on <= t < off:
                    sounding[t - on] = sounding.get(t - on, 0) + 1
                elif off <= t < perf.TIME_SHIFT_OFFSET:
                    if sounding.get(t - off):
                        sounding[t - off] -= 1
                    else:
                        n += 1
        return n

    model, _ = load_model_dir(model_dir)
    prompt = torch.tensor([[perf.VELOCITY_OFFSET + 10]] * 4)
    free = generate_tokens(model, prompt, 300, seed=2, stop_at_eos=False)
    masked = generate_tokens(model, prompt, 300, seed=2, stop_at_eos=False, constraint=perf.SoundingNotes(prompt))
    assert orphans(free.tolist()) > 0 and orphans(masked.tolist()) == 0
    assert GenerationRequest().note_off_mask is True


def test_hold_guard_ends_notes_held_too_long(model_dir, tmp_path):
    """The guard forces the off of a note held past its limit, so no generated note lasts longer; the limit
    comes from the training notes' lengths in config.json; without the guard the same model holds notes longer."""
    import torch

    from ambientgen.models.sampling import generate_tokens
    from ambientgen.models.weights import load_model_dir
    from ambientgen.stages.generate import hold_limit

    model, meta = load_model_dir(model_dir)
    p99 = meta["note_seconds"]["p99"]
    assert hold_limit(GenerationRequest(hold_guard=True), meta) == pytest.approx(max(1.0, 2 * p99))
    assert hold_limit(GenerationRequest(), meta) is None  # off by default
    assert hold_limit(GenerationRequest(hold_guard=True, max_hold_seconds=3.0), meta) == 3.0

    def longest(rows) -> float:
        return max((n.end_time - n.start_time for r in rows for n in perf.decode(r).notes), default=0.0)

    prompt = torch.tensor([[perf.VELOCITY_OFFSET + 10]] * 4)
    guard = perf.SoundingNotes(prompt, max_hold_steps=50)  # half a second
    held = generate_tokens(model, prompt, 400, seed=5, stop_at_eos=False, constraint=guard)
    free = generate_tokens(model, prompt, 400, seed=5, stop_at_eos=False)
    assert longest(held.tolist()) <= 0.5 + 1e-6  # no time shift carries a note past the limit
    assert longest(free.tolist()) > 1.5 and int(guard.forced.sum()) > 0

    out = generate(model_dir, tmp_path / "g", defaults=GenerationRequest(name="g", tokens=200, seed=1,
                                                                       hold_guard=True, max_hold_seconds=0.5))
    side = json.loads(out["written"][0].with_suffix(".json").read_text())
    assert side["hold_guard"]["max_hold_s"] == 0.5 and side["hold_guard"]["forced_offs"] >= 0


def test_a_length_asked_for_is_given():
    """NoEndBefore rules out EOS in a row until its new music lasts the steps asked for, row by row, without
    touching the model's logits, and keeps the rule it wraps."""
    import torch

    from ambientgen.stages.generate import NoEndBefore

    shift, on, off = perf.TIME_SHIFT_OFFSET, perf.NOTE_ON_OFFSET, perf.NOTE_OFF_OFFSET
    rule = NoEndBefore(2, 150, perf.SoundingNotes(torch.tensor([[on + 60]] * 2)))
    logits = torch.zeros(2, perf.VOCAB_SIZE)
    logits[:, perf.EOS_ID] = 50.0
    assert torch.isinf(rule.ban(logits)[:, perf.EOS_ID]).all() and logits[0, perf.EOS_ID] == 50.0
    rule.push(torch.tensor([[shift + 99], [on + 64]]))  # row 0: 1 s of music, row 1: none yet
    assert torch.isinf(rule.ban(logits)[:, perf.EOS_ID]).all()
    rule.push(torch.tensor([[shift + 49], [shift + 99]]))  # row 0: 1.5 s, row 1: 1 s
    got = rule.ban(logits)
    assert got[0, perf.EOS_ID] == 50.0 and torch.isinf(got[1, perf.EOS_ID])
    assert torch.isinf(got[0, off + 61]) and not torch.isinf(got[0, off + 60])  # the note-off rule still holds

