"""normalize: safe names, collision-safe, nothing dropped, non-audio skipped."""

from __future__ import annotations

from ambientgen.stages.normalize import normalize, safe_name


def test_safe_names_are_kept_and_unsafe_get_stable_suffix():
    assert safe_name("ok_song-1.mp3") == "ok_song-1.mp3"
    out = safe_name("Forêt n°1 (live).MP3")
    assert out.startswith("Foret_n1_live-") and out.endswith(".mp3")
    assert safe_name("Forêt n°1 (live).MP3") == out  # stable


def test_collisions_get_distinct_names(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    names = ["a b.mp3", "a_b.mp3", "a  b.mp3", "A B.mp3", "x" * 240 + ".mp3", "notes.txt"]
    for n in names:
        (src / n).write_bytes(n.encode())
    res = normalize(src, tmp_path / "out")
    outs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(outs) == 5 and len(set(outs)) == 5
    assert list(res.skipped) == ["notes.txt"]
    assert all(len(o) < 120 for o in outs)
    # contents preserved one to one
    assert sorted((tmp_path / "out" / o).read_bytes() for o in outs) == sorted(n.encode() for n in names[:5])


def test_a_name_shaped_like_a_folded_one_cannot_meet_it(tmp_path):
    """`Forêt n°1 (live).MP3` and a file literally named with its folded result, in one folder and in the runner."""
    from conftest import PIPELINES_DIR

    from ambientgen.local import Store, run_pipelines
    from ambientgen.pfs import pfs_path

    original = "Forêt n°1 (live).MP3"
    src = tmp_path / "in"
    src.mkdir()
    (src / original).write_bytes(b"original")
    (src / safe_name(original)).write_bytes(b"look-alike")
    res = normalize(src, tmp_path / "out")
    outs = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert len(outs) == 2 and sorted(outs.values()) == [b"look-alike", b"original"]
    assert res.done[safe_name(original)] != safe_name(original)
    # the same two files through the runner: one job, both published
    store = Store(tmp_path / "store")
    store.put_files("audio-unprocessed", sorted(src.iterdir()))
    store.put_files("audio-unprocessed", [src / safe_name(original)], dest="/")
    (job,) = run_pipelines(store, PIPELINES_DIR, only=["audio-processed"])
    assert job.state == "JOB_SUCCESS", [d.error for d in job.datums]
    assert len(store.resolve("audio-processed").files) == 2
    assert pfs_path(safe_name(original)) != pfs_path(original)
