"""Onsets and Frames: model shapes, stop-gradient, loss weighting, onset-gated decoding, checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ambientgen.models import onsets_frames as of  # noqa: E402
from ambientgen.util import StageError  # noqa: E402

SMALL = of.ModelConfig(conv=(4, 4, 8), fc=32, lstm=16, velocity_conv=(2, 2, 4), velocity_fc=16)


def test_model_output_shapes():
    model = of.build_model(SMALL).eval()
    out = model(torch.randn(2, 37, 229))
    assert set(out) == {"onset", "frame", "velocity"}
    for v in out.values():
        assert tuple(v.shape) == (2, 37, of.N_KEYS)


def test_default_model_keeps_128_unit_bilstms():
    model = of.build_model()
    for lstm in (model.onset_lstm, model.frame_lstm):
        assert lstm.hidden_size == 128 and lstm.bidirectional
    assert model.frame_lstm.input_size == 2 * of.N_KEYS  # onset predictions + frame acoustic output


def test_frame_loss_does_not_train_the_onset_stack():
    """The frame head sees the onset predictions through a stop-gradient."""
    torch.manual_seed(0)
    model = of.build_model(SMALL).train()
    out = model(torch.randn(1, 20, 229))
    out["frame"].sum().backward()
    onset_grads = [p.grad for p in [*model.onset_stack.parameters(), *model.onset_lstm.parameters()]]
    assert all(g is None or float(g.abs().sum()) == 0.0 for g in onset_grads)
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.frame_stack.parameters())


def test_frame_weights_follow_the_paper():
    """c = 5 from the onset to t2 = t1 + d, then c / (t - t2) to the offset, 1 elsewhere."""
    t, k = 14, 88
    onset = torch.zeros(1, t, k)
    frame = torch.zeros(1, t, k)
    onset[0, 2, 40] = 1
    frame[0, 2:10, 40] = 1  # note: frames 2..9
    w = of.frame_weights(onset, frame, c=5.0, d=1)[0, :, 40].tolist()
    assert w == pytest.approx([1, 1, 5, 5, 5, 2.5, 5 / 3, 1.25, 1, 5 / 6, 1, 1, 1, 1])
    assert float(of.frame_weights(onset, frame)[0, :, 39].sum()) == t  # other keys: weight 1
    # a repeated note restarts the clock
    onset[0, 7, 40] = 1
    assert of.frame_weights(onset, frame, c=5.0, d=1)[0, 7:9, 40].tolist() == [5, 5]


def test_loss_weighs_frame_errors_near_onsets_more():
    onset = torch.zeros(1, 12, 88)
    frame = torch.zeros(1, 12, 88)
    onset[0, 1, 10] = 1
    frame[0, 1:11, 10] = 1
    logits = (frame * 2 - 1) * 8  # confident and correct everywhere
    base = {"onset": (onset * 2 - 1) * 8, "velocity": torch.zeros(1, 12, 88)}
    batch = {"onset": onset, "frame": frame, "velocity": torch.zeros(1, 12, 88)}
    miss_head = logits.clone()
    miss_head[0, 2, 10] = -8  # wrong right after the onset
    miss_tail = logits.clone()
    miss_tail[0, 10, 10] = -8  # wrong near the end of the note
    l_head = of.compute_loss({**base, "frame": miss_head}, batch)["frame"]
    l_tail = of.compute_loss({**base, "frame": miss_tail}, batch)["frame"]
    assert float(l_head) > 4 * float(l_tail)


def test_velocity_loss_counts_only_onset_frames():
    onset = torch.zeros(1, 5, 88)
    onset[0, 2, 3] = 1
    vel = torch.zeros(1, 5, 88)
    vel[0, 2, 3] = 127
    batch = {"onset": onset, "frame": onset.clone(), "velocity": vel}
    pred = torch.full((1, 5, 88), 0.5)  # wrong everywhere; only the onset cell counts
    out = {"onset": torch.zeros(1, 5, 88), "frame": torch.zeros(1, 5, 88), "velocity": pred}
    assert float(of.compute_loss(out, batch)["velocity"]) == pytest.approx(0.25)


def test_decoding_starts_notes_only_at_onsets():
    t = 40
    on = np.zeros((t, 88))
    fr = np.zeros((t, 88))
    fr[10:20, 0] = 0.9
    on[10, 0] = 0.9  # key 0: onset + frames 10..19 -> one note
    fr[5:25, 1] = 0.9  # key 1: frames but no onset -> nothing
    fr[5:21, 2] = 0.9
    on[5, 2] = on[12, 2] = 0.9  # key 2: re-struck while sounding -> two notes
    on[30:32, 3] = 0.9  # key 3: a two-frame onset run, no frames -> one note of 2 frames
    vel = np.full((t, 88), 0.5)
    notes = of.decode_notes(on, fr, vel)
    fps = of.FeatureConfig().frames_per_second
    got = [(round(s * fps), round(e * fps), p, v) for s, e, p, v in notes]
    assert got == [(5, 12, 23, 64), (10, 20, 21, 64), (12, 21, 23, 64), (30, 32, 24, 64)]
    ns = of.notes_to_sequence(notes)
    assert len(ns.notes) == 4 and ns.total_time == pytest.approx(32 / fps)


def test_labels_use_frame_centres():
    import note_seq

    ns = note_seq.NoteSequence()
    ns.notes.add(pitch=60, start_time=0.5, end_time=1.0, velocity=90)
    rolls = of.sequence_to_rolls(ns, 50)
    fps = of.FeatureConfig().frames_per_second
    on = np.flatnonzero(rolls["onset"][:, 60 - 21])
    assert on.tolist() == [round(0.5 * fps)]
    assert np.flatnonzero(rolls["frame"][:, 39]).tolist() == list(range(round(0.5 * fps), round(1.0 * fps)))
    assert rolls["velocity"][on[0], 39] == 90


def test_checkpoint_roundtrip_fp16(tmp_path):
    model = of.build_model(SMALL).eval()
    of.save_checkpoint(model, tmp_path, fp16=True)
    loaded = of.load_model(tmp_path / "model.safetensors")
    x = torch.randn(1, 30, 229)
    with torch.no_grad():
        a, b = model(x)["onset"], loaded.model(x)["onset"]
    assert torch.allclose(a, b, atol=2e-2)


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(StageError) as exc:
        of.load_model(tmp_path / "nothing" / "model.safetensors")
    assert "model.safetensors" in str(exc.value) and "not found" in str(exc.value)

    of.save_checkpoint(of.build_model(SMALL), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["fc"] = 48  # weights no longer fit the config
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(StageError) as exc:
        of.load_model(tmp_path)
    assert str(tmp_path / "model.safetensors") in str(exc.value) and "shape mismatch" in str(exc.value)

    cfg["model"] = "music_transformer"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(StageError, match="config.json"):
        of.load_model(tmp_path)

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    (bad / "config.json").write_text(json.dumps({"model": "onsets_frames", **SMALL.to_json()}))
    with pytest.raises(StageError, match="safetensors"):
        of.load_model(bad)
