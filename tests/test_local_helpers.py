"""Helpers shared by the local runner tests: small spec files and subprocess runs of `ambientgen local`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def write_spec(folder: Path, name: str, input_: dict, cmd: list[str], **extra) -> Path:
    """A Pachyderm 2.x spec file in folder; extra keys go to the top level (transform extras via 'transform')."""
    folder.mkdir(parents=True, exist_ok=True)
    transform = {"image": "test", "cmd": cmd, **extra.pop("transform", {})}
    spec = {"pipeline": {"name": name}, "input": input_, "transform": transform, **extra}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


def pfs(repo: str, glob: str = "/*", name: str | None = None) -> dict:
    d = {"repo": repo, "glob": glob}
    if name:
        d["name"] = name
    return {"pfs": d}


def local_cli(*args: str, env: dict | None = None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run `python -m ambientgen local ARGS` in a fresh process."""
    full_env = {**os.environ, "AMBIENTGEN_NO_PROGRESS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "ambientgen", "local", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, **kw)


def manifest(store, repo: str) -> dict[str, str]:
    """path -> content hash of a repo's head commit ({} when it has none)."""
    if not store.repo_exists(repo) or not store.head(repo):
        return {}
    return {p: e["hash"] for p, e in store.resolve(repo).files.items()}


def files_outside(root: Path) -> set[str]:
    """Every path under root (to show that nothing was written where it should not be)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}
