"""Inputs that used to end in a traceback, or to read outside the input folder: now one clear error each."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys

from ambientgen.stages.normalize import normalize


def run(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "ambientgen", *args], capture_output=True, text=True,
                          env={**os.environ, "AMBIENTGEN_NO_PROGRESS": "1", **(env or {})}, timeout=300, **kw)


def test_a_bad_environment_default_names_the_variable(tmp_path):
    r = run("generate", str(tmp_path), str(tmp_path / "out"), env={"AMBIENTGEN_GENERATE_TOKENS": "abc"})
    assert r.returncode == 2
    assert "AMBIENTGEN_GENERATE_TOKENS='abc'" in r.stderr and "Traceback" not in r.stderr


def test_sample_rate_zero_is_refused(tmp_path):
    r = run("mp3-to-wav", str(tmp_path), str(tmp_path / "out"), "--sample-rate", "0")
    assert r.returncode == 2 and "must be above zero" in r.stderr


def test_stages_do_not_follow_links_out_of_their_input(tmp_path, sample_mp3s, caplog):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(sample_mp3s[0], src / "real.mp3")
    secret = tmp_path / "secret.mp3"
    secret.write_bytes(b"not yours")
    (src / "stolen.mp3").symlink_to(secret)
    (src / "inside.mp3").symlink_to(src / "real.mp3")  # a link within the input is an ordinary input
    res = normalize(src, tmp_path / "out")
    assert sorted(res.done) == ["inside.mp3", "real.mp3"]
    assert b"not yours" not in b"".join(p.read_bytes() for p in (tmp_path / "out").iterdir())
    assert "outside" in caplog.text and "stolen.mp3" in caplog.text


def test_a_255_byte_file_name_goes_through(tmp_path, sample_mp3s):
    src = tmp_path / "in"
    src.mkdir()
    long = "n" * 251 + ".mp3"  # the longest name a file system takes
    shutil.copy(sample_mp3s[0], src / long)
    r = run("mp3-to-wav", str(src), str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / ("n" * 251 + ".wav")).is_file()


def test_put_file_that_cannot_write_says_so(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3_000_000))

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    r = subprocess.run([sys.executable, "-m", "ambientgen", "local", "put-file", "in", str(big), "--store",
                        str(tmp_path / "store")], capture_output=True, text=True, preexec_fn=small_files)
    assert r.returncode == 1
    assert "cannot write into the store" in r.stderr and "cannot read" not in r.stderr
    assert "Traceback" not in r.stderr
