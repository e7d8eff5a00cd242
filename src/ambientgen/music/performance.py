"""The score2perf "performance" event encoding, vectorised with numpy.

Identical ids to Magenta's ``MidiPerformanceEncoder`` (score2perf) built on note_seq's
``Performance`` + ``PerformanceOneHotEncoding`` with steps_per_second 100, max_shift_steps 100,
num_velocity_bins 32 and the full MIDI pitch range:

=========  =================  ==========================================
ids        event              meaning
=========  =================  ==========================================
0          PAD                padding (reserved, as tensor2tensor's PAD_ID)
1          EOS                end of sequence (reserved, as tensor2tensor's EOS_ID)
2-129      NOTE_ON 0-127      a note of this pitch starts
130-257    NOTE_OFF 0-127     the oldest sounding note of this pitch ends
258-357    TIME_SHIFT 1-100   move time forward by 10-1000 ms
358-389    VELOCITY 1-32      velocity bin for the following NOTE_ONs
=========  =================  ==========================================

Notes are quantised to 10 ms steps exactly as ``quantize_note_sequence_absolute`` does (round half up, a
note that would last 0 steps lasts 1) and events are ordered exactly as ``Performance`` orders them
(by step, then by the note's rank in (start time, pitch) order, onset before offset), so ``encode`` gives
the same ids as note_seq, only about two orders of magnitude faster.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from note_seq.protobuf.music_pb2 import NoteSequence

from ..vocab import (  # noqa: F401 (the layout is part of this module's interface)
    EOS_ID,
    MAX_SHIFT_STEPS,
    NOTE_OFF_OFFSET,
    NOTE_ON_OFFSET,
    NUM_EVENTS,
    NUM_PITCHES,
    NUM_RESERVED_IDS,
    NUM_VELOCITY_BINS,
    PAD_ID,
    STEPS_PER_SECOND,
    TIME_SHIFT_OFFSET,
    VELOCITY_OFFSET,
    VOCAB_SIZE,
)

# note_seq.performance_lib: bins of ceil(127 / 32) = 4 velocities, bin 1 starting at velocity 1.
VELOCITY_BIN_SIZE = -(-127 // NUM_VELOCITY_BINS)
DEFAULT_VELOCITY = 100  # velocity of notes decoded before any VELOCITY event (note_seq's default)


def velocity_to_bin(velocity: np.ndarray | int) -> np.ndarray | int:
    """MIDI velocity (1-127; lower is clamped to 1) -> velocity bin 1-32, as note_seq computes it."""
    return (np.clip(velocity, 1, 127) - 1) // VELOCITY_BIN_SIZE + 1


def bin_to_velocity(vbin: int) -> int:
    """Velocity bin 1-32 -> the MIDI velocity note_seq decodes it to (1, 5, ..., 125)."""
    return 1 + (vbin - 1) * VELOCITY_BIN_SIZE


def quantize(seconds: np.ndarray) -> np.ndarray:
    """Seconds -> 10 ms steps, rounding half up like note_seq.sequences_lib.quantize_to_step."""
    return (np.asarray(seconds, dtype=np.float64) * STEPS_PER_SECOND + 0.5).astype(np.int64)


SUSTAIN_CC = 64


def note_arrays(ns: NoteSequence, drop_drums: bool = True,
                sustain: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(start seconds, end seconds, pitch, velocity) arrays of a NoteSequence's notes, in proto order.

    With sustain=True a sequence that has sustain pedal events (CC 64) gets them applied first, as
    score2perf does (note_seq.sequences_lib.apply_sustain_control_changes); one without pedal, like every
    transcription, is used as it is.
    """
    if sustain and any(cc.control_number == SUSTAIN_CC for cc in ns.control_changes):
        from note_seq import sequences_lib

        ns = sequences_lib.apply_sustain_control_changes(ns, SUSTAIN_CC)
    notes = [n for n in ns.notes if not (drop_drums and n.is_drum)]
    start = np.fromiter((n.start_time for n in notes), dtype=np.float64, count=len(notes))
    end = np.fromiter((n.end_time for n in notes), dtype=np.float64, count=len(notes))
    pitch = np.fromiter((n.pitch for n in notes), dtype=np.int64, count=len(notes))
    velocity = np.fromiter((n.velocity for n in notes), dtype=np.int64, count=len(notes))
    return start, end, pitch, velocity


