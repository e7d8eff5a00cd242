"""transcribe: real chorales rendered with FluidSynth, encoded to MP3, decoded by mp3-to-wav, transcribed.

The F1 floor of 0.7 below sits well under what the chosen settings give on these pieces with an electric
piano (0.85-0.95, see bench/RESULTS.md) to leave room for other ffmpeg/FluidSynth builds, and
far above what a broken stage gives: misaligned frames (tens of ms off) or another file's notes give < 0.3.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ambientgen.cli import main as cli_main
from ambientgen.music import basic_pitch_onnx as bpo
from ambientgen.music import transcription as tr
from ambientgen.stages.mp3_to_wav import convert
from ambientgen.stages.transcribe import load_onsets_frames, transcribe_dir
from ambientgen.util import StageError

F1_FLOOR = 0.7
WORKS = ("bach/bwv66.6", "bach/bwv269", "bach/bwv347")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict:
    """Three chorales (10 s, electric piano) as reference MIDI, MP3, and 16 kHz WAV from mp3-to-wav."""
    import note_seq

    from ambientgen.sample_data import render_midi, score_to_midi

    root = tmp_path_factory.mktemp("transcribe")
    mp3s, refs = root / "mp3", {}
    mp3s.mkdir()
    for work in WORKS:
        name = work.split("/")[1].replace(".", "_")
        mid = score_to_midi(work, root / f"{name}.mid", program=4, max_seconds=10.0)
        render_midi(mid, mp3s / f"{name}.mp3")
        refs[name] = note_seq.midi_file_to_note_sequence(str(mid))
    res = convert(mp3s, root / "wav")
    assert not res.failed
    return {"root": root, "wav": root / "wav", "refs": refs}


@pytest.fixture(scope="module")
def transcribed(rendered) -> dict:
    out = rendered["root"] / "midi"
    bpo._SESSIONS.clear()
    code = cli_main(["transcribe", str(rendered["wav"]), str(out), "--backend", "basic-pitch"])
    assert code == 0
    return {"out": out, **rendered}


def _read(mid: Path):
    import note_seq

    return note_seq.midi_file_to_note_sequence(str(mid))


def test_notes_match_the_score(transcribed):
    for name, ref in transcribed["refs"].items():
        est = _read(transcribed["out"] / f"{name}.mid")
        scores = tr.onset_scores(ref, est)
        assert scores["f1"] > F1_FLOOR, (name, scores)


def test_folder_gives_each_file_its_own_notes(transcribed):
    names = sorted(transcribed["refs"])
    ests = {n: _read(transcribed["out"] / f"{n}.mid") for n in names}
    for a in names:
        own = tr.onset_scores(transcribed["refs"][a], ests[a])["f1"]
        for b in names:
            if a != b:
                assert own > tr.onset_scores(transcribed["refs"][b], ests[a])["f1"] + 0.4
    pitch_sets = [tuple((round(n.start_time, 2), n.pitch) for n in ests[n].notes) for n in names]
    assert len(set(pitch_sets)) == len(names)


def test_sidecar(transcribed):
    for name in transcribed["refs"]:
        side = json.loads((transcribed["out"] / f"{name}.json").read_text())
        est = _read(transcribed["out"] / f"{name}.mid")
        assert side["source"] == f"{name}.wav" and side["midi"] == f"{name}.mid"
        assert side["backend"] == "basic-pitch" and side["notes"] == len(est.notes) > 10
        assert side["duration_s"] == pytest.approx(soundfile.info(str(transcribed["wav"] / f"{name}.wav")).duration,
                                                   abs=0.01)
        params = side["parameters"]
        assert params["model"] == "nmp.onnx" and 0 < params["onset_threshold"] < 1
        assert 21 <= side["pitch_min"] <= side["pitch_max"] <= 108


def test_model_loaded_once_per_process(rendered, tmp_path, monkeypatch):
    import onnxruntime

    created = []
    real = onnxruntime.InferenceSession

    def counting(*args, **kwargs):
        created.append(args[0] if args else kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", counting)
    bpo._SESSIONS.clear()
    res = transcribe_dir(rendered["wav"], tmp_path / "a", backend="basic-pitch")
    assert len(res.done) == len(WORKS) and len(created) == 1
    transcribe_dir(rendered["wav"], tmp_path / "b", backend="basic-pitch")  # a second folder in the same process: still one load
    assert len(created) == 1


def test_blocked_decoding_matches_whole_file(rendered):
    """Short blocks (2 s, 1 s look-ahead) exercise the stitching; the notes stay essentially the same."""
    wav = rendered["wav"] / "bwv66_6.wav"
    whole = bpo.BasicPitchTranscriber().transcribe_file(wav)
    blocked = bpo.BasicPitchTranscriber(stream=tr.StreamOptions(block_s=2.0, lookahead_s=1.0)).transcribe_file(wav)
    assert abs(len(whole.notes) - len(blocked.notes)) <= 2
    assert tr.onset_scores(whole, blocked)["f1"] > 0.97


def test_streamed_activations_equal_whole_signal(rendered):
    """Windows lie on a fixed grid, so reading in odd-sized pieces gives exactly the same model input."""
    bp = bpo.BasicPitchTranscriber()
    audio = tr.load_audio(rendered["wav"] / "bwv269.wav", bpo.BP_SAMPLE_RATE)
    note_a, onset_a = bp.activations_of(audio)
    cuts = [0, 777, 50_000, 50_001, 123_456, len(audio)]
    pieces = [audio[a:b] for a, b in zip(cuts, cuts[1:])]
    notes, onsets, n = [], [], 0
    for note, onset, total in bp.activations(pieces):
        notes.append(note)
        onsets.append(onset)
        n = total or n
    assert n == len(note_a) == -(-len(audio) // bpo.BP_HOP)
    np.testing.assert_allclose(np.concatenate(notes)[:n], note_a, atol=1e-5)
    np.testing.assert_allclose(np.concatenate(onsets)[:n], onset_a, atol=1e-5)


def test_silence_gives_empty_valid_midi_and_warning(tmp_path, caplog):
    src = tmp_path / "in"
    src.mkdir()
    soundfile.write(str(src / "quiet.wav"), np.zeros(16000 * 5, dtype=np.int16), 16000)
    with caplog.at_level(logging.WARNING):
        res = transcribe_dir(src, tmp_path / "out")
    assert not res.failed and res.done["quiet.wav"]["notes"] == 0
    assert "quiet.wav: no notes found" in caplog.text
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(str(tmp_path / "out" / "quiet.mid"))
    assert sum(len(i.notes) for i in pm.instruments) == 0


def test_bad_files_fail_alone(rendered, tmp_path, caplog):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(rendered["wav"] / "bwv269.wav", src / "Forêt n°1 (live).wav")
    (src / "empty.wav").write_bytes(b"")
    (src / "random.wav").write_bytes(np.random.default_rng(1).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    (src / "readme.md").write_text("hello")
    with caplog.at_level(logging.WARNING):
        code = cli_main(["transcribe", str(src), str(tmp_path / "out")])
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Forêt n°1 (live).json", "Forêt n°1 (live).mid"]
    assert "empty.wav: empty file" in caplog.text
    assert "random.wav: cannot read audio" in caplog.text
    assert "readme.md: not an audio file" in caplog.text


def test_transcribes_mp3_directly(rendered, tmp_path):
    mp3 = next((rendered["root"] / "mp3").glob("bwv347*.mp3"))
    (tmp_path / "in").mkdir()
    shutil.copy(mp3, tmp_path / "in" / mp3.name)
    res = transcribe_dir(tmp_path / "in", tmp_path / "out")
    est = _read(tmp_path / "out" / "bwv347.mid")
    assert res.done and tr.onset_scores(rendered["refs"]["bwv347"], est)["f1"] > F1_FLOOR


def test_a_midi_input_is_its_own_transcription(rendered, tmp_path):
    """A MIDI file among the inputs is copied as it is (checked with the MIDI limits) under NAME-midi.mid, so the
    score beside its recording never collides with the recording's transcription; a broken one fails alone."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(rendered["wav"] / "bwv269.wav", src / "bwv269.wav")
    shutil.copy(rendered["root"] / "bwv269.mid", src / "bwv269.mid")
    (src / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06 not a track")
    res = transcribe_dir(src, tmp_path / "out")
    assert set(res.done) == {"bwv269.wav", "bwv269.mid"} and set(res.failed) == {"broken.mid"}
    given = tmp_path / "out" / "bwv269-midi.mid"
    assert given.read_bytes() == (src / "bwv269.mid").read_bytes()
    side = json.loads(given.with_suffix(".json").read_text())
    assert side["backend"] == "midi" and side["notes"] == len(rendered["refs"]["bwv269"].notes)
    assert (tmp_path / "out" / "bwv269.mid").is_file()  # the recording's own transcription, beside it


def test_onsets_frames_missing_module_or_checkpoint_is_clear(tmp_path, capsys):
    with pytest.raises(StageError) as err:
        load_onsets_frames(tmp_path / "missing.safetensors")
    assert "onsets-frames" in str(err.value) or "missing.safetensors" in str(err.value)
    src = tmp_path / "in"
    src.mkdir()
    soundfile.write(str(src / "a.wav"), np.zeros(1600, dtype=np.int16), 16000)
    code = cli_main(["transcribe", str(src), str(tmp_path / "out"), "--backend", "onsets-frames",
                     "--checkpoint", str(tmp_path / "missing.safetensors")])
    assert code == 1
    assert "ambientgen transcribe: error:" in capsys.readouterr().err


def test_checkpoint_only_for_onsets_frames(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    soundfile.write(str(src / "a.wav"), np.zeros(1600, dtype=np.int16), 16000)
    assert cli_main(["transcribe", str(src), str(tmp_path / "o"), "--backend", "basic-pitch", "--checkpoint",
                     "x.safetensors"]) == 1
    assert "--checkpoint is for --backend onsets-frames" in capsys.readouterr().err


def test_pipeline_command_lines_still_parse():
    """pipelines/audio-processed-wav.json and midi.json run these exact command lines."""
    from ambientgen.cli import build_parser

    root = Path(__file__).resolve().parents[1] / "pipelines"
    for spec, stage, src in (("audio-processed-wav.json", "mp3-to-wav", "/pfs/audio-processed"),
                             ("midi.json", "transcribe", "/pfs/audio-processed-wav")):
        cmd = json.loads((root / spec).read_text())["transform"]["cmd"]
        assert cmd[:2] == ["ambientgen", stage]
        args = build_parser().parse_args(cmd[1:])
        assert (args.command, args.input_dir, args.output_dir) == (stage, src, "/pfs/out")


def test_onsets_frames_backend_with_a_real_checkpoint(rendered, tmp_path):
    """The onsets-frames path end to end with a real (untrained) model saved as safetensors + config.json."""
    torch = pytest.importorskip("torch")
    of = pytest.importorskip("ambientgen.models.onsets_frames")
    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt"
    of.save_checkpoint(of.build_model(), ckpt)
    src = tmp_path / "in"
    src.mkdir()
    audio, sr = soundfile.read(str(rendered["wav"] / "bwv269.wav"), dtype="float32")
    soundfile.write(str(src / "a.wav"), audio[: 4 * sr], sr)
    soundfile.write(str(src / "b.wav"), audio[2 * sr: 7 * sr], sr)
    res = transcribe_dir(src, tmp_path / "out", backend="onsets-frames", checkpoint=ckpt,
                         stream=tr.StreamOptions(block_s=2.0, lookahead_s=1.0))
    assert not res.failed and sorted(res.done) == ["a.wav", "b.wav"]
    for name, seconds in (("a", 4.0), ("b", 5.0)):
        side = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert side["backend"] == "onsets-frames" and side["parameters"]["checkpoint"] == str(ckpt)
        est = _read(tmp_path / "out" / f"{name}.mid")
        assert side["notes"] == len(est.notes)
        assert all(0 <= n.start_time < seconds + 0.05 for n in est.notes)


def test_onsets_frames_backend_with_the_shipped_checkpoint(rendered, tmp_path):
    """The trained checkpoint shipped in the package, through the transcribe stage: real notes, close to the score."""
    res = transcribe_dir(rendered["wav"], tmp_path / "out", backend="onsets-frames")
    assert not res.failed and len(res.done) == len(rendered["refs"])
    for name, ref in rendered["refs"].items():
        side = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert side["backend"] == "onsets-frames" and side["parameters"]["checkpoint"] == "(packaged)"
        est = _read(tmp_path / "out" / f"{name}.mid")
        assert len(est.notes) > 10
        # an untrained or broken model emits nothing, or noise: the shipped one finds the chorale's notes
        assert tr.onset_scores(ref, est)["f1"] > 0.5, name


def test_options_and_environment_reach_the_decoder(rendered, tmp_path, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(rendered["wav"] / "bwv269.wav", src / "x.wav")
    monkeypatch.setenv("AMBIENTGEN_TRANSCRIBE_MELODIA", "0")
    assert cli_main(["transcribe", str(src), str(tmp_path / "o"), "--backend", "basic-pitch",
                     "--onset-threshold", "0.5", "--min-note-ms", "60"]) == 0
    params = json.loads((tmp_path / "o" / "x.json").read_text())["parameters"]
    assert (params["onset_threshold"], params["minimum_note_length_ms"], params["melodia_trick"]) == (0.5, 60.0, False)
    plain = json.loads((tmp_path / "o" / "x.json").read_text())["notes"]
    monkeypatch.delenv("AMBIENTGEN_TRANSCRIBE_MELODIA")
    assert cli_main(["transcribe", str(src), str(tmp_path / "d"), "--backend", "basic-pitch", "--onset-threshold",
                     "0.5", "--min-note-ms", "60"]) == 0
    melodia = json.loads((tmp_path / "d" / "x.json").read_text())
    assert melodia["parameters"]["melodia_trick"] is True and melodia["notes"] > plain
