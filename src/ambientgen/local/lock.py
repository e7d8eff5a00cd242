"""The store's writer lock: one writer at a time across processes (fcntl), re-entrant in one process.

Readers never lock (every record is published by rename). The lock file holds the writer's pid and purpose for
the message another writer gets; taking the lock runs the store's recovery from a killed writer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from .records import StoreBusy

log = logging.getLogger(__name__)


class WriterLock:
    def __init__(self, path: Path, on_acquire: Callable[[], None]):
        self.path = path
        self.on_acquire = on_acquire
        self._fd: int | None = None
        self._depth = 0

    @property
    def held(self) -> bool:
        return self._depth > 0

    @contextlib.contextmanager
    def hold(self, wait: bool = False, what: str = "write") -> Iterator[None]:
        """Hold the lock (re-entrant in this object); another process holding it: wait when ``wait``, else
        StoreBusy naming the holder. ``on_acquire`` runs each time the lock is newly taken."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = self.holder()
                if not wait:
                    raise StoreBusy(
                        f"store is busy: another ambientgen local command is writing to it ({holder}); "
                        "try again when it has finished, or pass --wait", self.path.parent) from None
                log.warning("%s: store is busy (%s); waiting for it...", self.path.parent, holder)
                print(f"ambientgen local: waiting for the store lock held by {holder} ...", file=sys.stderr)
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}: {what}\n".encode(), 0)
            self._fd = fd
            self._depth = 1
            self.on_acquire()
            try:
                yield
            finally:
                self._depth = 0
                self._fd = None
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing releases the flock

    def holder(self) -> str:
        """What the holding process wrote into the lock file ("pid N: what"), for the busy message."""
        try:
            text = self.path.read_text().strip()
        except OSError:
            text = ""
        return text or "unknown process"
