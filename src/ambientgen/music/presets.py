"""Render presets: the instruments every note is played on, the effects, the beds under the music, and the
loudness and fades, read from a small TOML file (``ambientgen/assets/render_presets.toml`` or the user's own)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..util import StageError
from .beds import BedSpec, MotionSpec, parse_bed, parse_motion

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser from PyPI
    import tomli as tomllib

POLYPHONY = 64  # voices; the quietest released voices are stolen first (halves the cost of long pads)
EFFECT_TYPES = (
    "Reverb", "Delay", "Chorus", "Phaser", "LowpassFilter", "HighpassFilter", "LowShelfFilter", "HighShelfFilter",
    "PeakFilter", "Compressor", "Limiter", "Gain",
)


@dataclass
class Layer:
    """One instrument every note is played on."""

    program: int | None = None  # None: keep the MIDI file's programs (and its drums)
    velocity: float = 1.0
    transpose: int = 0
    pan: float = 0.0
    volume: float = 0.8


@dataclass
class Preset:
    name: str
    description: str = ""
    layers: list[Layer] = field(default_factory=lambda: [Layer(program=0)])
    effects: list[dict[str, Any]] = field(default_factory=list)
    fade_in: float = 1.0
    fade_out: float = 6.0
    crossfade: float = 8.0
    tail: float = 5.0
    loudness: float = -20.0
    polyphony: int = POLYPHONY
    beds: list[BedSpec] = field(default_factory=list)  # sounds under the music (noise, rain, binaural)
    motion: list[MotionSpec] = field(default_factory=list)  # slow movement of the music in the stereo field

    def board(self):
        """A fresh pedalboard.Pedalboard for this preset's effects."""
        import pedalboard

        return pedalboard.Pedalboard([getattr(pedalboard, fx["type"])(**{k: v for k, v in fx.items() if k != "type"})
                                      for fx in self.effects])


def default_presets_path() -> Path:
    """The presets file shipped with the package."""
    return Path(str(resources.files("ambientgen") / "assets" / "render_presets.toml"))


def load_presets(path: str | Path | None = None) -> tuple[dict[str, Preset], str]:
    """Read and check a presets TOML file; return ({name: Preset}, default preset name)."""
    import pedalboard

    path = Path(path) if path else default_presets_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(path, "presets file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StageError(path, f"not a valid TOML presets file ({exc})") from None
    table = data.get("presets")
    if not isinstance(table, dict) or not table:
        raise StageError(path, "no [presets.NAME] tables")
    presets: dict[str, Preset] = {}
    scalar = ("description", "fade_in", "fade_out", "crossfade", "tail", "loudness", "polyphony")
    for name, raw in table.items():
        where = f"preset {name!r}"
        if not isinstance(raw, dict):
            raise StageError(path, f"{where}: must be a table")
        unknown = set(raw) - {*scalar, "layers", "effects", "beds", "motion"}
        if unknown:
            raise StageError(path, f"{where}: unknown keys {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for key in scalar:
            if key in raw:
                want = str if key == "description" else (int, float)
                if not isinstance(raw[key], want) or isinstance(raw[key], bool):
                    raise StageError(path, f"{where}: {key} must be {'text' if want is str else 'a number'}")
                kwargs[key] = raw[key]
        for key in ("fade_in", "fade_out", "crossfade", "tail"):
            if kwargs.get(key, 0) < 0:
                raise StageError(path, f"{where}: {key} must be >= 0")
        if not isinstance(kwargs.get("polyphony", POLYPHONY), int) or not 1 <= kwargs.get("polyphony", POLYPHONY) <= 4096:
            raise StageError(path, f"{where}: polyphony must be a whole number 1-4096")
        layers = []
        for i, lay in enumerate(raw.get("layers", [{"program": 0}])):
            if not isinstance(lay, dict):
                raise StageError(path, f"{where}: layer {i + 1} must be a table")
            bad = set(lay) - {f.name for f in Layer.__dataclass_fields__.values()}
            if bad:
                raise StageError(path, f"{where}: layer {i + 1}: unknown keys {sorted(bad)}")
            layer = Layer(**lay)
            if layer.program is not None and not (isinstance(layer.program, int) and 0 <= layer.program <= 127):
                raise StageError(path, f"{where}: layer {i + 1}: program must be 0-127")
            if not (-1.0 <= layer.pan <= 1.0 and 0.0 <= layer.volume <= 1.0 and layer.velocity > 0):
                raise StageError(path, f"{where}: layer {i + 1}: pan -1..1, volume 0..1, velocity > 0")
            layers.append(layer)
        if not layers:
            raise StageError(path, f"{where}: needs at least one layer")
        effects = []
        for i, fx in enumerate(raw.get("effects", [])):
            kind = fx.get("type") if isinstance(fx, dict) else None
            if kind not in EFFECT_TYPES:
                raise StageError(path, f"{where}: effect {i + 1}: type must be one of {', '.join(EFFECT_TYPES)}")
            try:
                getattr(pedalboard, kind)(**{k: v for k, v in fx.items() if k != "type"})
            except (TypeError, ValueError) as exc:
                raise StageError(path, f"{where}: effect {i + 1} ({kind}): {exc}") from None
            effects.append(dict(fx))
        beds, motion = [], []
        for key, parse, out in (("beds", parse_bed, beds), ("motion", parse_motion, motion)):
            for i, item in enumerate(raw.get(key, [])):
                if not isinstance(item, dict):
                    raise StageError(path, f"{where}: {key} {i + 1} must be a table")
                try:
                    out.append(parse(item))
                except ValueError as exc:
                    raise StageError(path, f"{where}: {key} {i + 1}: {exc}") from None
        presets[name] = Preset(name=name, layers=layers, effects=effects, beds=beds, motion=motion, **kwargs)
    default = data.get("default", next(iter(presets)))
    if default not in presets:
        raise StageError(path, f"default preset {default!r} is not defined")
    return presets, default


def preset_lines() -> str:
    """'  name  description' for each shipped preset (for --help)."""
    try:
        data = tomllib.loads(default_presets_path().read_text(encoding="utf-8"))
        return "\n".join(f"  {name:<12} {p.get('description', '')}" for name, p in data["presets"].items())
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        return "  (shipped presets file not found)"


