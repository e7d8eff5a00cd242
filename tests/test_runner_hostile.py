"""The runner against hostile specs and a kill -9: input repos are never taken over, no datum outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from test_local_helpers import local_cli, pfs, write_spec

from ambientgen.local import Store, StoreError, run_pipelines


def test_a_pipeline_named_like_an_input_repo_is_refused(tmp_path):
    store = Store(tmp_path / "store")
    (tmp_path / "a.txt").write_text("mine")
    store.put_files("audio-unprocessed", [tmp_path / "a.txt"])
    store.put_files("in", [tmp_path / "a.txt"])
    specs = tmp_path / "specs"
    write_spec(specs, "audio-unprocessed", pfs("in"), ["sh", "-c", "echo gone > /pfs/out/a.txt"])
    with pytest.raises(StoreError, match="named like an input repo"):
        run_pipelines(store, specs)
    assert store.read_file("audio-unprocessed", "a.txt") == b"mine"  # the user's files are untouched
    r = local_cli("run", "--pipelines", str(specs), "--store", str(store.root))
    assert r.returncode == 1 and "named like an input repo" in r.stderr and "Traceback" not in r.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its reaper is gone for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _store_with_one_input(tmp_path) -> Store:
    store = Store(tmp_path / "store")
    (tmp_path / "a.txt").write_text("x")
    store.put_files("in", [tmp_path / "a.txt"])
    return store


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(pid)


def test_kill_9_of_the_runner_ends_its_datum(tmp_path):
    store = _store_with_one_input(tmp_path)
    pidfile = tmp_path / "child.pid"
    specs = tmp_path / "specs"
    write_spec(specs, "slow", pfs("in"), [sys.executable, "-c",
               f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(120)"])
    runner = subprocess.Popen([sys.executable, "-m", "ambientgen", "local", "run", "--pipelines", str(specs),
                               "--store", str(store.root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (pidfile.is_file() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pidfile.read_text())
    assert _alive(child)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    assert _gone_within(child, 10), "the datum's process outlived the runner"


def test_a_timed_out_datum_takes_its_children_with_it(tmp_path):
    store = _store_with_one_input(tmp_path)
    pidfile = tmp_path / "grandchild.pid"
    specs = tmp_path / "specs"
    # the shell starts a background sleeper (a grandchild of the runner), then waits past the datum timeout
    write_spec(specs, "slow", pfs("in"), ["sh", "-c", f"sleep 120 & echo $! > {pidfile}; wait"],
               datumTimeout="2s", datumTries=1)
    (job,) = run_pipelines(store, specs)
    assert job.state == "JOB_FAILURE" and "timed out" in job.datums[0].error
    grandchild = int(pidfile.read_text())
    assert _gone_within(grandchild, 5)
