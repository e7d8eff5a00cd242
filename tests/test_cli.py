"""The command line frame: every subcommand has --help with examples."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ambientgen.cli import COMMANDS, build_parser


def test_help_lists_stages():
    out = subprocess.run([sys.executable, "-m", "ambientgen", "--help"], capture_output=True, text=True, check=True)
    for name in ("normalize", "local"):
        assert name in out.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_with_examples(name):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert name in sub.choices, f"{name} is missing from the command line"
    text = sub.choices[name].format_help()
    assert "Examples:" in text and f"ambientgen {name}" in text


def test_environment_sets_option_defaults(monkeypatch):
    monkeypatch.setenv("AMBIENTGEN_NORMALIZE_DRY_RUN", "1")
    args = build_parser().parse_args(["normalize", "a", "b"])
    assert args.dry_run is True
    monkeypatch.setenv("AMBIENTGEN_NORMALIZE_DRY_RUN", "0")
    assert build_parser().parse_args(["normalize", "a", "b"]).dry_run is False


def test_environment_reaches_the_local_runners_subcommands(monkeypatch):
    """AMBIENTGEN_LOCAL_<OPTION> sets an option of every `ambientgen local` action that has it;
    AMBIENTGEN_LOCAL_<ACTION>_<OPTION> one action's alone, and wins."""
    monkeypatch.setenv("AMBIENTGEN_LOCAL_PARALLELISM", "4")
    assert build_parser().parse_args(["local", "run"]).parallelism == 4
    monkeypatch.setenv("AMBIENTGEN_LOCAL_RUN_PARALLELISM", "3")
    assert build_parser().parse_args(["local", "run"]).parallelism == 3
    assert build_parser().parse_args(["local", "run", "--parallelism", "2"]).parallelism == 2
    monkeypatch.setenv("AMBIENTGEN_LOCAL_RUN_PARALLELISM", "many")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["local", "run"])


def test_environment_handles_boolean_optional_actions(monkeypatch):
    import argparse

    from ambientgen.cli import apply_env_defaults

    p = argparse.ArgumentParser()
    p.add_argument("--color", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--no-cache", dest="cache", action="store_false")
    monkeypatch.setenv("AMBIENTGEN_X_COLOR", "0")
    monkeypatch.setenv("AMBIENTGEN_X_CACHE", "0")  # the variable holds the value of dest
    apply_env_defaults("x", p)
    args = p.parse_args([])
    assert args.color is False and args.cache is False
    assert p.parse_args(["--color"]).color is True
