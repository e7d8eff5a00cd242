"""Local store: put/list/get/export/delete, commit refs, hostile names, the writer lock."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
from test_local_helpers import files_outside, local_cli

from ambientgen.local import Store, StoreBusy, StoreError
from ambientgen.local.records import Commit, new_id
from ambientgen.pfs import pfs_path


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store")


@pytest.fixture
def music(tmp_path):
    d = tmp_path / "music"
    (d / "sub").mkdir(parents=True)
    (d / "Forêt de nuit – pluie.mp3").write_bytes(b"ID3 rain" * 100)
    (d / "waves.mp3").write_bytes(b"ID3 waves" * 50)
    (d / "sub" / "deep.mp3").write_bytes(b"ID3 deep")
    return d


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_folder_goes_in_one_commit_with_content_addressed_blobs(store, music):
    c = store.put_files("audio-unprocessed", [music])
    assert store.list_commits("audio-unprocessed") == [c]
    rain = pfs_path("Forêt de nuit – pluie.mp3")[1:]  # folded as a cluster folds it
    assert rain.startswith("Foret de nuit  pluie-")
    assert sorted(c.files) == [rain, "sub/deep.mp3", "waves.mp3"]
    e = c.files["waves.mp3"]
    assert e["hash"] == sha(b"ID3 waves" * 50) and e["size"] == 450
    assert store.blobs.path(e["hash"]).read_bytes() == b"ID3 waves" * 50
    # files directly, with --dest; the second commit keeps the first commit's files
    c2 = store.put_files("audio-unprocessed", [music / "waves.mp3", music / "sub" / "deep.mp3"], dest="/flat")
    assert c2.parent == c.id
    assert {"flat/waves.mp3", "flat/deep.mp3", "waves.mp3"} <= set(c2.files)
    assert [x.id for x in store.list_commits("audio-unprocessed")] == [c2.id, c.id]
    # the earlier commit is unchanged (immutable)
    assert set(store.resolve("audio-unprocessed", c.id).files) == set(c.files)
    assert store.resolve("audio-unprocessed", "master^").id == c.id
    assert store.resolve("audio-unprocessed", c.id[:8]).id == c.id


def test_list_get_export_delete(store, music, tmp_path):
    (music / ".DS_Store").write_bytes(b"hidden")
    store.put_files("a", [music], dest="/music")
    top = store.list_files("a", None, "/")
    assert [(f.display(), f.type) for f in top] == [("/music/", "dir")]
    inner = store.list_files("a", "master", "/music")
    rain = pfs_path("music/Forêt de nuit – pluie.mp3")
    assert [f.display() for f in inner] == [rain, "/music/sub/", "/music/waves.mp3"]
    out = store.get_file("a", "/music/sub/deep.mp3", tmp_path / "got.mp3")
    assert out.read_bytes() == b"ID3 deep"
    written = store.export("a", tmp_path / "exp")
    assert len(written) == 3
    assert (tmp_path / "exp" / rain[1:]).read_bytes() == b"ID3 rain" * 100
    c3 = store.delete_files("a", ["/music/sub"])
    assert sorted(c3.files) == [rain[1:], "music/waves.mp3"]
    with pytest.raises(StoreError, match="not found"):
        store.read_file("a", "/music/sub/deep.mp3")
    assert store.read_file("a", "/music/sub/deep.mp3", "master^") == b"ID3 deep"


def test_cli_tables_and_json(tmp_path, music):
    st = str(tmp_path / "st")
    r = local_cli("put-file", "audio-unprocessed", str(music / "waves.mp3"), "--store", st)
    assert r.returncode == 0, r.stderr
    r = local_cli("list-repo", "--store", st)
    assert "audio-unprocessed" in r.stdout and "NAME" in r.stdout
    r = local_cli("list-file", "audio-unprocessed@master:/", "--json", "--store", st)
    assert '"/waves.mp3"' in r.stdout
    r = local_cli("get-file", "audio-unprocessed@master:/waves.mp3", "--store", st)
    assert r.stdout == (b"ID3 waves" * 50).decode()
    r = local_cli("get-file", "nope@master:/x", "--store", st)
    assert r.returncode == 1 and "repo 'nope' not found" in r.stderr
    r = local_cli("list-repo", "--store", str(tmp_path / "missing"))
    assert r.returncode == 1 and "no store here" in r.stderr


# ------------------------------------------------------------------ hostile names
def test_dotdot_source_path_is_stored_by_its_name_only(store, tmp_path, monkeypatch):
    (tmp_path / "x.mp3").write_bytes(b"x")
    sub = tmp_path / "cwd"
    sub.mkdir()
    monkeypatch.chdir(sub)
    before = files_outside(tmp_path)
    c = store.put_files("r", ["../x.mp3"])
    assert list(c.files) == ["x.mp3"]
    new = files_outside(tmp_path) - before
    assert all(p.startswith("store") for p in new), new


@pytest.mark.parametrize("dest", ["../../etc", "/a/../../b", "a/./b", "..", "x\x00y", "a\\b"])
def test_unsafe_dest_is_refused(store, music, dest):
    with pytest.raises(StoreError, match="invalid destination"):
        store.put_files("r", [music / "waves.mp3"], dest=dest)
    assert not store.repo_exists("r")


def test_absolute_dest_is_inside_the_repo(store, music, tmp_path):
    c = store.put_files("r", [music / "waves.mp3"], dest="/tmp/evil")
    assert list(c.files) == ["tmp/evil/waves.mp3"]
    assert not os.path.exists("/tmp/evil/waves.mp3")
    store.export("r", tmp_path / "exp")
    assert (tmp_path / "exp" / "tmp" / "evil" / "waves.mp3").is_file()


def test_nul_and_too_long_names_are_refused(store, music, tmp_path):
    with pytest.raises(StoreError, match="NUL"):
        store.put_files("r", [str(music / "wav\x00es.mp3")])
    long_name = "a" * 296 + ".mp3"  # 300 characters: over the 255-byte limit of a file name
    with pytest.raises(StoreError, match="too long|File name too long") as exc:
        store.put_files("r", [tmp_path / long_name])
    assert long_name[:20] in str(exc.value)
    with pytest.raises(StoreError, match="300 bytes"):
        store.put_files("r", [music / "waves.mp3"], dest="/" + "d" * 300)
    # 255 bytes is still fine
    ok = tmp_path / ("b" * 251 + ".mp3")
    ok.write_bytes(b"ok")
    assert list(store.put_files("r", [ok]).files) == [ok.name]
    r = local_cli("put-file", "r", str(music / "waves.mp3"), "--dest", "../../x", "--store", str(tmp_path / "s2"))
    assert r.returncode == 1 and "'..' components are not allowed" in r.stderr


def test_pfs_glob_characters_are_mapped_like_on_a_cluster(store, tmp_path, caplog):
    d = tmp_path / "m"
    d.mkdir()
    (d / "Forêt n°1 (live).mp3").write_bytes(b"1")
    (d / "what?.mp3").write_bytes(b"2")
    c = store.put_files("r", [d])
    # the very names the cluster client gives them (one rule, ambientgen.pfs)
    from ambientgen.cluster import transfer

    assert sorted(c.files) == sorted(transfer.pfs_path(n)[1:] for n in ("Forêt n°1 (live).mp3", "what?.mp3"))
    assert all(n.startswith(("Foret n1 _live_-", "what_-")) for n in c.files)
    # each changed name is announced with the path it got
    for n in c.files:
        assert f"stored as /{n}" in caplog.text
    # a file literally named like a changed name cannot meet it: it is changed too
    folded = next(n for n in c.files if n.startswith("what_-"))
    (d / folded).write_bytes(b"3")
    c2 = store.put_files("r", [d])
    assert len(c2.files) == 3 and folded in c2.files and store.read_file("r", folded) == b"2"


def test_bad_repo_names_are_refused(store, music):
    for name in ["../x", "a/b", "", "x" * 64, "a b"]:
        with pytest.raises(StoreError, match="invalid repo name"):
            store.put_files(name, [music / "waves.mp3"])


def test_export_never_writes_outside_the_target(store, tmp_path, music):
    """Even a corrupted commit holding '../' paths cannot make export write outside its folder."""
    digest = store.put_files("r", [music / "waves.mp3"]).files["waves.mp3"]["hash"]
    with store.writer():
        store.publish_commit(Commit("r", new_id(), store.head("r"), "now",
                                    files={"../escaped.mp3": {"hash": digest, "size": 450}}))
    with pytest.raises(StoreError, match="'..' components"):
        store.export("r", tmp_path / "exp")
    assert not (tmp_path / "escaped.mp3").exists()


def test_output_repo_is_not_writable_by_put_file(store, music):
    with store.writer():
        store.create_repo("audio-processed", pipeline="audio-processed")
    with pytest.raises(StoreError, match="output repo of pipeline"):
        store.put_files("audio-processed", [music / "waves.mp3"])


# ------------------------------------------------------------------ lock
HOLD = """
import sys
from ambientgen.local import Store
with Store(sys.argv[1]).writer(what="test holder"):
    print("locked", flush=True)
    sys.stdin.readline()  # held until the test says so: no timing window
