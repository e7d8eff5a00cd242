"""TFRecord files without TensorFlow: record framing, tf.train.Example features, NoteSequence records.

A TFRecord file is a sequence of records, each ``uint64 length | uint32 masked crc32c(length) | data |
uint32 masked crc32c(data)`` (little endian). The checksums are written and verified here (crc32c
package), so a truncated or corrupted file is refused with a clear error instead of being half read.

``tf.train.Example`` is built with protobuf from a descriptor declared here, in a private descriptor pool
and under its own package name: the wire format is TensorFlow's (``tf.data.TFRecordDataset`` +
``tf.io.parse_single_example`` read these files), but nothing is registered as ``tensorflow.Example``, so
this module and TensorFlow can be imported into one process in either order (the ``tfrecord`` package's
generated classes cannot: protobuf refuses the duplicate ``tensorflow.*`` symbols).

Nothing here unpickles anything: records are protocol buffers only.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from ..util import StageError, atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from note_seq.protobuf.music_pb2 import NoteSequence

_MASK_DELTA = 0xA282EAD8
_LEN = struct.Struct("<Q")
_CRC = struct.Struct("<I")
MAX_RECORD_BYTES = 1 << 30  # refuse absurd record lengths from a corrupted header


def masked_crc(data: bytes | memoryview) -> int:
    """TFRecord's masked CRC-32C of data."""
    import crc32c

    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


class RecordWriter:
    """Write TFRecord records to a file atomically: the file appears under its name only on close().

    Use as a context manager; on an exception the partial file is removed.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.count = 0
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._fh: IO[bytes] = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()

    def write(self, data: bytes) -> None:
        """Append one record."""
        header = _LEN.pack(len(data))
        self._fh.write(header)
        self._fh.write(_CRC.pack(masked_crc(header)))
        self._fh.write(data)
        self._fh.write(_CRC.pack(masked_crc(data)))
        self.count += 1

    def close(self) -> None:
        """Flush and move the file into place."""
        if self._fh.closed:
            return
        self._fh.close()
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        """Drop the partial file."""
        if self._fh.closed:
            return
        self._fh.close()
        self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_records(path: str | os.PathLike, records: Iterable[bytes]) -> int:
    """Write raw records to a TFRecord file atomically; returns how many were written."""
    with RecordWriter(path) as w:
        for rec in records:
            w.write(rec)
        return w.count


def read_records(path: str | os.PathLike, verify: bool = True) -> Iterator[bytes]:
    """Yield the raw records of a TFRecord file, checking both CRCs (StageError on a damaged file)."""
    path = Path(path)
    with open(path, "rb") as fh:
        index = 0
        while True:
            header = fh.read(_LEN.size)
            if not header:
                return
            crc = fh.read(_CRC.size)
            if len(header) != _LEN.size or len(crc) != _CRC.size:
                raise StageError(path, f"truncated TFRecord file (record {index} header)")
            (length,) = _LEN.unpack(header)
            if verify and _CRC.unpack(crc)[0] != masked_crc(header):
                raise StageError(path, f"corrupted TFRecord file (record {index} length checksum)")
            if length > MAX_RECORD_BYTES:
                raise StageError(path, f"record {index} claims {length} bytes, more than {MAX_RECORD_BYTES}")
            data = fh.read(length)
            crc = fh.read(_CRC.size)
            if len(data) != length or len(crc) != _CRC.size:
                raise StageError(path, f"truncated TFRecord file (record {index} data)")
            if verify and _CRC.unpack(crc)[0] != masked_crc(data):
                raise StageError(path, f"corrupted TFRecord file (record {index} data checksum)")
            yield data
            index += 1


def count_records(path: str | os.PathLike) -> int:
    """Number of records in a TFRecord file (reads lengths only, skips data)."""
    n = 0
    with open(path, "rb") as fh:
        while True:
            header = fh.read(_LEN.size)
            if len(header) < _LEN.size:
                return n
            (length,) = _LEN.unpack(header)
            fh.seek(_CRC.size + length + _CRC.size, os.SEEK_CUR)
            n += 1


# ---- tf.train.Example ----

@cache
def _example_classes() -> tuple[Any, Any]:
    """(Example, Feature) message classes, wire-compatible with tensorflow/core/example/{example,feature}.proto."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    pkg = "ambientgen.tf_example"
    fdp = descriptor_pb2.FileDescriptorProto(name="ambientgen/tf_example.proto", package=pkg, syntax="proto3")
    F = descriptor_pb2.FieldDescriptorProto
    for name, kind in (("BytesList", F.TYPE_BYTES), ("FloatList", F.TYPE_FLOAT), ("Int64List", F.TYPE_INT64)):
        fdp.message_type.add(name=name).field.add(name="value", number=1, type=kind, label=F.LABEL_REPEATED)
    feature = fdp.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (name, typ) in enumerate((("bytes_list", "BytesList"), ("float_list", "FloatList"),
                                          ("int64_list", "Int64List")), start=1):
        feature.field.add(name=name, number=number, type=F.TYPE_MESSAGE, type_name=f".{pkg}.{typ}",
                          label=F.LABEL_OPTIONAL, oneof_index=0)
    features = fdp.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, type_name=f".{pkg}.Feature", label=F.LABEL_OPTIONAL)
    features.field.add(name="feature", number=1, type=F.TYPE_MESSAGE, type_name=f".{pkg}.Features.FeatureEntry",
                       label=F.LABEL_REPEATED)
    fdp.message_type.add(name="Example").field.add(name="features", number=1, type=F.TYPE_MESSAGE,
                                                   type_name=f".{pkg}.Features", label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{pkg}.Example")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{pkg}.Feature")))

