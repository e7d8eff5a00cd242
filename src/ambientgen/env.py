"""Every environment variable ambientgen reads, in one table, read in one place (the README's table is this one).

Options of every command also come from ``AMBIENTGEN_<COMMAND>_<OPTION>`` (cli.apply_env_defaults); the names
below are the settings that are not command options.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

# name -> (read by, what it does)
VARIABLES: dict[str, tuple[str, str]] = {
    "AMBIENTGEN_STORE": ("`ambientgen local`", "the store folder (default `./.ambientgen-store`)"),
    "AMBIENTGEN_PIPELINES": ("`ambientgen local run`, `ambientgen cluster`",
                             "the specs folder (default `./pipelines`, else the checkout's)"),
    "AMBIENTGEN_NO_PROGRESS": ("every command", "`1`: no progress bars (the pipeline specs set it: logs stay readable)"),
    "AMBIENTGEN_THREADS": ("`transcribe`", "model threads (default: all physical cores)"),
    "AMBIENTGEN_SOUNDFONT": ("`render`, `sample-data`", "a General MIDI `.sf2` to use instead of FluidR3_GM / TimGM6mb"),
    "XDG_CACHE_HOME": ("`make-dataset`", "where its per-file cache goes (`$XDG_CACHE_HOME/ambientgen/make-dataset`)"),
    "AMBIENTGEN_REGISTRY": ("`ambientgen cluster deploy`", "the image registry (`REGISTRY/<stage>:VERSION`)"),
    "PACHD_HOST": ("`ambientgen cluster`", "the pachd host (default: the pachctl config, else localhost)"),
    "PACHD_PORT": ("`ambientgen cluster`", "the pachd gRPC port (default 30650)"),
}


# A test hook, named unlike any AMBIENTGEN_<COMMAND>_<OPTION>: `name` or `name:N` kills the process at that point
# (local.records.crash_point), to show that a killed run leaves the store readable and resumes.
CRASH_ENV = "_AMBIENTGEN_TEST_KILL_AT"


def option_var(command: str, dest: str) -> str:
    """AMBIENTGEN_<COMMAND>_<OPTION>, e.g. AMBIENTGEN_TRAIN_MINUTES for `ambientgen train --minutes`."""
    return f"AMBIENTGEN_{command}_{dest}".upper().replace("-", "_")


def option_default(command: str, dest: str) -> str | None:
    """The raw value of an option's AMBIENTGEN_<COMMAND>_<OPTION> variable, if set."""
    return os.environ.get(option_var(command, dest))


def crash_point_wanted() -> str | None:
    return os.environ.get(CRASH_ENV) or None


def get(name: str) -> str | None:
    """The variable's value, '' and unset alike giving None; only names of VARIABLES may be asked for."""
    if name not in VARIABLES:
        raise KeyError(f"{name} is not one of ambientgen's environment variables (env.VARIABLES)")
    return os.environ.get(name) or None


def no_progress() -> bool:
    return get("AMBIENTGEN_NO_PROGRESS") == "1"


def threads() -> int:
    """Model threads; 0 (onnxruntime's choice: the physical cores) when unset or not a number."""
    try:
        return int(get("AMBIENTGEN_THREADS") or 0)
    except ValueError:
        return 0


def cache_home() -> Path:
    return Path(get("XDG_CACHE_HOME") or Path.home() / ".cache")


def pachd_port() -> int | None:
    try:
        return int(get("PACHD_PORT") or 0) or None
    except ValueError:
        return None


@contextlib.contextmanager
def overridden(values: dict[str, str]) -> Iterator[None]:
    """Set variables for the processes started meanwhile (the stages the runner starts), then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
