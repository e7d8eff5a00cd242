"""Reading make-dataset's MIDI files: one file at a time or in worker processes, each file's NoteSequence and
note arrays cached by content hash (.npz read without pickle), so a rebuild after adding files reads only them."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .. import env
from ..music import performance as perf
from ..music.midi_io import MidiLimits, midi_bytes_to_note_sequence
from ..util import StageError, atomic_path

log = logging.getLogger(__name__)

PREPROCESS_VERSION = 1  # bump when what a cache entry holds changes: every entry is then recomputed


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/ambientgen/make-dataset, or ~/.cache/ambientgen/make-dataset."""
    return env.cache_home() / "ambientgen" / "make-dataset"


def performance_notes(ns: Any) -> tuple[np.ndarray, ...]:
    """Notes as the encoder sees them: sustain pedal applied when present, drums dropped."""
    return perf.note_arrays(ns, drop_drums=True, sustain=True)


# ---- per-file cache: content hash -> raw NoteSequence bytes + preprocessed note arrays (.npz, no pickle) ----

class NoteCache:
    """Cache of loaded, preprocessed files keyed by content hash (and limits, and PREPROCESS_VERSION).

    Entries are .npz files read with allow_pickle=False (arrays only); a refused file is remembered as a
    small JSON file with the reason. A damaged entry is ignored and rewritten.
    """

    def __init__(self, root: str | os.PathLike | None, limits: MidiLimits):
        self.root = Path(root) if root else None
        self.salt = json.dumps({"v": PREPROCESS_VERSION, "limits": asdict(limits)}, sort_keys=True).encode()
        self.hits = 0
        self.misses = 0
        if self.root is not None:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.warning("%s: cache directory unusable (%s); building without a cache", self.root, exc)
                self.root = None

    def key(self, data: bytes) -> str:
        return hashlib.sha256(self.salt + b"\0" + data).hexdigest()

    def _path(self, key: str, suffix: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}{suffix}"

    def get(self, key: str) -> tuple[bytes, tuple[np.ndarray, ...]] | str | None:
        """(NoteSequence bytes, note arrays), or the reason the file was refused, or None."""
        if self.root is None:
            return None
        rej = self._path(key, ".rejected.json")
        npz = self._path(key, ".npz")
        try:
            if rej.is_file():
                self.hits += 1
                return str(json.loads(rej.read_text())["reason"])
            if npz.is_file():
                with np.load(npz, allow_pickle=False) as z:
                    arrays = (z["start"].astype(np.float64), z["end"].astype(np.float64),
                              z["pitch"].astype(np.int64), z["velocity"].astype(np.int64))
                    ns_bytes = z["ns"].tobytes()
                if not len(arrays[0]) == len(arrays[1]) == len(arrays[2]) == len(arrays[3]):
                    raise ValueError("arrays of different lengths")
                self.hits += 1
                return ns_bytes, arrays
        except Exception as exc:  # a damaged entry: recompute it
            log.debug("%s: ignoring damaged cache entry (%s)", npz, exc)
        self.misses += 1
        return None

    def put(self, key: str, ns_bytes: bytes, arrays: tuple[np.ndarray, ...]) -> None:
        if self.root is None:
            return
        buf = io.BytesIO()
        start, end, pitch, velocity = arrays
        np.savez(buf, start=start, end=end, pitch=pitch, velocity=velocity,
                 ns=np.frombuffer(ns_bytes, dtype=np.uint8))
        self._write(self._path(key, ".npz"), buf.getvalue())

    def put_rejected(self, key: str, reason: str) -> None:
        if self.root is not None:
            self._write(self._path(key, ".rejected.json"), json.dumps({"reason": reason}).encode())

    def _write(self, path: Path, data: bytes) -> None:
        try:
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
        except OSError as exc:
            log.warning("%s: cannot write cache entry (%s)", path, exc)


def load_file(path: Path, rel: str, cache: NoteCache, limits: MidiLimits, collection: str) -> tuple[Any, tuple]:
    """(NoteSequence, note arrays) of one file, from the cache when its content was seen before."""
    from note_seq.protobuf import music_pb2

    data = path.read_bytes()
    key = cache.key(data)
    hit = cache.get(key)
    if isinstance(hit, str):
        raise StageError(path, hit)
    if hit is not None:
        ns = music_pb2.NoteSequence.FromString(hit[0])
        arrays = hit[1]
    else:
        try:
            ns = midi_bytes_to_note_sequence(data, path, limits)
            arrays = performance_notes(ns)
            if len(arrays[0]) == 0:
                raise StageError(path, f"only drum notes ({len(ns.notes)}); nothing to encode")
        except StageError as exc:
            cache.put_rejected(key, exc.cause)
            raise
        cache.put(key, ns.SerializeToString(), arrays)
    # Identify the sequence as Magenta's convert_dir_to_note_sequences does (proto strings must be UTF-8).
    ns.filename = rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    ns.collection_name = collection.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    ns.id = f"/id/midi/{collection}/{hashlib.sha1(rel.encode('utf-8', 'surrogateescape')).hexdigest()}"
    return ns, arrays


def load_one(path: Path, rel: str, cache_root: str | None, limits: MidiLimits,
              collection: str) -> tuple[bytes | None, tuple | None, str | None, int, int]:
    """One file, in this process or a worker: (NoteSequence bytes, note arrays, reason refused, hits, misses).

    Any failure becomes a reason: one bad file never stops the others.
    """
    cache = NoteCache(cache_root, limits)
    try:
        ns, arrays = load_file(path, rel, cache, limits, collection)
        return ns.SerializeToString(), arrays, None, cache.hits, cache.misses
    except StageError as exc:
        reason = exc.cause
    except OSError as exc:
        reason = f"cannot read: {exc.strerror or exc}"
    except Exception as exc:  # a parser or note_seq bug on a strange file
        log.debug("%s: unexpected error", path, exc_info=True)
        reason = f"unexpected error: {type(exc).__name__}: {exc}"
    return None, None, reason, cache.hits, cache.misses


def ordered_map(fn: Any, items: list[tuple], jobs: int) -> Iterator[Any]:
    """fn(*item) for each item, in order; with jobs > 1 in worker processes, at most 2 x jobs ahead."""
    if jobs <= 1 or len(items) <= 1:
        for item in items:
            yield fn(*item)
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from itertools import islice

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        it = iter(items)
        pending = deque(pool.submit(fn, *item) for item in islice(it, 2 * jobs))
        while pending:
            fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(fn, *nxt))
            yield fut.result()