def serialize_example(features: Mapping[str, Any]) -> bytes:
    """dict feature -> array-like as a serialized tf.train.Example.

    Integer arrays become int64_list, floating arrays float_list, bytes/str (or lists of them) bytes_list.
    """
    example_cls, _ = _example_classes()
    ex = example_cls()
    for key, value in features.items():
        feat = ex.features.feature[key]
        if isinstance(value, bytes | str):
            value = [value]
        if isinstance(value, list | tuple) and value and isinstance(value[0], bytes | str):
            feat.bytes_list.value.extend(v.encode() if isinstance(v, str) else v for v in value)
            continue
        arr = np.asarray(value).ravel()
        if arr.dtype.kind in "iub":
            feat.int64_list.value.extend(arr.astype(np.int64).tolist())
            feat.int64_list.SetInParent()
        elif arr.dtype.kind == "f":
            feat.float_list.value.extend(arr.astype(np.float32).tolist())
            feat.float_list.SetInParent()
        else:
            raise TypeError(f"feature {key!r}: unsupported dtype {arr.dtype}")
    return ex.SerializeToString()


def parse_example(data: bytes) -> dict[str, np.ndarray | list[bytes]]:
    """A serialized tf.train.Example -> dict feature -> int64/float32 array or list of bytes."""
    example_cls, _ = _example_classes()
    ex = example_cls.FromString(data)
    out: dict[str, np.ndarray | list[bytes]] = {}
    for key, feat in ex.features.feature.items():
        kind = feat.WhichOneof("kind")
        if kind == "int64_list":
            out[key] = np.array(feat.int64_list.value, dtype=np.int64)
        elif kind == "float_list":
            out[key] = np.array(feat.float_list.value, dtype=np.float32)
        elif kind == "bytes_list":
            out[key] = list(feat.bytes_list.value)
        else:
            out[key] = np.zeros(0, dtype=np.int64)
    return out


def write_examples(path: str | os.PathLike, examples: Iterable[Mapping[str, Any]]) -> int:
    """Write dicts of feature -> np.ndarray as tf.train.Example records (atomically); returns the count."""
    return write_records(path, (serialize_example(ex) for ex in examples))


def read_examples(path: str | os.PathLike) -> Iterator[dict[str, np.ndarray | list[bytes]]]:
    """Yield each tf.train.Example of a TFRecord file as a dict (see parse_example)."""
    for i, rec in enumerate(read_records(path)):
        try:
            yield parse_example(rec)
        except Exception as exc:  # protobuf DecodeError and friends
            raise StageError(path, f"record {i} is not a tf.train.Example: {exc}") from exc


def read_targets(path: str | os.PathLike, feature: str = "targets") -> Iterator[np.ndarray]:
    """Yield the int64 `targets` feature of each tf.train.Example record as an int64 array."""
    example_cls, _ = _example_classes()
    for i, rec in enumerate(read_records(path)):
        try:
            ex = example_cls.FromString(rec)
        except Exception as exc:
            raise StageError(path, f"record {i} is not a tf.train.Example: {exc}") from exc
        feat = ex.features.feature.get(feature)
        if feat is None or feat.WhichOneof("kind") not in ("int64_list", None):
            raise StageError(path, f"record {i} has no int64 feature {feature!r}")
        yield np.array(feat.int64_list.value, dtype=np.int64)


# ---- NoteSequence records (as Magenta's convert_dir_to_note_sequences writes them) ----

def write_note_sequences(path: str | os.PathLike, sequences: Iterable[NoteSequence]) -> int:
    """Write NoteSequence protos, one serialized proto per record (atomically); returns the count."""
    return write_records(path, (ns.SerializeToString() for ns in sequences))


def read_note_sequences(path: str | os.PathLike) -> Iterator[NoteSequence]:
    """Yield the NoteSequence protos of a TFRecord file."""
    from note_seq.protobuf import music_pb2

    for i, rec in enumerate(read_records(path)):
        try:
            yield music_pb2.NoteSequence.FromString(rec)
        except Exception as exc:
            raise StageError(path, f"record {i} is not a NoteSequence: {exc}") from exc


# ---- a data set folder (make-dataset's output) ----

def find_split(data_dir: Path, split: str) -> list[Path]:
    """TFRecord files of one split: DATA_DIR/performance/<split>*.tfrecord, else DATA_DIR/<split>*.tfrecord."""
    root = data_dir / "performance" if (data_dir / "performance").is_dir() else data_dir
    return sorted(p for p in root.glob(f"{split}*.tfrecord*") if p.is_file() and not p.name.startswith("."))


def load_split(data_dir: Path, split: str) -> list[np.ndarray]:
    """Every piece of a split as an int64 array (pieces shorter than 2 tokens are dropped)."""
    pieces = []
    for path in find_split(data_dir, split):
        try:
            for arr in read_targets(path):
                arr = np.asarray(arr, dtype=np.int64)
                if arr.size >= 2:
                    pieces.append(arr)
        except Exception as exc:  # a corrupt record file names itself
            raise StageError(path, f"cannot read TFRecord: {exc}") from exc
    return pieces
