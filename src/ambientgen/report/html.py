"""`ambientgen report`: one static HTML page for a run (inputs, transcriptions, data set, training, music).

RUN_DIR holds one folder per repo of the chain (audio-unprocessed/, audio-processed/, audio-processed-wav/, midi/,
transformer-preprocess/, music-transformer/, music-transformer-generate/, ambient-render/) and may hold run.json
(the run's parameters). Missing folders are shown as missing. Pictures the run lacks (piano rolls of the
transcriptions and generated pieces, training curves) are drawn into REPORT_files/ beside the page and redrawn
only when their source changes. Every image and audio file is referenced by a relative URL, so the page works
when its folder is moved or served as static files; every name is HTML-escaped. The page has no script and
loads nothing from the network.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import __version__
from ..music.midi_io import MIDI_SUFFIXES
from ..util import AUDIO_SUFFIXES, StageError, atomic_path, progress

HELP = "write one static HTML page for a run: inputs, piano rolls, data set, training curves, audio players"
EXAMPLES = """
  ambientgen report runs/demo
  ambientgen report runs/demo -o /tmp/demo-report.html --max-rolls 20
"""
REPOS = ("audio-unprocessed", "audio-processed", "audio-processed-wav", "midi", "transformer-preprocess",
         "music-transformer", "generation-config", "music-transformer-generate", "ambient-render")
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
h4{margin:.8em 0 .2em}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:0 1.2em}
"""


@dataclass
class Report:
    """The page being built: sections of HTML and the files it refers to."""

    run_dir: Path
    out_html: Path
    assets: Path
    max_rolls: int
    sections: list[tuple[str, str, str]] = field(default_factory=list)  # (anchor, title, html)
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
    head = "".join(f"<th>{esc(k)}</th>" for k in keys)
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
    body = "".join(f"<tr><th>{esc(k)}</th><td>{fmt(v)}</td></tr>" for k, v in plain)
    out = f"<table>{body}</table>" if plain else ""
    for k, v in rows:
        if is_records(v):
            out += f"<h4>{esc(k)}</h4>" + records_table(v)
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
    from .pianoroll import save_pianoroll

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


# --------------------------------------------------------------------------------------------------- sections
def section_inputs(report: Report) -> str:
    raw = report.repo("audio-unprocessed")
    parts = []
    if raw is None:
        parts.append('<p class="missing">audio-unprocessed/ is not in this run.</p>')
    else:
        files = files_in(raw)
        audio = [p for p in files if p.suffix.lower() in AUDIO_SUFFIXES]
        report.counts["inputs"] = len(audio)
        total = 0.0
        rows = []
        for p in audio:
            d = audio_duration(p)
            total += d or 0.0
            rows.append(f"<tr><td>{esc(p.relative_to(raw).as_posix())}</td><td class=num>{human_size(p.stat().st_size)}"
                        f"</td><td class=num>{human_time(d)}</td><td>{audio_tag(report, p)}</td></tr>")
        parts.append(f"<p>{len(audio)} audio files, {human_time(total)} in all"
                     + (f" ({len(files) - len(audio)} other files)" if len(files) > len(audio) else "") + ".</p>")
        if rows:
            parts.append("<table><tr><th>file</th><th>size</th><th>length</th><th>listen</th></tr>"
                         + "".join(rows) + "</table>")
    for name, what in (("audio-processed", "files with safe names"), ("audio-processed-wav", "WAV files (mono 16 kHz)")):
        folder = report.repo(name)
        if folder is None:
            parts.append(f'<p class="missing">{esc(name)}/ is not in this run.</p>')
            continue
        files = files_in(folder)
        parts.append(f"<p><strong>{esc(name)}</strong>: {len(files)} {what}, {human_size(sum(p.stat().st_size for p in files))}"
                     "</p>")
    return "".join(parts)


