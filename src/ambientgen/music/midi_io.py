"""Robust, bounded MIDI reading: ``load_midi(path) -> NoteSequence`` or a StageError naming the file.

MIDI files come from users and from transcription, so every file is treated as untrusted. Before the full
parse (note_seq's ``midi_to_note_sequence``, i.e. pretty_midi + mido, the reader Magenta uses), a cheap
scan of the Standard MIDI File structure refuses what would be slow, huge or meaningless:

==================  =========================  ==================================================
limit               default                    why
==================  =========================  ==================================================
file size           64 MiB (``max_bytes``)     the parser holds every event in memory
notes               1,000,000 (``max_notes``)  counted by the scan before parsing
events              4,000,000 (``max_midi_events``) every event becomes a Python object in mido
duration            12 h (``max_seconds``)     absurdly slow tempi or huge delta times
tempo               >= 1,000 us per quarter    (60,000 bpm) absurdly fast tempi squash notes to 0
==================  =========================  ==================================================

pretty_midi builds a tick -> seconds table with one float per tick (and refuses 1e7 ticks: 8 minutes at
music21's 10,080 ticks per quarter note). A file whose last tick lies past 2**22 is rewritten with fewer
ticks per quarter note before parsing, down to 1 ms per tick at its slowest tempo (times move by at most
half a new tick, far below the encoding's 10 ms), so long high-resolution files load, and 5x faster.

A file with no notes, a malformed header or a truncated track is refused too. ``limits`` can be changed
per call (``MidiLimits``); the stages expose them as options.
"""

from __future__ import annotations

import logging
import os
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..util import StageError

if TYPE_CHECKING:  # pragma: no cover
    from note_seq.protobuf.music_pb2 import NoteSequence

log = logging.getLogger(__name__)

MIDI_SUFFIXES = frozenset({".mid", ".midi", ".kar", ".smf"})
# pretty_midi allocates one float64 per tick (tick -> seconds table) and refuses more than its MAX_TICK
# (1e7: only 6.3 h at 220 ticks per quarter and 120 bpm, 8 min at music21's 10080). A file past
# TABLE_TICKS (a 32 MiB table) is parsed at fewer ticks per quarter note (rescale_ticks), never past MAX_TICKS.
MAX_TICKS = 1 << 25
TABLE_TICKS = 1 << 22
MIN_TEMPO_US = 1_000  # microseconds per quarter note; faster is not music


@dataclass(frozen=True)
class MidiLimits:
    """Bounds for an untrusted MIDI file (see the module docstring)."""

    max_bytes: int = 64 * 1024 * 1024
    max_notes: int = 1_000_000
    max_seconds: float = 12 * 3600.0
    max_midi_events: int = 4_000_000


DEFAULT_LIMITS = MidiLimits()


@dataclass
class MidiScan:
    """What the structural scan found: format, track count, resolution, note-ons, ticks, duration."""

    format: int
    ntracks: int
    ticks_per_quarter: int
    notes: int
    max_tick: int
    seconds: float
    max_tempo_us: int = 500_000  # the slowest tempo (microseconds per quarter note)


