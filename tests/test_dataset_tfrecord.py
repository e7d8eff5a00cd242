"""TFRecord I/O: records read back, checksums enforced, NoteSequence records, TensorFlow compatibility."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from ambientgen.music import tfrecord_io as T
from ambientgen.util import StageError


def test_examples_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 390, size=n).astype(np.int64) for n in (0, 1, 7, 2048)]
    path = tmp_path / "perf.tfrecord"
    assert T.write_examples(path, ({"targets": s} for s in seqs)) == 4
    got = list(T.read_targets(path))
    assert len(got) == 4 and T.count_records(path) == 4
    for a, b in zip(got, seqs):
        assert a.dtype == np.int64
        np.testing.assert_array_equal(a, b)
    ex = next(T.read_examples(path))
    assert set(ex) == {"targets"}


def test_mixed_features(tmp_path):
    path = tmp_path / "x.tfrecord"
    T.write_examples(path, [{"targets": np.array([5, 6]), "inputs": np.array([0.5], dtype=np.float32), "id": b"a"}])
    ex = next(T.read_examples(path))
    np.testing.assert_array_equal(ex["targets"], [5, 6])
    np.testing.assert_allclose(ex["inputs"], [0.5])
    assert ex["id"] == [b"a"]


def test_framing_matches_the_tfrecord_package(tmp_path):
    """Our writer and the independent `tfrecord` package agree on framing and Example encoding."""
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("the tfrecord package's protos clash with TensorFlow's; the tensorflow test covers this")
    from tfrecord.reader import tfrecord_iterator
    from tfrecord.writer import TFRecordWriter

    path = tmp_path / "a.tfrecord"
    T.write_records(path, [b"hello", b"", b"x" * 1000])
    assert [bytes(r) for r in tfrecord_iterator(str(path))] == [b"hello", b"", b"x" * 1000]
    other = tmp_path / "b.tfrecord"
    w = TFRecordWriter(str(other))
    w.write({"targets": ([1, 2, 3], "int")})
    w.close()
    assert [list(t) for t in T.read_targets(other)] == [[1, 2, 3]]


def test_corruption_and_truncation_are_refused(tmp_path):
    path = tmp_path / "a.tfrecord"
    T.write_examples(path, [{"targets": np.arange(100)}, {"targets": np.arange(50)}])
    data = bytearray(path.read_bytes())
    bad = tmp_path / "bad.tfrecord"
    data[20] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(StageError, match="checksum"):
        list(T.read_targets(bad))
    cut = tmp_path / "cut.tfrecord"
    cut.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(StageError, match="truncated"):
        list(T.read_targets(cut))


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "a.tfrecord"
    with pytest.raises(ValueError):
        with T.RecordWriter(path) as w:
            w.write(b"one")
            raise ValueError("boom")
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_note_sequence_records(tmp_path, sample_midis):
    import note_seq

    seqs = [note_seq.midi_file_to_note_sequence(str(p)) for p in sample_midis]
    path = tmp_path / "ns.tfrecord"
    assert T.write_note_sequences(path, seqs) == len(seqs)
    back = list(T.read_note_sequences(path))
    assert back == seqs


@pytest.mark.tensorflow
def test_tensorflow_parses_our_files(tmp_path):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(1)
    seqs = [rng.integers(2, 390, size=n).astype(np.int64) for n in (3, 100, 2048)]
    path = tmp_path / "perf.tfrecord"
    T.write_examples(path, ({"targets": s} for s in seqs))
    spec = {"targets": tf.io.VarLenFeature(tf.int64)}
    got = [tf.sparse.to_dense(tf.io.parse_single_example(r, spec)["targets"]).numpy()
           for r in tf.data.TFRecordDataset(str(path))]
    assert len(got) == 3
    for a, b in zip(got, seqs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.tensorflow
def test_tensorflow_reads_a_built_data_set(tmp_path, sample_midis):
    tf = pytest.importorskip("tensorflow")
    import shutil

    from ambientgen.stages.make_dataset import DatasetOptions, make_dataset

    d = tmp_path / "midi"
    d.mkdir()
    for p in sample_midis[:2]:
        shutil.copy(p, d / p.name)
    make_dataset(d, tmp_path / "out", DatasetOptions(max_events=256, stretch=(1.0, 1.05), transpose=(0, 1)))
    spec = {"targets": tf.io.VarLenFeature(tf.int64)}

    def parse(record):
        return tf.io.parse_single_example(record, spec)

    for split in ("train", "eval", "test"):
        path = tmp_path / "out" / "performance" / f"{split}.tfrecord"
        ours = list(T.read_targets(path))
        theirs = [tf.sparse.to_dense(ex["targets"]).numpy() for ex in tf.data.TFRecordDataset(str(path)).map(parse)]
        assert len(theirs) == len(ours)
        for a, b in zip(theirs, ours):
            np.testing.assert_array_equal(a, b)
