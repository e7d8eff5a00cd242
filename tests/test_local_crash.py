"""Crash safety of the local runner: kill -9 at several points, a real SIGKILL mid-job, disk full."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import PIPELINES_DIR
from test_local_helpers import local_cli, manifest, pfs, write_spec

from ambientgen.env import CRASH_ENV
from ambientgen.local import Store, list_jobs, run_pipelines

UPPER = ["sh", "-c", 'for f in /pfs/in/*; do tr a-z A-Z < "$f" > /pfs/out/"$(basename "$f")"; done']
COUNT = ["sh", "-c", "ls /pfs/upper | wc -l > /pfs/out/n; cat /pfs/upper/* > /pfs/out/all"]


def make_specs(folder):
    write_spec(folder, "upper", pfs("in"), UPPER)
    write_spec(folder, "count", pfs("upper", "/"), COUNT)
    return folder


def make_inputs(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for n in "abcd":
        (folder / f"{n}.txt").write_text(f"file {n} " * 20)
    return sorted(folder.iterdir())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Manifests of an uninterrupted run: 3 files, run, a 4th file, run."""
    tmp = tmp_path_factory.mktemp("ref")
    specs = make_specs(tmp / "specs")
    files = make_inputs(tmp / "files")
    store = Store(tmp / "store")
    store.put_files("in", files[:3])
    run_pipelines(store, specs)
    store.put_files("in", files[3:])
    assert all(r.state == "JOB_SUCCESS" for r in run_pipelines(store, specs))
    return {"upper": manifest(store, "upper"), "count": manifest(store, "count")}


@pytest.mark.parametrize("point", ["mid-datum", "blob", "datum", "merge", "commit", "job-record"])
def test_crash_point_then_rerun_matches_uninterrupted_run(point, reference, tmp_path):
    specs = make_specs(tmp_path / "specs")
    files = make_inputs(tmp_path / "files")
    store = Store(tmp_path / "store")
    store.put_files("in", files[:3])
    run_pipelines(store, specs)
    first = store.resolve("upper")
    first_files = {p: store.read_file("upper", p, first.id) for p in first.files}
    store.put_files("in", files[3:])

    r = local_cli("run", "--store", str(store.root), "--pipelines", str(specs),
                  env={CRASH_ENV: point})
    assert r.returncode == 137, r.stderr
    assert f"simulated crash at {point.split(':')[0]}" in r.stderr

    # every earlier commit is still readable, and the branch head is a complete commit
    assert {p: store.read_file("upper", p, first.id) for p in first.files} == first_files
    head = store.resolve("upper")
    for p in head.files:
        store.read_file("upper", p)
    published = point == "job-record"
    assert (head.id != first.id) == published
    assert list_jobs(store, "upper")[0]["state"] == "JOB_RUNNING"

    r = local_cli("run", "--store", str(store.root), "--pipelines", str(specs))
    assert r.returncode == 0, r.stderr
    assert {"upper": manifest(store, "upper"), "count": manifest(store, "count")} == reference
    states = [j["state"] for j in list_jobs(store, "upper")]
    assert "JOB_RUNNING" not in states
    assert states[1] == ("JOB_SUCCESS" if published else "JOB_KILLED")
    assert not any((store.root / "tmp").iterdir())


def test_crash_during_put_file_keeps_previous_commit(tmp_path):
    files = make_inputs(tmp_path / "files")
    store = Store(tmp_path / "store")
    c1 = store.put_files("in", files[:1])
    r = local_cli("put-file", "in", *map(str, files[1:]), "--store", str(store.root),
                  env={CRASH_ENV: "blob:2"})
    assert r.returncode == 137
    assert store.head("in") == c1.id and store.read_file("in", "a.txt") == files[0].read_bytes()
    r = local_cli("put-file", "in", *map(str, files[1:]), "--store", str(store.root))
    assert r.returncode == 0, r.stderr
    assert sorted(store.resolve("in").files) == ["a.txt", "b.txt", "c.txt", "d.txt"]