def encode_arrays(start: np.ndarray, end: np.ndarray, pitch: np.ndarray, velocity: np.ndarray) -> np.ndarray:
    """Encode notes given as parallel arrays (seconds, seconds, MIDI pitch, MIDI velocity) to event ids.

    Notes with a pitch outside 0-127, a negative or non-finite time, or an end before their start are
    skipped (note_seq would raise on them); velocities are clamped to 1-127.
    """
    start = np.asarray(start, dtype=np.float64)
    end = np.asarray(end, dtype=np.float64)
    pitch = np.asarray(pitch, dtype=np.int64)
    velocity = np.asarray(velocity, dtype=np.int64)
    ok = (pitch >= 0) & (pitch < NUM_PITCHES) & np.isfinite(start) & np.isfinite(end) & (start >= 0) & (end >= start)
    if not ok.all():
        start, end, pitch, velocity = start[ok], end[ok], pitch[ok], velocity[ok]
    n = len(start)
    if n == 0:
        return np.zeros(0, dtype=np.int64)

    # Performance sorts notes by (start_time, pitch); Python's sort is stable and so is lexsort.
    order = np.lexsort((pitch, start))
    qs = quantize(start[order])
    qe = quantize(end[order])
    qe[qe == qs] += 1
    pitch = pitch[order]
    vbin = velocity_to_bin(velocity[order])

    # Events (step, note rank, is_offset) sorted lexicographically, as Performance does.
    steps = np.concatenate([qs, qe])
    rank = np.concatenate([np.arange(n), np.arange(n)])
    is_off = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64)])
    ev = np.lexsort((is_off, rank, steps))
    steps, rank, is_off = steps[ev], rank[ev], is_off[ev]
    ev_pitch = pitch[rank]
    ev_bin = vbin[rank]

    # A VELOCITY event precedes a NOTE_ON whose bin differs from the previous NOTE_ON's (initially 0).
    on = is_off == 0
    on_bins = ev_bin[on]
    prev = np.concatenate([[0], on_bins[:-1]])
    need_vel = np.zeros(len(steps), dtype=bool)
    need_vel[on] = on_bins != prev

    # Time shifts: a gap of d > 0 steps becomes ceil(d / 100) shifts, all 100 but the last.
    delta = np.diff(steps, prepend=0)
    n_shift = -(-delta // MAX_SHIFT_STEPS)
    counts = n_shift + need_vel + 1
    ends = np.cumsum(counts)
    total = int(ends[-1])
    out = np.full(total, TIME_SHIFT_OFFSET + MAX_SHIFT_STEPS - 1, dtype=np.int64)
    note_pos = ends - 1
    out[note_pos] = np.where(on, NOTE_ON_OFFSET + ev_pitch, NOTE_OFF_OFFSET + ev_pitch)
    vel_pos = note_pos[need_vel] - 1
    out[vel_pos] = VELOCITY_OFFSET + ev_bin[need_vel] - 1
    has_shift = n_shift > 0
    last_shift_pos = note_pos[has_shift] - need_vel[has_shift] - 1
    remainder = delta[has_shift] - (n_shift[has_shift] - 1) * MAX_SHIFT_STEPS
    out[last_shift_pos] = TIME_SHIFT_OFFSET + remainder - 1
    return out


def encode(ns: NoteSequence, drop_drums: bool = True, sustain: bool = True) -> np.ndarray:
    """NoteSequence -> int64 event ids (offset by the 2 reserved ids, no EOS), all instruments merged.

    The sustain pedal is applied when the sequence has one (sustain=False: notes as they are); a sequence
    without pedal encodes as it is. Drum notes are dropped unless drop_drums=False.
    """
    return encode_arrays(*note_arrays(ns, drop_drums=drop_drums, sustain=sustain))


def _note_spans(ids: Iterable[int] | np.ndarray) -> tuple[list[tuple[int, int, int, int]],
                                                          dict[int, deque[tuple[int, int]]], int]:
    """Pair NOTE_ONs with NOTE_OFFs (an off ends the oldest sounding note of its pitch; one for a silent pitch is
    ignored): ([(pitch, start step, end step, velocity)], {pitch: notes still sounding}, the last step)."""
    sounding: dict[int, deque[tuple[int, int]]] = {}
    step = 0
    velocity = DEFAULT_VELOCITY
    spent: list[tuple[int, int, int, int]] = []
    for raw in _flat(ids):
        i = int(raw)
        if i < NOTE_ON_OFFSET or i >= VOCAB_SIZE:
            continue
        if i < NOTE_OFF_OFFSET:
            sounding.setdefault(i - NOTE_ON_OFFSET, deque()).append((step, velocity))
        elif i < TIME_SHIFT_OFFSET:
            queue = sounding.get(i - NOTE_OFF_OFFSET)
            if queue:
                start, vel = queue.popleft()
                spent.append((i - NOTE_OFF_OFFSET, start, step, vel))
        elif i < VELOCITY_OFFSET:
            step += i - TIME_SHIFT_OFFSET + 1
        else:
            velocity = bin_to_velocity(i - VELOCITY_OFFSET + 1)
    return spent, sounding, step


def decode(ids: Iterable[int] | np.ndarray, program: int = 0) -> NoteSequence:
    """Event ids -> NoteSequence, as note_seq's Performance.to_sequence does it.

    PAD, EOS and ids outside the vocabulary are ignored; a NOTE_OFF with no sounding note of its pitch is
    ignored; zero-length notes are dropped; notes still sounding at the end are closed there.
    """
    from note_seq.protobuf import music_pb2

    seq = music_pb2.NoteSequence()
    seq.ticks_per_quarter = 220  # note_seq's STANDARD_PPQ
    spent, sounding, step = _note_spans(ids)
    for pitch, queue in sounding.items():
        spent.extend((pitch, start, step, vel) for start, vel in queue)
    for pitch, start, stop, vel in spent:
        if stop == start:
            continue
        note = seq.notes.add(pitch=pitch, velocity=vel, program=program, instrument=0, is_drum=False,
                             start_time=start / STEPS_PER_SECOND, end_time=stop / STEPS_PER_SECOND)
        seq.total_time = max(seq.total_time, note.end_time)
    return seq


def event_name(i: int) -> str:
    """A readable name for one id: PAD, EOS, ON60, OFF60, SHIFT10 (steps of 10 ms), VEL20, or ?999."""
    i = int(i)
    if i == PAD_ID:
        return "PAD"
    if i == EOS_ID:
        return "EOS"
    if NOTE_ON_OFFSET <= i < NOTE_OFF_OFFSET:
        return f"ON{i - NOTE_ON_OFFSET}"
    if NOTE_OFF_OFFSET <= i < TIME_SHIFT_OFFSET:
        return f"OFF{i - NOTE_OFF_OFFSET}"
    if TIME_SHIFT_OFFSET <= i < VELOCITY_OFFSET:
        return f"SHIFT{i - TIME_SHIFT_OFFSET + 1}"
    if VELOCITY_OFFSET <= i < VOCAB_SIZE:
        return f"VEL{i - VELOCITY_OFFSET + 1}"
    return f"?{i}"


def event_names(ids: Iterable[int] | np.ndarray) -> list[str]:
    """Readable names of a sequence of ids, for debugging (see event_name)."""
    return [event_name(i) for i in _flat(ids)]


def _flat(ids: Any) -> list:
    """Ids from a list, numpy array or torch tensor (any shape) as a flat Python list."""
    return np.asarray(ids.tolist() if hasattr(ids, "tolist") else list(ids)).ravel().tolist()


def event_type_counts(ids: Sequence[int] | np.ndarray) -> dict[str, Any]:
    """How often each event type occurs and how many distinct ids are used (for data set summaries)."""
    a = np.asarray(ids, dtype=np.int64)
    return {
        "note_on": int(((a >= NOTE_ON_OFFSET) & (a < NOTE_OFF_OFFSET)).sum()),
        "note_off": int(((a >= NOTE_OFF_OFFSET) & (a < TIME_SHIFT_OFFSET)).sum()),
        "time_shift": int(((a >= TIME_SHIFT_OFFSET) & (a < VELOCITY_OFFSET)).sum()),
        "velocity": int(((a >= VELOCITY_OFFSET) & (a < VOCAB_SIZE)).sum()),
        "distinct_ids": int(len(np.unique(a))),
    }


def note_seconds(pieces: Sequence[np.ndarray], limit: int = 400) -> dict[str, float] | None:
    """Percentiles of note length (seconds) in event sequences (``limit`` of them, evenly spread, so that a set
    made of parts in turn is measured as a whole), for the model's config.json: what a held note looks like in the
    music it learned from. None when they hold no notes."""
    if len(pieces) > limit:
        pieces = [pieces[int(i)] for i in np.linspace(0, len(pieces) - 1, limit)]
    lengths = [(stop - start) / STEPS_PER_SECOND for ids in pieces
               for _, start, stop, _ in _note_spans(ids)[0]]  # ended notes only: a window cuts the others
    if not lengths:
        return None
    p50, p90, p99 = np.percentile(lengths, [50, 90, 99])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
            "notes": len(lengths)}


