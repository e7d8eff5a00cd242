"""The store never serves bytes whose hash does not match: get-file, export, datum staging and fsck."""

from __future__ import annotations

import os

import pytest
from test_local_helpers import files_outside, local_cli, pfs, write_spec

from ambientgen.local import Store, StoreError, run_pipelines


def flip_byte(store: Store, digest: str) -> None:
    path = store.blobs.path(digest)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def damaged(tmp_path):
    """A store with two files in `in`, one of whose objects has one byte flipped on disk."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.txt").write_bytes(b"good " * 1000)
    (src / "bad.txt").write_bytes(b"original " * 1000)
    store = Store(tmp_path / "store")
    c = store.put_files("in", [src])
    flip_byte(store, c.files["bad.txt"]["hash"])
    return store, c, src


def test_get_file_and_export_refuse_a_damaged_object(damaged, tmp_path):
    store, c, _ = damaged
    r = local_cli("get-file", "in@master:/bad.txt", "--store", str(store.root))
    assert r.returncode == 1 and r.stdout == ""
    assert f"in@{c.id[:12]}:/bad.txt" in r.stderr and "damaged" in r.stderr
    out = tmp_path / "one.txt"
    r = local_cli("get-file", "in@master:/bad.txt", "-o", str(out), "--store", str(store.root))
    assert r.returncode == 1 and not out.exists()
    assert local_cli("get-file", "in@master:/good.txt", "--store", str(store.root)).stdout == "good " * 1000
    dest = tmp_path / "export"
    r = local_cli("export", "in", str(dest), "--store", str(store.root))
    assert r.returncode == 1 and "bad.txt" in r.stderr
    assert not (dest / "bad.txt").exists()
    assert not any(p.name.endswith(".part") for p in dest.rglob("*"))  # no half-written temporary left
    with pytest.raises(StoreError, match="damaged"):
        store.read_file("in", "bad.txt")


def test_a_pipeline_never_sees_damaged_input(damaged, tmp_path):
    store, _, _ = damaged
    specs = tmp_path / "specs"
    write_spec(specs, "copy", pfs("in"), ["python", "-c",
               "import shutil,glob;[shutil.copy(f,'/pfs/out/') for f in glob.glob('/pfs/in/*')]"])
    (res,) = run_pipelines(store, specs)
    failed = [d for d in res.datums if d.state == "failed"]
    assert len(failed) == 1 and "damaged" in failed[0].error and "bad.txt" in failed[0].error
    assert not store.head("copy")  # the job with a failed datum publishes nothing


def test_fsck_names_the_damage_and_put_file_repairs_it(damaged):
    store, c, src = damaged
    r = local_cli("fsck", "--store", str(store.root))
    assert r.returncode == 1
    assert "1 damaged" in r.stdout and f"in@{c.id[:12]}:/bad.txt" in r.stdout
    store.put_files("in", [src / "bad.txt"])  # the same content again: the good bytes replace the damaged ones
    r = local_cli("fsck", "--store", str(store.root))
    assert r.returncode == 0, r.stdout
    assert store.read_file("in", "bad.txt", c.id) == b"original " * 1000  # the old commit reads again too


def test_export_does_not_write_through_symlinks(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.txt").write_text("b")
    store = Store(tmp_path / "store")
    store.put_files("in", [src])
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("keep me")
    dest = tmp_path / "export"
    dest.mkdir()
    (dest / "a.txt").symlink_to(victim)  # a file link: replaced, not written through
    (dest / "sub").symlink_to(outside, target_is_directory=True)  # a folder link leading outside: refused
    before = files_outside(outside)
    with pytest.raises(StoreError, match="leads outside"):
        store.export("in", dest)
    assert victim.read_text() == "keep me" and files_outside(outside) == before
    assert (dest / "a.txt").read_text() == "a" and not (dest / "a.txt").is_symlink()


def test_store_path_that_is_a_file_is_a_clear_error(tmp_path):
    f = tmp_path / "not-a-store"
    f.write_text("x")
    r = local_cli("list-repo", "--store", str(f))
    assert r.returncode == 1 and "must be a folder" in r.stderr and "Traceback" not in r.stderr
