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
    assert res.skipped == ["notes.txt"]
    assert all(len(o) < 120 for o in outs)
    # contents preserved one to one
    assert sorted((tmp_path / "out" / o).read_bytes() for o in outs) == sorted(n.encode() for n in names[:5])