class SoundingNotes:
    """The notes sounding in each row of a batch being generated: a constraint for ``generate_tokens``.

    * A NOTE_OFF may only end a note that is sounding: an off for a silent pitch means nothing (decoding drops
      it), and a model that spends its offs there leaves the sounding notes held. The model's probability of an
      off at this point is kept: the model still decides when a note ends, the constraint only which one it can
      be. (Masking the silent offs alone hands their probability to every other event, mostly to time shifts and
      new notes, so notes are held longer.) Each sounding note keeps the probability the model gives its own
      off; what the model gave silent pitches goes, with ``off_share="held"``, to the sounding notes in
      proportion to how long each has sounded, so a note just struck gets none of it and the note held
      longest the most; ``off_share="model"`` shares all of it as the model ranks the sounding notes.
    * With ``max_hold_steps`` (the hold guard), no note sounds longer than that: a time shift that would carry
      one past it is ruled out, and at the limit the row's next token is forced to be that note's NOTE_OFF, so
      the model sees the note end in its own context.

    ``ban(logits)`` masks (or forces) tokens before each draw; ``push(tokens)`` follows each new token.
    """

    DEPTH = 8  # sounding notes of one pitch at once (a ninth strike of a sounding pitch is ruled out)

    OFF_SHARES = ("held", "model")

    def __init__(self, prompt: Any, max_hold_steps: int | None = None, mask_offs: bool = True,
                 off_share: str = "held"):
        import torch

        if off_share not in self.OFF_SHARES:
            raise ValueError(f"off_share must be one of {', '.join(self.OFF_SHARES)}, not {off_share!r}")

        B = prompt.shape[0]
        self.count = torch.zeros(B, NUM_PITCHES, dtype=torch.int64, device=prompt.device)
        # onsets of the sounding notes of each pitch, oldest first: a NOTE_OFF ends the oldest, as decode does
        self.onset = torch.zeros(B, NUM_PITCHES, self.DEPTH, dtype=torch.int64, device=prompt.device)
        self.now = torch.zeros(B, dtype=torch.int64, device=prompt.device)
        self.max_hold = max_hold_steps
        self.mask_offs = mask_offs  # False: the hold guard alone
        self.off_share = off_share
        self.forced = torch.zeros(B, dtype=torch.int64)  # offs the hold guard forced, per row
        for col in prompt.T:
            self.push(col[:, None])

    def push(self, tok: Any) -> None:
        """Follow one token per row ((B, 1) ids)."""
        import torch

        t = tok[:, 0]
        rows = torch.arange(len(t), device=t.device)
        on = (t >= NOTE_ON_OFFSET) & (t < NOTE_OFF_OFFSET)
        off = (t >= NOTE_OFF_OFFSET) & (t < TIME_SHIFT_OFFSET)
        shift = (t >= TIME_SHIFT_OFFSET) & (t < VELOCITY_OFFSET)
        r, p = rows[on], t[on] - NOTE_ON_OFFSET
        keep = self.count[r, p] < self.DEPTH  # (a prompt may hold more: the extra ones are not followed)
        r, p = r[keep], p[keep]
        self.onset[r, p, self.count[r, p]] = self.now[r]
        self.count[r, p] += 1
        r, p = rows[off], t[off] - NOTE_OFF_OFFSET
        ended = self.count[r, p] > 0
        r, p = r[ended], p[ended]
        self.onset[r, p, :-1] = self.onset[r, p, 1:].clone()
        self.count[r, p] -= 1
        self.now[shift] += t[shift] - TIME_SHIFT_OFFSET + 1
        self.count[t == PAD_ID] = 0  # a finished row (PAD after its EOS) holds nothing more

    def ban(self, logits: Any) -> Any:
        """(B, V) logits with the offs of silent pitches at -inf and the off probability moved onto the sounding
        notes; a row with an overdue note gets only its off."""
        logits = logits.clone()
        ons = logits[:, NOTE_ON_OFFSET:NOTE_OFF_OFFSET]
        logits[:, NOTE_ON_OFFSET:NOTE_OFF_OFFSET] = ons.masked_fill(self.count >= self.DEPTH, float("-inf"))
        if self.mask_offs:
            offs = slice(NOTE_OFF_OFFSET, TIME_SHIFT_OFFSET)
            logits[:, offs] = self._share_offs(logits[:, offs])
        if self.max_hold is not None:
            held = self._held_steps().masked_fill(self.count == 0, -1)
            longest, pitch = held.max(dim=1)
            left = self.max_hold - longest  # steps the longest-held note may still sound
            sounding = longest >= 0
            # no time shift may carry a note past the limit ...
            for row in (sounding & (left > 0) & (left < MAX_SHIFT_STEPS)).nonzero().flatten().tolist():
                logits[row, TIME_SHIFT_OFFSET + int(left[row]):VELOCITY_OFFSET] = float("-inf")
            # ... and a note at its limit ends now
            overdue = (sounding & (left <= 0)).nonzero().flatten()
            if len(overdue):
                logits[overdue] = float("-inf")
                logits[overdue, NOTE_OFF_OFFSET + pitch[overdue]] = 0.0
                self.forced[overdue.cpu()] += 1
        return logits

    def _held_steps(self) -> Any:
        """(B, 128) steps each pitch's oldest sounding note has sounded (meaningless where nothing sounds)."""
        return self.now[:, None] - self.onset[:, :, 0]

    def _share_offs(self, offs: Any) -> Any:
        """(B, 128) off logits restricted to the sounding notes, with the model's total off probability kept
        (nothing sounding: no off at all)."""
        import torch

        x = offs.float()
        sounding = x.masked_fill(self.count == 0, float("-inf"))
        total = torch.logsumexp(x, 1, keepdim=True)
        kept = torch.logsumexp(sounding, 1, keepdim=True)
        if self.off_share == "model":
            lift = torch.where(torch.isfinite(kept), total - kept, torch.zeros_like(kept))
            return (sounding + lift).to(offs.dtype)
        # the silent pitches' share, log(e^total - e^kept), goes to the sounding notes by how long each has sounded
        stray = total + torch.log1p(-torch.exp(kept - total).clamp(max=1.0))
        held = self._held_steps().masked_fill(self.count == 0, 0).clamp(min=0).float()
        weight = torch.log(held / held.sum(1, keepdim=True).clamp(min=1.0))
        return torch.logaddexp(sounding, stray + weight).to(offs.dtype)