def section_transcriptions(report: Report) -> str:
    folder = report.repo("midi")
    if folder is None:
        return '<p class="missing">midi/ is not in this run.</p>'
    midis = files_in(folder, MIDI_SUFFIXES)
    report.counts["transcriptions"] = len(midis)
    cards = []
    for mid in progress(midis[: report.max_rolls], "report: transcriptions", unit="file"):
        side = mid.with_suffix(".json")
        facts = read_json(side, report) if side.is_file() else None
        keys = ("source", "backend", "notes", "duration_s", "pitch_min", "pitch_max")
        fact_text = " · ".join(f"{esc(k)}: {fmt(facts[k])}" for k in keys if isinstance(facts, dict) and k in facts)
        cards.append(f'<div class="card"><h3>{esc(mid.relative_to(folder).as_posix())}</h3>'
                     f'<div class="facts">{fact_text}</div>{roll_for(report, mid, "midi")}</div>')
    more = len(midis) - len(cards)
    note = f'<p class="missing">{more} more not shown (--max-rolls {report.max_rolls}).</p>' if more > 0 else ""
    return f"<p>{len(midis)} MIDI transcriptions.</p><div class=grid>{''.join(cards)}</div>{note}"


def section_dataset(report: Report) -> str:
    folder = report.repo("transformer-preprocess")
    if folder is None:
        return '<p class="missing">transformer-preprocess/ is not in this run.</p>'
    parts = []
    summary = folder / "summary.json"
    if summary.is_file():
        data = read_json(summary, report)
        if data is not None:
            parts.append(kv_table(data))
    else:
        parts.append('<p class="missing">no summary.json</p>')
    records = [p for p in files_in(folder) if p.suffix == ".tfrecord" or ".tfrecord-" in p.name]
    if records:
        rows = "".join(f"<tr><td>{esc(p.relative_to(folder).as_posix())}</td><td class=num>"
                       f"{human_size(p.stat().st_size)}</td></tr>" for p in records)
        parts.append(f"<table><tr><th>TFRecord file</th><th>size</th></tr>{rows}</table>")
    return "".join(parts)


def section_training(report: Report) -> str:
    from .curves import read_metrics, save_curves, summarize

    folder = report.repo("music-transformer")
    if folder is None:
        return '<p class="missing">music-transformer/ is not in this run.</p>'
    parts = []
    metrics = folder / "metrics.csv"
    if metrics.is_file():
        png = report.assets / "training-curves.png"
        try:
            if not png.is_file() or png.stat().st_mtime < metrics.stat().st_mtime:
                save_curves(metrics, png, title="training curves")
            summary = summarize(read_metrics(metrics))
            parts.append(kv_table(summary) if summary else '<p class="missing">metrics.csv has no rows yet.</p>')
            parts.append(f'<img src="{report.url(png)}" alt="training curves" style="max-width:100%">')
        except StageError as exc:
            report.problems.append(str(exc))
            parts.append(f'<p class="missing">{esc(exc)}</p>')
        parts.append(f'<p><a href="{report.url(metrics)}">metrics.csv</a></p>')
    else:
        parts.append('<p class="missing">no metrics.csv</p>')
    config = folder / "config.json"
    if config.is_file():
        data = read_json(config, report)
        if data is not None:
            parts.append("<h3>model configuration</h3>" + kv_table(data))
    weights = folder / "model.safetensors"
    if weights.is_file():
        parts.append(f"<p>model.safetensors: {human_size(weights.stat().st_size)}</p>")
    return "".join(parts)


