"""Piano-roll pictures of MIDI files and NoteSequences (matplotlib, Agg canvas: no display, no pyplot state)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..util import StageError, atomic_path

log = logging.getLogger(__name__)

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MAX_WIDTH_IN = 24.0
MIN_WIDTH_IN = 8.0


@dataclass
class Note:
    start: float
    end: float
    pitch: int
    velocity: int
    part: int  # instrument index, for the colour
    is_drum: bool = False


def note_name(pitch: int) -> str:
    """60 -> 'C4'."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def extract_notes(source: Any) -> tuple[list[Note], str]:
    """Notes and a default title from a MIDI path, a pretty_midi.PrettyMIDI or a note_seq NoteSequence."""
    if isinstance(source, str | os.PathLike):
        from .midi_io import load_midi

        source_path = Path(source)  # the one MIDI reader, with its limits
        return extract_notes(load_midi(source_path, allow_empty=True))[0], source_path.name
    if hasattr(source, "instruments"):  # pretty_midi.PrettyMIDI
        notes = [Note(n.start, n.end, n.pitch, n.velocity, i, inst.is_drum)
                 for i, inst in enumerate(source.instruments) for n in inst.notes]
        return notes, ""
    if hasattr(source, "notes") and hasattr(source, "total_time"):  # note_seq NoteSequence
        parts = sorted({(n.instrument, n.program) for n in source.notes})
        index = {p: i for i, p in enumerate(parts)}
        notes = [Note(n.start_time, n.end_time, n.pitch, n.velocity, index[(n.instrument, n.program)], n.is_drum)
                 for n in source.notes]
        return notes, ""
    raise TypeError(f"expected a MIDI path, PrettyMIDI or NoteSequence, got {type(source).__name__}")


def save_pianoroll(source: Any, png_path: str | Path, title: str | None = None, dpi: int = 100) -> Path:
    """Draw the notes of a MIDI file (path), PrettyMIDI or NoteSequence as a piano roll PNG.

    Time runs left to right (seconds), pitch bottom to top (C of each octave labelled); each part has its own
    colour and a note's opacity follows its velocity. A file without notes gives a picture saying so.
    Raises StageError naming the file when a path is not readable MIDI.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    notes, default_title = extract_notes(source)
    png_path = Path(png_path)
    end = max((n.end for n in notes), default=0.0)
    width = min(MAX_WIDTH_IN, max(MIN_WIDTH_IN, end / 10.0))
    fig = Figure(figsize=(width, 4.0), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_facecolor("#14161c")
    if notes:
        lo = min(n.pitch for n in notes)
        hi = max(n.pitch for n in notes)
        lo, hi = max(0, lo - 2), min(127, hi + 2)
        starts = np.array([n.start for n in notes])
        ends = np.array([max(n.end, n.start + 0.02) for n in notes])
        pitch = np.array([n.pitch for n in notes], dtype=float)
        verts = np.stack([
            np.stack([starts, pitch - 0.4], axis=1), np.stack([ends, pitch - 0.4], axis=1),
            np.stack([ends, pitch + 0.4], axis=1), np.stack([starts, pitch + 0.4], axis=1),
        ], axis=1)
        palette = matplotlib.colormaps["tab10"]
        colours = np.array([palette(n.part % 10) for n in notes])
        colours[:, 3] = 0.35 + 0.65 * np.clip(np.array([n.velocity for n in notes]) / 127.0, 0, 1)
        ax.add_collection(PolyCollection(verts, facecolors=colours, edgecolors="none"))
        ax.set_xlim(0, max(end, 1.0))
        ax.set_ylim(lo - 0.5, hi + 0.5)
        cs = [p for p in range(lo, hi + 1) if p % 12 == 0]
        ax.set_yticks(cs)
        ax.set_yticklabels([note_name(p) for p in cs])
        for p in cs:
            ax.axhline(p - 0.5, color="#ffffff", alpha=0.08, linewidth=0.6)
    else:
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no notes", color="#cccccc", ha="center", va="center", fontsize=14)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("pitch")
    label = title if title is not None else default_title
    parts = len({n.part for n in notes})
    ax.set_title(f"{label}  —  {len(notes)} notes, {end:.1f} s" + (f", {parts} parts" if parts > 1 else ""),
                 fontsize=10, loc="left")
    fig.tight_layout()
    try:
        with atomic_path(png_path, suffix=".png") as tmp:
            fig.savefig(str(tmp), format="png", dpi=dpi)
    except OSError as exc:
        raise StageError(png_path, f"cannot write the piano roll ({exc})") from None
    log.debug("piano roll %s (%d notes)", png_path, len(notes))
    return png_path