class Window(NamedTuple):
    """A training window that stands alone (``complete_window``)."""

    ids: np.ndarray  # the window's ids: the state at its start, then the stream
    context: int  # how many ids at its start restate the notes already sounding
    stop: int  # the stream's index after the window's last id


def complete_window(ids: np.ndarray, start: int, length: int, max_context: int | None = None) -> Window:
    """``ids`` from ``start`` as a training window of at most ``length`` ids that stands alone.

    A crop of an event stream starts inside held notes: their NOTE_OFFs come with no NOTE_ON before them, and a
    model trained on such crops learns that an off may name a pitch it never struck, so its generated offs miss
    the sounding notes and those are held for ever. Here the window opens with the state at ``start`` (the last
    VELOCITY, then a NOTE_ON for every note sounding: ``context`` ids, at most ``max_context``, default a quarter
    of ``length``), and an off with no sounding note of its pitch is dropped, so every off in the window ends a
    note struck in it.
    """
    ids = np.asarray(ids)
    max_context = length // 4 if max_context is None else max_context
    count = np.zeros(NUM_PITCHES, dtype=np.int64)
    for pitch, queue in _note_spans(ids[:start])[1].items():  # sounding at start, paired as decode pairs them
        count[pitch] = len(queue)
    out: list[int] = []
    if count.any() and max_context > 1:
        head = ids[:start]
        vel = head[head >= VELOCITY_OFFSET]
        if len(vel):
            out.append(int(vel[-1]))
        for pitch in np.flatnonzero(count):
            n = min(int(count[pitch]), max_context - len(out))
            out += [NOTE_ON_OFFSET + int(pitch)] * n
            count[pitch] = n
    else:
        count[:] = 0
    context, stop = len(out), start
    for k in range(start, len(ids)):
        if len(out) >= length:
            break
        i = int(ids[k])
        if NOTE_ON_OFFSET <= i < NOTE_OFF_OFFSET:
            count[i - NOTE_ON_OFFSET] += 1
        elif NOTE_OFF_OFFSET <= i < TIME_SHIFT_OFFSET:
            if count[i - NOTE_OFF_OFFSET] == 0:
                continue
            count[i - NOTE_OFF_OFFSET] -= 1
        out.append(i)
        stop = k + 1
    return Window(np.asarray(out, dtype=ids.dtype), context, stop)
