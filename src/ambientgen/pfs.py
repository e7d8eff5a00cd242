"""Pachyderm's file-name rules, stated once: the local store, the cluster client and the stages follow them.

PFS refuses glob characters and anything outside printable ASCII in file paths. A path that has to change is
ASCII-folded ('Forêt' -> 'Foret'), the refused characters become '_', and its file name gets '-' plus 8 hex digits
of the SHA-1 of the original relative path. A name that is already acceptable but ends the way a changed name
ends ('-' and 8 hex digits) is given a hash of its own too, so an original can never meet another file's
changed name: kept names and changed names are two disjoint sets.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import PurePosixPath

PFS_GLOB_CHARS = re.compile(r"[*?\[\]{}!()@+^]")
PFS_NOT_PRINTABLE = re.compile(r"[^ -~]")
FOLDED_SHAPE = re.compile(r"-[0-9a-f]{8}$")


def ascii_fold(text: str) -> str:
    """'Forêt n°1 (live)' -> 'Foret n1 (live)': decompose accents and drop what is not ASCII."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def short_hash(text: str) -> str:
    """8 hex digits of the SHA-1 of a relative path (undecodable bytes kept as they were)."""
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def has_folded_shape(stem: str) -> bool:
    return bool(FOLDED_SHAPE.search(stem))


def pfs_path(rel: str) -> str:
    """The PFS path ('/a/b.mp3') for a local path relative to the folder being put."""
    def clean(part: str) -> str:
        return PFS_GLOB_CHARS.sub("_", PFS_NOT_PRINTABLE.sub("_", ascii_fold(part))) or "_"

    parts = PurePosixPath(rel).parts
    cleaned = [clean(p) for p in parts]
    name = cleaned[-1]
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        stem, suffix = name, ""
    if cleaned != list(parts) or has_folded_shape(stem):
        stem = f"{stem}-{short_hash(rel)}"
    return "/" + "/".join([*cleaned[:-1], f"{stem}.{suffix}" if suffix else stem])


def refused(path: str) -> str | None:
    """Why a PFS repo would refuse this file path, or None when it accepts it."""
    if PFS_NOT_PRINTABLE.search(path):
        return "PFS accepts only printable ASCII in paths"
    if PFS_GLOB_CHARS.search(path):
        return "PFS refuses the characters *?[]{}!()@+^ in paths"
    return None
