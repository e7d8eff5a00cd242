"""The store's content-addressed objects: every file's bytes once, named by their sha256, verified on each read.

``objects/ab/cdef...``: written by copy, fsync and rename (read-only once there), so a crash never leaves a
half object under a good name; a damaged object is never served, and a put of the same bytes repairs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from .records import StoreError, crash_point, fsync_dir


class Blobs:
    """objects/ under a store root; ``tmp()`` is the store's staging folder (same file system, for renames)."""

    def __init__(self, store_root: Path, tmp: Callable[[], Path]):
        self.store_root = store_root
        self.objects = store_root / "objects"
        self.tmp = tmp

    def listing(self) -> list[str]:
        """Every object's digest."""
        return sorted(p.parent.name + p.name for p in self.objects.glob("??/*") if p.is_file())

    def path(self, digest: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise StoreError(f"invalid content hash {digest!r}")
        return self.objects / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def add(self, src: str | os.PathLike) -> tuple[str, int]:
        """Copy a file into the blob store (hashing while copying); return (sha256, size)."""
        tmp_fd, tmp = tempfile.mkstemp(prefix="blob.", dir=self.tmp())
        h = hashlib.sha256()
        size = 0
        try:
            try:
                fin = open(src, "rb")
            except OSError as exc:
                os.close(tmp_fd)
                raise StoreError(f"cannot read: {exc.strerror or exc}", src) from None
            with fin, os.fdopen(tmp_fd, "wb") as fout:
                while True:
                    try:
                        chunk = fin.read(1 << 20)
                    except OSError as exc:
                        raise StoreError(f"cannot read: {exc.strerror or exc}", src) from None
                    if not chunk:
                        break
                    h.update(chunk)
                    try:
                        fout.write(chunk)
                    except OSError as exc:
                        raise StoreError(f"cannot write into the store {self.store_root}: {exc.strerror or exc}",
                                         src) from None
                    size += len(chunk)
                try:
                    fout.flush()
                    os.fsync(fout.fileno())
                except OSError as exc:
                    raise StoreError(f"cannot write into the store {self.store_root}: {exc.strerror or exc}",
                                     src) from None
            digest = h.hexdigest()
            dest = self.path(digest)
            crash_point("blob")
            if dest.is_file() and self.ok(digest):
                os.unlink(tmp)
            else:  # new, or damaged on disk: the good bytes replace it
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp, 0o444)
                os.replace(tmp, dest)
                fsync_dir(dest.parent)
            return digest, size
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def ok(self, digest: str) -> bool:
        """Does the blob's content still hash to its name?"""
        h = hashlib.sha256()
        try:
            with open(self.path(digest), "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
        except OSError:
            return False
        return h.hexdigest() == digest

    def read(self, digest: str, what: str = "") -> bytes:
        """A blob's bytes, verified against its hash (a damaged object is a StoreError, never served)."""
        try:
            data = self.path(digest).read_bytes()
        except OSError as exc:
            raise StoreError(f"{what or digest}: object {digest[:12]} cannot be read: {exc.strerror or exc}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise StoreError(self.corrupt_message(digest, what))
        return data

    def corrupt_message(self, digest: str, what: str) -> str:
        return (f"{what or 'object'}: stored object {digest[:12]} is damaged (its content no longer matches its "
                f"hash); run `ambientgen local fsck --store {self.store_root}`, then put the original file again")

    def copy(self, digest: str, dest: Path, atomic: bool = True, what: str = "") -> None:
        """Write a blob's content to dest (a new file; atomically by default), verifying its hash on the way.

        A damaged object raises StoreError naming ``what`` (repo@commit:/path) and leaves no file at dest.
        """
        dest.parent.mkdir(parents=True, exist_ok=True)
        if atomic:
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name[:200]}.", suffix=".part", dir=dest.parent)
            os.close(fd)
            target = Path(tmp)
        else:
            target = dest
        try:
            h = hashlib.sha256()
            try:
                src = open(self.path(digest), "rb")
            except OSError as exc:
                raise StoreError(f"{what or digest}: object {digest[:12]} cannot be read: "
                                 f"{exc.strerror or exc}") from None
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
            with src, os.fdopen(os.open(target, flags, 0o666), "wb") as out:
                while chunk := src.read(1 << 20):
                    h.update(chunk)
                    out.write(chunk)
                if atomic:
                    out.flush()
                    os.fsync(out.fileno())
            if h.hexdigest() != digest:
                raise StoreError(self.corrupt_message(digest, what))
            if atomic:
                os.replace(target, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(target)
            raise
