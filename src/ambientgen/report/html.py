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
import logging
from pathlib import Path

from .. import __version__
from ..chain import REPOS
from ..util import StageError, atomic_path
from .page import CSS, Report, esc
from .sections import section_inputs, section_pieces, section_quality, section_technical, section_training

HELP = "write one static HTML page for a run: the new pieces with players, their quality, your music, training"
EXAMPLES = """
  ambientgen report runs/demo
  ambientgen report results/ -o /tmp/report.html --max-rolls 20
"""
log = logging.getLogger(__name__)
SECTIONS = (
    ("pieces", "Your new music", section_pieces),
    ("quality", "How close to your music", section_quality),
    ("inputs", "Your music", section_inputs),
    ("training", "Training", section_training),
    ("technical", "Technical details", section_technical),  # last: it folds away what the others put aside
)


def build_report(run_dir: str | Path, out_html: str | Path | None = None, max_rolls: int = 60) -> Path:
    """Write the HTML page for run_dir (default RUN_DIR/report.html) and its pictures; return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise StageError(run_dir, "run directory does not exist")
    out = Path(out_html) if out_html else run_dir / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = Report(run_dir=run_dir, out_html=out, assets=out.parent / f"{out.stem}_files", max_rolls=max_rolls)
    if (run_dir / "run.json").is_file():
        from .page import read_json

        info = read_json(run_dir / "run.json", report)
        report.run_info = info if isinstance(info, dict) else {}
    for anchor, title, build in SECTIONS:
        report.sections.append((anchor, title, build(report)))
    present = [r for r in REPOS if report.repo(r)]
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in report.sections)
    counts = ", ".join(f"{v} {k}" for k, v in report.counts.items())
    problems = ""
    if report.problems:
        problems = ("<details class=problems><summary>" + f"{len(report.problems)} problem(s) while writing this page"
                    "</summary><ul>" + "".join(f"<li>{esc(p)}</li>" for p in report.problems) + "</ul></details>")
    body = "".join(f'<section id="{a}"><h2>{esc(t)}</h2>{h}</section>' for a, t, h in report.sections)
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    name = esc(run_dir.resolve().name)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>ambientgen run: {name}</title>"
        "<link rel=\"icon\" href=\"data:,\">"
        f"<style>{CSS}</style></head><body><header><h1>ambientgen: {name}</h1>"
        f"<div>{esc(counts)} · written {esc(now)} by ambientgen {esc(__version__)}</div><nav>{nav}</nav></header>"
        f"<main>{problems}{body}<p class=facts>repos in this run: {esc(', '.join(present) or 'none')}</p></main>"
        "</body></html>\n"
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
