"""The report page's building blocks: the page being built, escaping, numbers with units, tables, players and
piano rolls. Every name is HTML-escaped and every URL relative, so the page works wherever its folder goes."""

from __future__ import annotations

import html
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..util import StageError

log = logging.getLogger(__name__)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f5f2;color:#222}
header{background:#1d2230;color:#eee;padding:1.2em 2em}header h1{margin:0 0 .3em;font-weight:600}
header a{color:#9cc3ff}nav a{margin-right:1em}main{padding:0 2em 3em;max-width:1400px}
h2{border-bottom:2px solid #d9d4c7;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#ece8de}td.num{text-align:right;font-variant-numeric:tabular-nums}
.card{background:#fff;border:1px solid #e0dccf;border-radius:6px;padding:.8em 1em;margin:1em 0}
.card h3{margin:.1em 0 .4em;font-size:1.05em;word-break:break-all}.card img{max-width:100%;height:auto;display:block}
.facts{color:#555;font-size:.88em;margin:.2em 0 .6em}.missing{color:#8a6d3b;font-style:italic}
audio{width:100%;min-width:280px;max-width:520px;margin:.3em 0}.scroll{overflow-x:auto;max-width:100%}pre{background:#fff;border:1px solid #ddd;padding:.8em;overflow:auto}
h4{margin:.8em 0 .2em}code{background:#ece8de;padding:0 .3em;border-radius:3px;word-break:break-all}
.more{font-size:.88em;margin:.6em 0 0}details{margin:.4em 0}summary{cursor:pointer;color:#345}
section#technical>details{background:#fff;border:1px solid #e0dccf;border-radius:6px;padding:.4em .8em}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:0 1.2em}
"""


@dataclass
class Report:
    """The page being built: sections of HTML and the files it refers to."""

    run_dir: Path
    out_html: Path
    assets: Path
    max_rolls: int
    sections: list[tuple[str, str, str]] = field(default_factory=list)  # (anchor, title, html)
    technical: list[tuple[str, str]] = field(default_factory=list)  # (title, html) folded into the last section
    run_info: dict[str, Any] = field(default_factory=dict)  # run.json
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def url(self, path: Path) -> str:
        """Relative, percent-encoded and HTML-escaped URL of path as seen from the page."""
        rel = os.path.relpath(path.resolve(), self.out_html.parent.resolve())
        return html.escape(quote(Path(rel).as_posix(), safe="/"), quote=True)

    def repo(self, name: str) -> Path | None:
        path = self.run_dir / name
        return path if path.is_dir() else None


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A short, escaped rendering of a JSON value for a table cell."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return esc(f"{value:.4g}")
    if isinstance(value, dict | list):
        text = json.dumps(value, sort_keys=True)
        return esc(text if len(text) <= 160 else text[:157] + "...")
    return esc(value)


def number(value: Any, unit: str = "", digits: int = 2) -> str:
    """A number rounded for reading, with thousands separators and its unit ('' for anything else)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    text = f"{value:,.{digits}f}" if isinstance(value, float) or digits else f"{value:,}"
    if unit == "%":
        return text + "%"
    return f"{text} {unit}" if unit else text


def label(key: str) -> str:
    """A dotted JSON key as words: settings.limits.max_bytes -> settings › limits › max bytes."""
    return " › ".join(part.replace("_", " ") for part in key.split("."))


def human_size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def human_time(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as (dotted.key, value) rows; lists stay whole."""
    if isinstance(obj, dict):
        rows: list[tuple[str, Any]] = []
        for k in sorted(obj, key=str):
            rows += flatten(obj[k], f"{prefix}.{k}" if prefix else str(k))
        return rows
    return [(prefix, obj)]


def is_records(value: Any) -> bool:
    """A non-empty list of JSON objects (job lists, per-file summaries): shown as a table of its own."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def records_table(rows: list[dict[str, Any]], limit: int = 200) -> str:
    """One row per object, one column per key (nested values shortened)."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    head = "".join(f"<th>{esc(label(k))}</th>" for k in keys)
    body = []
    for row in rows[:limit]:
        cells = []
        for k in keys:
            v = row.get(k, "")
            if isinstance(v, list | dict) and len(json.dumps(v)) > 60:
                v = f"{len(v)} {'items' if isinstance(v, list) else 'keys'}"
            cls = ' class="num"' if isinstance(v, int | float) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{fmt(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f'<p class="missing">{len(rows) - limit} more rows not shown.</p>' if len(rows) > limit else ""
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(body)}</table></div>{more}'


def kv_table(obj: Any) -> str:
    """Nested JSON as a key/value table; lists of objects become tables of their own below it."""
    rows = flatten(obj)
    if not rows:
        return '<p class="missing">(empty)</p>'
    plain = [(k, v) for k, v in rows if not is_records(v)]
    body = "".join(f"<tr><th>{esc(label(k))}</th><td>{fmt(v)}</td></tr>" for k, v in plain)
    out = f"<table>{body}</table>" if plain else ""
    for k, v in rows:
        if is_records(v):
            out += f"<h4>{esc(label(k))}</h4>" + records_table(v)
    return out


def read_json(path: Path, report: Report) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        report.problems.append(f"{path}: not readable JSON ({exc})")
        log.warning("%s: not readable JSON (%s)", path, exc)
        return None


def audio_duration(path: Path) -> float | None:
    try:
        import soundfile

        return float(soundfile.info(str(path)).duration)
    except Exception:  # libsndfile cannot read every format; the duration is only informative
        return None


def files_in(folder: Path | None, suffixes: set[str] | None = None) -> list[Path]:
    from ..util import iter_files

    if folder is None:
        return []
    return iter_files(folder, suffixes)


def audio_tag(report: Report, path: Path) -> str:
    return f'<audio controls preload="metadata" src="{report.url(path)}"></audio>'


def roll_for(report: Report, midi: Path, subdir: str, existing: Path | None = None) -> str:
    """<img> of midi's piano roll: existing PNG, or one drawn into the assets folder (when stale)."""
    from ..music.pianoroll import save_pianoroll

    if existing is not None and existing.is_file():
        png = existing
    else:
        png = report.assets / subdir / (midi.relative_to(report.run_dir).as_posix().replace("/", "__") + ".png")
        if not png.is_file() or png.stat().st_mtime < midi.stat().st_mtime:
            try:
                save_pianoroll(midi, png, title=midi.name)
            except StageError as exc:
                report.problems.append(str(exc))
                log.warning("%s", exc)
                return f'<p class="missing">no piano roll: {esc(exc.cause)}</p>'
    return f'<img src="{report.url(png)}" alt="piano roll of {esc(midi.name)}" loading="eager">'


