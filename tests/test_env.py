"""The environment: every variable ambientgen reads is in ambientgen.env.VARIABLES, read there, listed in the README."""

from __future__ import annotations

import re

import pytest
from conftest import REPO_ROOT

from ambientgen import env

SRC = REPO_ROOT / "src" / "ambientgen"


def test_the_environment_is_read_in_env_py_alone():
    readers = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        if path.name != "env.py" and re.search(r"os\.environ\.get\(|os\.getenv\(|os\.environ\[['\"]", text):
            readers.append(str(path.relative_to(SRC)))
    assert readers == []


def test_readme_table_is_the_variables_table():
    readme = (REPO_ROOT / "README.md").read_text()
    table = readme[readme.index("### Environment variables"):readme.index("## The embedded runner")]
    listed = re.findall(r"^\| `([A-Z_<>]+)(?:=1)?` \|", table, re.M)
    assert set(listed) == set(env.VARIABLES) | {"AMBIENTGEN_<COMMAND>_<OPTION>", "AMBIENTGEN_WITH_CHROMIUM"}
    for name, (by, what) in env.VARIABLES.items():
        assert f"| `{name}` | {by} | {what} |" in table


def test_values_are_read_with_their_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("AMBIENTGEN_THREADS", "3")
    monkeypatch.setenv("AMBIENTGEN_NO_PROGRESS", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PACHD_PORT", "not a port")
    assert env.threads() == 3 and env.no_progress() and env.cache_home() == tmp_path and env.pachd_port() is None
    monkeypatch.setenv("AMBIENTGEN_THREADS", "many")
    monkeypatch.setenv("AMBIENTGEN_STORE", "")
    assert env.threads() == 0 and env.get("AMBIENTGEN_STORE") is None
    with pytest.raises(KeyError, match="not one of ambientgen's environment variables"):
        env.get("AMBIENTGEN_TYPO")
    assert env.option_var("make-dataset", "liked_weight") == "AMBIENTGEN_MAKE_DATASET_LIKED_WEIGHT"