def section_generated(report: Report) -> str:
    gen = report.repo("music-transformer-generate")
    ren = report.repo("ambient-render")
    if gen is None and ren is None:
        return '<p class="missing">music-transformer-generate/ and ambient-render/ are not in this run.</p>'
    midis = {p.relative_to(gen).with_suffix("").as_posix(): p for p in files_in(gen, MIDI_SUFFIXES)} if gen else {}
    rendered: dict[str, dict[str, Path]] = {}
    for p in files_in(ren):
        rendered.setdefault(p.relative_to(ren).with_suffix("").as_posix(), {})[p.suffix.lower()] = p
    stems = sorted(set(midis) | {s for s, f in rendered.items() if f.keys() & (AUDIO_SUFFIXES | MIDI_SUFFIXES)})
    report.counts["generated"] = len(midis)
    report.counts["rendered"] = sum(1 for f in rendered.values() if f.keys() & AUDIO_SUFFIXES)
    cards = []
    for stem in progress(stems, "report: generated", unit="piece"):
        mid, files = midis.get(stem), rendered.get(stem, {})
        facts = []
        if mid is not None and mid.with_suffix(".json").is_file():
            side = read_json(mid.with_suffix(".json"), report)
            if isinstance(side, dict):
                req = side.get("request") if isinstance(side.get("request"), dict) else {}
                for key, val in (("notes", side.get("notes")), ("seconds", side.get("seconds")),
                                 ("temperature", req.get("temperature")), ("top_p", req.get("top_p")),
                                 ("top_k", req.get("top_k")), ("seed", req.get("seed")),
                                 ("model step", (side.get("model") or {}).get("step")
                                  if isinstance(side.get("model"), dict) else None)):
                    if val is not None:
                        facts.append(f"{esc(key)}: {fmt(val)}")
        if ".json" in files:
            info = read_json(files[".json"], report)
            if isinstance(info, dict):
                for key in ("preset", "duration_seconds", "loudness_lufs", "loop_minutes"):
                    if info.get(key) is not None:
                        facts.append(f"{esc(key)}: {fmt(info[key])}")
        players = []
        for suffix in (".mp3", ".ogg", ".flac", ".wav"):
            if suffix in files:
                players.append(audio_tag(report, files[suffix]))
                break
        links = [f'<a href="{report.url(p)}">{esc(p.name)}</a>' for s, p in sorted(files.items())
                 if s in AUDIO_SUFFIXES]
        if mid is not None:
            links.insert(0, f'<a href="{report.url(mid)}">{esc(mid.name)}</a>')
        if mid is not None:
            roll = roll_for(report, mid, "generated", files.get(".png"))
        elif ".png" in files:
            roll = f'<img src="{report.url(files[".png"])}" alt="piano roll of {esc(stem)}">'
        else:
            roll = ""
        if not players:
            players.append('<p class="missing">not rendered to audio in this run</p>')
        cards.append(f'<div class="card"><h3>{esc(stem)}</h3><div class="facts">{" · ".join(facts)}</div>'
                     f'{"".join(players)}<div class="facts">{" · ".join(links)}</div>{roll}</div>')
    return f"<p>{len(midis)} generated pieces, {report.counts['rendered']} rendered.</p><div class=grid>" \
        f"{''.join(cards)}</div>"


QUALITY_ROWS = (
    ("notes_per_s", "notes per second", ""), ("polyphony", "notes sounding at once", ""),
    ("duration_p50", "note duration, median", " s"), ("duration_p90", "note duration, 90th percentile", " s"),
    ("pitch_class_overlap", "pitch-class overlap with the transcriptions, per piece", ""),
    ("interval_overlap", "melodic-interval overlap with the transcriptions, per piece", ""),
    ("interval_overlap_set", "melodic-interval overlap with the transcriptions, all pieces together", ""),
    ("stuck_rate", "stuck notes (share)", ""), ("longest_copy", "longest run copied from training (events)", ""),
    ("copied_windows", "16-event windows found in training (share)", ""),
)


def section_quality(report: Report) -> str:
    """Generated music measured against the transcriptions it learned from (ambientgen evaluate-generation)."""
    from ..music.quality import evaluate_generation

    gen, ref = report.repo("music-transformer-generate"), report.repo("midi")
    if gen is None or ref is None:
        return '<p class="missing">needs music-transformer-generate/ and midi/ in this run.</p>'
    try:
        try:
            res = evaluate_generation(gen, ref, report.repo("transformer-preprocess"))
        except StageError as exc:  # no readable data set: search the transcriptions themselves for copies
            report.problems.append(f"generation quality: {exc}")
            res = evaluate_generation(gen, ref)
    except StageError as exc:
        return f'<p class="missing">{esc(exc)}</p>'
    g, r = res["generated"], res["reference"]
    rows = "".join(f"<tr><td>{esc(label)}</td><td>{fmt(g.get(k))}{unit}</td><td>"
                   f"{'' if r.get(k) is None else fmt(r.get(k)) + unit}</td></tr>" for k, label, unit in QUALITY_ROWS
                   if g.get(k) is not None)
    rows += (f"<tr><td>melodic-interval overlap between two halves of the transcriptions</td><td></td>"
             f"<td>{fmt(r.get('interval_overlap_halves'))}</td></tr>")
    pieces = records_table([{k: v for k, v in p.items() if k in ("file", "notes", "polyphony", "duration_p90",
                                                                 "stuck_rate", "interval_overlap", "longest_copy")}
                            for p in res["pieces"]])
    return ("<p>How the generated pieces compare with the transcriptions they learned from: closer to the right-hand "
            f"column is closer to your music. A stuck note lasts longer than {fmt(res['stuck_threshold_s'])} s "
            "(twice the transcriptions' 99th percentile).</p><table><tr><th>measure</th><th>generated</th>"
            f"<th>transcriptions</th></tr>{rows}</table><details><summary>per piece</summary>{pieces}</details>")