"""


def test_second_writer_fails_clearly_or_waits(tmp_path, music):
    root = tmp_path / "store"
    Store(root)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreBusy, match=r"store is busy.*pid \d+: test holder.*--wait"):
            Store(root).put_files("r", [music / "waves.mp3"])
        r = local_cli("put-file", "r", str(music / "waves.mp3"), "--store", str(root))
        assert r.returncode == 1 and "store is busy" in r.stderr
        waiter = subprocess.Popen([sys.executable, "-m", "ambientgen", "local", "put-file", "r",
                                   str(music / "waves.mp3"), "--store", str(root), "--wait"],
                                  stderr=subprocess.PIPE, text=True, env={**os.environ, "AMBIENTGEN_NO_PROGRESS": "1"})
        said = [waiter.stderr.readline() for _ in range(2)]  # it says it waits, and it does: the lock is held
        assert any("waiting for the store lock" in line for line in said), said
        assert waiter.poll() is None and not Store(root).repo_exists("r")
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert waiter.wait(timeout=60) == 0, waiter.stderr.read()
    finally:
        holder.kill() if holder.poll() is None else None
        holder.wait(timeout=30)
    assert list(Store(root).resolve("r").files) == ["waves.mp3"]
    # readers never lock
    assert Store(root).list_repos()[0]["name"] == "r"
