"""The real pipeline specs audio-processed -> audio-processed-wav -> midi, run by the embedded local runner.

Each datum is one file (glob /*), so each run of `ambientgen mp3-to-wav` and `ambientgen transcribe` sees
one file in /pfs/<input>, exactly as on a Pachyderm cluster.
"""

from __future__ import annotations

import io
import json

import pytest
from conftest import PIPELINES_DIR

from ambientgen.music.transcription import onset_scores

pytestmark = pytest.mark.slow

PIPELINES = ["audio-processed", "audio-processed-wav", "midi"]


def test_audio_pipelines_through_local_runner(tmp_path):
    import note_seq
    import soundfile

    from ambientgen.local import Store, read_logs, run_pipelines
    from ambientgen.sample_data import render_midi, score_to_midi

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    prefixes = {}
    for work, name, prefix in (("bach/bwv66.6", "Choral n°1 (live).mp3", "Choral_n1_live"),
                               ("bach/bwv269", "chorale2.mp3", "chorale2")):
        mid = score_to_midi(work, tmp_path / f"{work.split('/')[1]}.mid", program=4, max_seconds=8.0)
        render_midi(mid, incoming / name)
        prefixes[prefix] = note_seq.midi_file_to_note_sequence(str(mid))

    store = Store(tmp_path / "store")
    store.put_files("audio-unprocessed", sorted(incoming.iterdir()))
    jobs = {j.pipeline: j for j in run_pipelines(store, PIPELINES_DIR, only=PIPELINES)}
    assert jobs["audio-processed"].state == "JOB_SUCCESS"
    # normalize's safe names (an unsafe name gets a hash suffix) decide the stems downstream
    stems = [p.rsplit(".", 1)[0] for p in store.resolve("audio-processed").files]
    refs = {stem: ref for prefix, ref in prefixes.items() for stem in stems if stem.startswith(prefix)}
    assert len(refs) == 2, stems
    wav_job = jobs["audio-processed-wav"]
    assert (wav_job.state, wav_job.processed) == ("JOB_SUCCESS", 2), wav_job.summary()

    wav_files = store.resolve("audio-processed-wav").files
    assert sorted(wav_files) == sorted(f"{stem}.wav" for stem in refs)
    for path in wav_files:
        info = soundfile.info(io.BytesIO(store.read_file("audio-processed-wav", path)))
        assert (info.samplerate, info.channels) == (16000, 1)

    assert jobs["midi"].state == "JOB_SUCCESS", jobs["midi"].summary()
    midi_files = store.resolve("midi").files
    assert sorted(midi_files) == sorted([f"{s}.mid" for s in refs] + [f"{s}.json" for s in refs])
    for stem, ref in refs.items():
        mid = tmp_path / f"{stem}.out.mid"
        mid.write_bytes(store.read_file("midi", f"{stem}.mid"))
        est = note_seq.midi_file_to_note_sequence(str(mid))
        assert onset_scores(ref, est)["f1"] > 0.7, stem  # each file has its own notes
        side = json.loads(store.read_file("midi", f"{stem}.json"))
        assert side["source"] == f"{stem}.wav" and side["notes"] == len(est.notes)

    # a broken MP3 in a later commit fails its datum (and, as on Pachyderm, that job); the log names the file
    good_wav_commit = store.resolve("audio-processed-wav").id
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"\xff\xfb" + b"\x00" * 5000)  # an MP3 frame header, then nothing
    store.put_files("audio-unprocessed", [broken])
    jobs = {j.pipeline: j for j in run_pipelines(store, PIPELINES_DIR, only=PIPELINES)}
    wav_job = jobs["audio-processed-wav"]
    assert (wav_job.state, wav_job.failed, wav_job.skipped) == ("JOB_FAILURE", 1, 2), wav_job.summary()
    assert store.resolve("audio-processed-wav").id == good_wav_commit
    logs = "".join(text for _, text in read_logs(store, "audio-processed-wav"))
    assert "broken.mp3:" in logs