def section_parameters(report: Report) -> str:
    parts = []
    path = report.run_dir / "run.json"
    if not path.is_file():
        parts.append('<p class="missing">no run.json in this run.</p>')
    else:
        data = read_json(path, report)
        if data is None:
            parts.append('<p class="missing">run.json is not readable JSON.</p>')
        else:
            parts.append(kv_table(data) + f"<details><summary>run.json</summary><pre>"
                         f"{esc(json.dumps(data, indent=2))}</pre></details>")
    configs = report.repo("generation-config")
    if configs is not None:
        parts.append("<h3>generation requests (generation-config/)</h3>")
        for p in files_in(configs):
            if p.stat().st_size > 100_000:
                parts.append(f"<p>{esc(p.name)}: {human_size(p.stat().st_size)} (not shown)</p>")
                continue
            text = p.read_bytes().decode("utf-8", errors="replace")
            parts.append(f"<h4>{esc(p.relative_to(configs).as_posix())}</h4><pre>{esc(text)}</pre>")
    return "".join(parts)


# ------------------------------------------------------------------------------------------------------ page
def build_report(run_dir: str | Path, out_html: str | Path | None = None, max_rolls: int = 60) -> Path:
    """Write the HTML page for run_dir (default RUN_DIR/report.html) and its pictures; return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise StageError(run_dir, "run directory does not exist")
    out = Path(out_html) if out_html else run_dir / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = Report(run_dir=run_dir, out_html=out, assets=out.parent / f"{out.stem}_files", max_rolls=max_rolls)
    for anchor, title, build in (
        ("inputs", "Inputs", section_inputs),
        ("transcriptions", "Transcriptions", section_transcriptions),
        ("dataset", "Data set", section_dataset),
        ("training", "Training", section_training),
        ("generated", "Generated music", section_generated),
        ("quality", "Generation quality", section_quality),
        ("parameters", "Parameters", section_parameters),
    ):
        report.sections.append((anchor, title, build(report)))
    present = [r for r in REPOS if report.repo(r)]
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in report.sections)
    counts = ", ".join(f"{v} {k}" for k, v in report.counts.items())
    problems = ""
    if report.problems:
        problems = "<h2>Problems</h2><ul>" + "".join(f"<li>{esc(p)}</li>" for p in report.problems) + "</ul>"
    body = "".join(f'<section id="{a}"><h2>{esc(t)}</h2>{h}</section>' for a, t, h in report.sections)
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>ambientgen run: {esc(run_dir.resolve().name)}</title>"
        "<link rel=\"icon\" href=\"data:,\">"
        f"<style>{CSS}</style></head><body><header><h1>ambientgen run: {esc(run_dir.resolve().name)}</h1>"
        f"<div>{esc(counts)} · repos: {esc(', '.join(present) or 'none')} · written {esc(now)} by ambientgen "
        f"{esc(__version__)}</div><nav>{nav}</nav></header><main>{problems}{body}</main></body></html>\n"
    )
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("report: %s (%s)", out, counts or "empty run")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="run folder: one sub-folder per repo (midi/, music-transformer/, ...) + run.json")
    p.add_argument("-o", "--output", default=None, help="HTML file to write (default RUN_DIR/report.html)")
    p.add_argument("--max-rolls", type=int, default=60, help="most transcription piano rolls shown (default 60)")


def main(args: argparse.Namespace) -> int:
    print(build_report(args.run_dir, args.output, args.max_rolls))
    return 0
