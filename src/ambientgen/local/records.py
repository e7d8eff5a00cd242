"""The local store's records and rules: errors, ids and times, repo names, paths inside a repo, commits.

Also the crash-injection hook the reliability tests use (``_AMBIENTGEN_TEST_KILL_AT``), placed at the points
where a kill must leave every earlier commit readable.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .. import env
from ..util import StageError

BRANCH = "master"
NAME_MAX = 255  # bytes in one path component (Linux)
PATH_MAX = 4096
_REPO_RE = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
_crash_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Test hook: ``_AMBIENTGEN_TEST_KILL_AT=name`` (or ``name:N`` for the N-th time) kills the process here.

    ``os._exit`` skips every cleanup handler, like ``kill -9``.
    """
    want = env.crash_point_wanted()
    if not want:
        return
    point, _, nth = want.partition(":")
    if point != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] >= int(nth or 1):
        sys.stderr.write(f"ambientgen local: simulated crash at {name}\n")
        sys.stderr.flush()
        os._exit(137)


class StoreError(StageError):
    """A store operation that cannot be done; the message says why."""

    def __init__(self, cause: str, path: str | os.PathLike | None = None):
        super().__init__(path, cause)


class StoreBusy(StoreError):
    """Another process holds the writer lock."""


def now_iso() -> str:
    """UTC time with milliseconds, e.g. 2026-01-02T03:04:05.678Z."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def new_id() -> str:
    """A Pachyderm-style 32 hex digit id."""
    return uuid.uuid4().hex


def short(x: str | None) -> str:
    """An id as shown to a person: its first 12 digits."""
    return (x or "-")[:12]


def check_repo_name(name: str) -> str:
    if not isinstance(name, str) or not _REPO_RE.match(name):
        raise StoreError(f"invalid repo name {name!r}: use 1-63 letters, digits, '_' or '-'")
    return name


def clean_repo_path(path: str, what: str = "path") -> str:
    """Normalize a path inside a repo ("/a//b/" -> "a/b"; "/" -> ""), refusing anything unsafe.

    Refused: NUL or other control characters, ``.``/``..`` components, a component over 255 bytes,
    a path over 4096 bytes. A leading ``/`` is the repo root (as in pachctl), never the host's root.
    """
    if not isinstance(path, str):
        raise StoreError(f"invalid {what} {path!r}")
    if "\x00" in path:
        raise StoreError(f"invalid {what} {path!r}: contains a NUL byte")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise StoreError(f"invalid {what} {path!r}: contains a control character")
    if "\\" in path:
        raise StoreError(f"invalid {what} {path!r}: contains a backslash")
    parts = [p for p in path.split("/") if p]
    for p in parts:
        if p in (".", ".."):
            raise StoreError(f"invalid {what} {path!r}: '{p}' components are not allowed")
        try:
            size = len(p.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise StoreError(f"invalid {what} {path!r}: not valid UTF-8") from exc
        if size > NAME_MAX:
            raise StoreError(f"invalid {what} '{p[:40]}...': name is {size} bytes, the limit is {NAME_MAX}")
    out = "/".join(parts)
    if len(out.encode("utf-8")) > PATH_MAX:
        raise StoreError(f"invalid {what}: longer than {PATH_MAX} bytes")
    return out


def safe_join(root: Path, repo_path: str) -> Path:
    """root / repo_path, after checking that the result stays inside root."""
    rel = clean_repo_path(repo_path)
    dest = root.joinpath(*rel.split("/")) if rel else root
    root_abs = os.path.abspath(root)
    if os.path.commonpath([root_abs, os.path.abspath(dest)]) != root_abs:
        raise StoreError(f"path {repo_path!r} leaves {root}")
    return dest


def _inside_real(root: Path, dest: Path) -> None:
    """Refuse to write dest when a symlinked folder on its way leads outside root."""
    real_root = os.path.realpath(root)
    parent = dest.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    real = os.path.realpath(parent)
    if real != real_root and not real.startswith(real_root + os.sep):
        raise StoreError(f"{dest}: a symbolic link in the target folder leads outside it ({real}); not written")


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class FileInfo:
    path: str  # without leading slash
    hash: str
    size: int
    type: str = "file"  # "file" or "dir"

    def display(self) -> str:
        return "/" + self.path + ("/" if self.type == "dir" and self.path else "")


@dataclass
class Commit:
    repo: str
    id: str
    parent: str | None
    created: str
    files: dict[str, dict] = field(default_factory=dict)  # path -> {"hash", "size"}
    origin: str = "USER"  # USER (put-file/delete-file) or AUTO (a pipeline job)
    provenance: list[dict] = field(default_factory=list)  # [{"repo", "commit"}] the direct inputs
    job: str | None = None
    pipeline: str | None = None
    salt: str | None = None
    message: str = ""

    @property
    def size(self) -> int:
        return sum(int(f["size"]) for f in self.files.values())

    def to_json(self) -> dict:
        return {
            "repo": self.repo, "id": self.id, "branch": BRANCH, "parent": self.parent, "created": self.created,
            "origin": self.origin, "provenance": self.provenance, "job": self.job, "pipeline": self.pipeline,
            "salt": self.salt, "message": self.message, "files": self.files,
        }

    @classmethod
    def from_json(cls, d: dict) -> Commit:
        return cls(
            repo=d["repo"], id=d["id"], parent=d.get("parent"), created=d.get("created", ""),
            files=d.get("files", {}), origin=d.get("origin", "USER"), provenance=d.get("provenance", []),
            job=d.get("job"), pipeline=d.get("pipeline"), salt=d.get("salt"), message=d.get("message", ""),
        )