def test_sigkill_of_real_normalize_run_then_rerun(sample_mp3s, tmp_path):
    """SIGKILL to the runner and its transform while the real normalize pipeline is mid-job."""
    src = tmp_path / "mp3"
    src.mkdir()
    for i in range(6):
        shutil.copyfile(sample_mp3s[i % 2], src / f"Chanson n°{i} été.mp3")
    store = Store(tmp_path / "store")
    store.put_files("audio-unprocessed", sorted(src.iterdir()))
    env = {**os.environ, "AMBIENTGEN_NO_PROGRESS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ambientgen", "local", "run", "audio-processed", "--store",
                             str(store.root), "--pipelines", str(PIPELINES_DIR)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    records = store.root / "datums" / "audio-processed"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(records.glob("*.json")):
        time.sleep(0.002)
    # frozen the moment the first datum is recorded (each datum is a new process of a few hundred ms, so the job
    # is certainly mid-way), then killed: no timing window decides what the test sees
    os.killpg(proc.pid, signal.SIGSTOP)
    done_before = len(list(records.glob("*.json")))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert store.head("audio-processed") is None  # nothing half-published
    assert 1 <= done_before < 6

    job = run_pipelines(store, PIPELINES_DIR, only=["audio-processed"])[0]
    assert job.state == "JOB_SUCCESS" and job.skipped == done_before and job.processed == 6 - done_before
    out = store.resolve("audio-processed")
    assert sorted(store.read_file("audio-processed", p) for p in out.files) == sorted(
        p.read_bytes() for p in src.iterdir())
    assert list_jobs(store, "audio-processed")[1]["state"] == "JOB_KILLED"
    assert not list(records.glob(".*.tmp"))  # a half-written record of the killed run was cleared


def _limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_while_a_datum_writes_fails_cleanly(tmp_path):
    store = Store(tmp_path / "store")
    (tmp_path / "small.txt").write_text("small")
    (tmp_path / "big.txt").write_text("big")
    store.put_files("in", [tmp_path / "small.txt"])
    specs = tmp_path / "specs"
    write_spec(specs, "grow", pfs("in"), ["sh", "-c", 'for f in /pfs/in/*; do case "$f" in *big*) '
                                         'head -c 3000000 /dev/zero > /pfs/out/big.bin || exit 1;; '
                                         '*) cp "$f" /pfs/out/;; esac; done'], datumTries=2)
    assert run_pipelines(store, specs)[0].state == "JOB_SUCCESS"
    good = store.head("grow")
    store.put_files("in", [tmp_path / "big.txt"])
    blobs_before = {p.name for p in (store.root / "objects").rglob("*") if p.is_file()}

    limit = 1_000_000  # bytes: the transform's 3 MB output cannot be written
    r = subprocess.run([sys.executable, "-m", "ambientgen", "local", "run", "--store", str(store.root),
                        "--pipelines", str(specs)], capture_output=True, text=True,
                       env={**os.environ, "AMBIENTGEN_NO_PROGRESS": "1"}, preexec_fn=_limit_file_size(limit))
    assert r.returncode == 1
    assert "in:/big.txt" in r.stderr and "failed after 2 tries" in r.stderr
    assert store.head("grow") == good  # nothing published
    new_blobs = [p for p in (store.root / "objects").rglob("*") if p.is_file() and p.name not in blobs_before]
    assert all(p.stat().st_size < limit for p in new_blobs)
    job = list_jobs(store, "grow")[0]
    assert job["state"] == "JOB_FAILURE" and job["failed"] == 1 and job["skipped"] == 1

    # the runner's own writes hit the limit too (staging a 1.5 MB input): the datum fails, nothing else
    (tmp_path / "huge.txt").write_bytes(b"h" * 1_500_000)
    store.put_files("in", [tmp_path / "huge.txt"])
    r = subprocess.run([sys.executable, "-m", "ambientgen", "local", "run", "--store", str(store.root),
                        "--pipelines", str(specs)], capture_output=True, text=True,
                       env={**os.environ, "AMBIENTGEN_NO_PROGRESS": "1"}, preexec_fn=_limit_file_size(limit))
    assert r.returncode == 1 and "in:/huge.txt" in r.stderr and "cannot stage" in r.stderr
    assert store.head("grow") == good

    # with room again, the next run publishes; the small datum is reused
    job = run_pipelines(store, specs)[0]
    assert job.state == "JOB_SUCCESS" and job.skipped == 1 and job.processed == 2
    assert store.resolve("grow").files["big.bin"]["size"] == 3_000_000