def _vlq(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read a MIDI variable-length quantity (at most 4 bytes) at pos; return (value, new pos)."""
    value = 0
    for i in range(4):
        if pos >= end:
            raise ValueError("truncated variable-length number")
        b = data[pos]
        pos += 1
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            return value, pos
        if i == 3:
            break
    raise ValueError("variable-length number longer than 4 bytes")


_DATA_LEN = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}
_SYSTEM_LEN = {0xF1: 1, 0xF2: 2, 0xF3: 1}


def _track_chunks(data: bytes, ntracks: int, pos: int) -> list[tuple[int, int]]:
    """(start, end) of the data of each 'MTrk' chunk; other chunk types are skipped, as the standard says."""
    out: list[tuple[int, int]] = []
    while pos + 8 <= len(data) and len(out) < ntracks:
        ctype = data[pos:pos + 4]
        (clen,) = struct.unpack(">I", data[pos + 4:pos + 8])
        start, end = pos + 8, pos + 8 + clen
        pos = end
        if ctype != b"MTrk":
            continue
        if end > len(data):
            raise ValueError(f"track {len(out)} is truncated ({clen} bytes announced, {len(data) - start} present)")
        out.append((start, end))
    if not out:
        raise ValueError("no track chunk ('MTrk') in the file")
    return out


def _track_events(data: bytes, start: int, end: int, track: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield (absolute tick, first byte, end byte, status) of each event of one track chunk.

    data[first:end] is the event without its delta time (without its status byte under running status);
    status is 0xFF for meta events, 0xF0/0xF7 for sysex, else the (running) channel status.
    """
    tick, i, status = 0, start, 0
    while i < end:
        delta, i = _vlq(data, i, end)
        tick += delta
        if i >= end:
            raise ValueError(f"track {track} is truncated")
        first = i
        b = data[i]
        if b == 0xFF:
            if i + 2 > end:
                raise ValueError(f"track {track}: truncated meta event")
            mtype = data[i + 1]
            mlen, i = _vlq(data, i + 2, end)
            i += mlen
            if i > end:
                raise ValueError(f"track {track}: meta event runs past the end of the track")
            yield tick, first, i, 0xFF
            if mtype == 0x2F:
                return
        elif b in (0xF0, 0xF7):
            slen, i = _vlq(data, i + 1, end)
            i += slen
            if i > end:
                raise ValueError(f"track {track}: system exclusive message runs past the end of the track")
            yield tick, first, i, b
        elif b >= 0xF0:
            i += 1 + _SYSTEM_LEN.get(b, 0)
            yield tick, first, min(i, end), b
        else:
            if b & 0x80:
                status = b
                i += 1
            elif not status:
                raise ValueError(f"track {track}: data byte without a status byte")
            i += _DATA_LEN[status & 0xF0]
            if i > end:
                raise ValueError(f"track {track}: truncated event")
            yield tick, first, i, status


def _header(data: bytes) -> tuple[int, int, int, int]:
    """(format, ntracks, division, offset of the first chunk) of a Standard MIDI File, or ValueError."""
    if data[:4] == b"RIFF":
        raise ValueError("RIFF MIDI (.rmi) is not supported: extract the Standard MIDI File inside it")
    if len(data) < 14 or data[:4] != b"MThd":
        raise ValueError("not a Standard MIDI File (no 'MThd' header)")
    (hlen,) = struct.unpack(">I", data[4:8])
    if hlen < 6 or 8 + hlen > len(data):
        raise ValueError(f"malformed header (length {hlen})")
    fmt, ntracks, division = struct.unpack(">HHH", data[8:14])
    if fmt > 2:
        raise ValueError(f"unknown MIDI format {fmt}")
    if division & 0x8000:
        raise ValueError("SMPTE time division is not supported")
    if division == 0:
        raise ValueError("malformed header: 0 ticks per quarter note")
    return fmt, ntracks, division, 8 + hlen


def scan_midi(data: bytes, limits: MidiLimits = DEFAULT_LIMITS) -> MidiScan:
    """Walk the chunks and events of a Standard MIDI File without building objects.

    Raises ValueError with a human-readable cause when the structure is broken or a limit is exceeded.
    Stops as soon as a limit is passed, so the cost is bounded by the limits, not by the file.
    """
    fmt, ntracks, division, pos = _header(data)
    chunks = _track_chunks(data, ntracks, pos)
    notes = events = max_tick = 0
    tempos: list[tuple[int, int]] = []
    for t, (start, end) in enumerate(chunks):
        tick = 0
        for tick, first, last, status in _track_events(data, start, end, t):
            events += 1
            if events > limits.max_midi_events:
                raise ValueError(f"more than {limits.max_midi_events:,} MIDI events (limit max_midi_events)")
            if status == 0xFF:
                if data[first + 1] == 0x51 and last - first == 6 and data[first + 2] == 3:
                    tempo = int.from_bytes(data[first + 3:last], "big")
                    if tempo < MIN_TEMPO_US:
                        raise ValueError(f"absurd tempo: {tempo} microseconds per quarter note "
                                         f"(minimum {MIN_TEMPO_US})")
                    tempos.append((tick, tempo))
            elif status & 0xF0 == 0x90 and data[last - 1] > 0:
                notes += 1
                if notes > limits.max_notes:
                    raise ValueError(f"more than {limits.max_notes:,} notes (limit max_notes)")
        max_tick = max(max_tick, tick)
    seconds = _ticks_to_seconds(max_tick, division, tempos)
    if seconds > limits.max_seconds:
        raise ValueError(f"lasts {seconds / 3600:.1f} h, more than the limit of {limits.max_seconds / 3600:.1f} h "
                         "(max_seconds)")
    initial = [] if any(tick == 0 for tick, _ in tempos) else [500_000]  # 120 bpm until the first tempo event
    slowest = max([t for _, t in tempos] + initial)
    return MidiScan(fmt, len(chunks), division, notes, max_tick, seconds, slowest)


def rescale_ticks(data: bytes, new_division: int) -> bytes:
    """The same MIDI file at new_division ticks per quarter note.

    Every event is kept in its order with its bytes; only delta times and the header's division change,
    so times move by at most half a new tick. Unknown chunks are dropped.
    """
    fmt, ntracks, division, pos = _header(data)
    chunks = _track_chunks(data, ntracks, pos)
    out = bytearray(b"MThd" + struct.pack(">IHHH", 6, fmt, len(chunks), new_division))
    for t, (start, end) in enumerate(chunks):
        track = bytearray()
        prev = 0
        for tick, first, last, _ in _track_events(data, start, end, t):
            new_tick = (tick * new_division + division // 2) // division
            track += _vlq_bytes(new_tick - prev)
            track += data[first:last]
            prev = new_tick
        out += b"MTrk" + struct.pack(">I", len(track)) + track
    return bytes(out)


def parse_division(scan: MidiScan) -> int:
    """Ticks per quarter note to parse the file at: its own, or fewer when its tick table would be large.

    Above TABLE_TICKS ticks the resolution drops towards 1 ms per tick at the slowest tempo (never below),
    and always far enough to stay under MAX_TICKS.
    """
    division = scan.ticks_per_quarter
    if scan.max_tick <= TABLE_TICKS:
        return division
    fine_enough = -(-scan.max_tempo_us // 1000)  # 1 ms per tick at the slowest tempo
    wanted = max(division * TABLE_TICKS // scan.max_tick, fine_enough)
    return min(division, wanted, division * MAX_TICKS // scan.max_tick)


def _vlq_bytes(n: int) -> bytes:
    """A MIDI variable-length quantity."""
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def _ticks_to_seconds(tick: int, division: int, tempos: list[tuple[int, int]]) -> float:
    """Seconds at `tick` under a tempo map (default 120 bpm), as pretty_midi computes it."""
    seconds, last_tick, tempo = 0.0, 0, 500_000
    for t, new in sorted(tempos):
        if t >= tick:
            break
        seconds += (t - last_tick) * tempo / 1e6 / division
        last_tick, tempo = t, new
    return seconds + (tick - last_tick) * tempo / 1e6 / division


def midi_bytes_to_note_sequence(data: bytes, name: str | os.PathLike = "<bytes>",
                                limits: MidiLimits = DEFAULT_LIMITS, allow_empty: bool = False) -> NoteSequence:
    """Parse MIDI file contents into a NoteSequence, refusing broken or out-of-bounds files (StageError).

    A well-formed file without notes is an error too, unless ``allow_empty`` (then its empty sequence)."""
    if not data:
        raise StageError(name, "empty file")
    if len(data) > limits.max_bytes:
        raise StageError(name, f"file is {len(data) / 2**20:.1f} MiB, more than the limit of "
                               f"{limits.max_bytes / 2**20:.0f} MiB")
    try:
        scan = scan_midi(data, limits)
        division = parse_division(scan)
        if scan.notes and division != scan.ticks_per_quarter:
            if division < 1:
                raise ValueError(f"runs to tick {scan.max_tick:,} at {scan.ticks_per_quarter} ticks per quarter "
                                 "note (too long, or corrupt)")
            log.debug("%s: %s ticks at %d per quarter note; parsing at %d", name, scan.max_tick,
                      scan.ticks_per_quarter, division)
            data = rescale_ticks(data, division)
    except ValueError as exc:
        raise StageError(name, f"not a usable MIDI file: {exc}") from None
    if scan.notes == 0:
        if allow_empty:
            from note_seq.protobuf import music_pb2

            return music_pb2.NoteSequence(ticks_per_quarter=scan.ticks_per_quarter or 220)
        raise StageError(name, "MIDI file has no notes")
    import note_seq
    import pretty_midi

    if pretty_midi.pretty_midi.MAX_TICK < MAX_TICKS + 16:
        pretty_midi.pretty_midi.MAX_TICK = MAX_TICKS + 16
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pretty_midi warns about tempo events on non-zero tracks etc.
            ns = note_seq.midi_io.midi_to_note_sequence(data)
    except Exception as exc:  # pretty_midi/mido raise many exception types on malformed files
        cause = str(exc).replace("Midi decoding error ", "")
        raise StageError(name, f"not a readable MIDI file: {cause[:300]}") from None
    if not ns.notes and not allow_empty:
        raise StageError(name, f"MIDI file has no complete notes (none of its {scan.notes} note-ons is ended)")
    if len(ns.notes) > limits.max_notes:
        raise StageError(name, f"{len(ns.notes):,} notes, more than the limit of {limits.max_notes:,}")
    if not ns.total_time < limits.max_seconds:  # also catches NaN
        raise StageError(name, f"lasts {ns.total_time / 3600:.1f} h, more than the limit of "
                               f"{limits.max_seconds / 3600:.1f} h")
    return ns


def load_midi(path: str | os.PathLike, limits: MidiLimits = DEFAULT_LIMITS, allow_empty: bool = False) -> NoteSequence:
    """Read a MIDI file into a NoteSequence; StageError(path, cause) if it is unreadable, empty or too big.

    The sequence's ``filename`` is set to the file's name.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise StageError(path, f"file is {size / 2**20:.1f} MiB, more than the limit of "
                                   f"{limits.max_bytes / 2**20:.0f} MiB")
        data = path.read_bytes()
    except OSError as exc:
        raise StageError(path, f"cannot read: {exc.strerror or exc}") from None
    ns = midi_bytes_to_note_sequence(data, path, limits, allow_empty)
    ns.filename = path.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")  # proto strings are UTF-8
    return ns


def load_pretty_midi(path: str | os.PathLike, limits: MidiLimits = DEFAULT_LIMITS, allow_empty: bool = False):
    """The file as a pretty_midi.PrettyMIDI (what rendering and piano rolls draw from), read by load_midi."""
    import note_seq

    return note_seq.midi_io.note_sequence_to_pretty_midi(load_midi(path, limits, allow_empty))


def is_midi_path(path: str | os.PathLike) -> bool:
    """Whether the file name has a MIDI suffix (.mid, .midi, .kar, .smf)."""
    return Path(path).suffix.lower() in MIDI_SUFFIXES
