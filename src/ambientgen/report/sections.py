"""The report's sections, in the order a listener reads them: the new pieces, how close they are to the listener's
music, that music and its transcriptions, the training, and the technical details folded away."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from ..chain import CONFIG_REPO, GENERATED_REPO, MP3_REPO, RENDERED_REPO
from ..music.midi_io import MIDI_SUFFIXES
from ..stages.gen_request import more_like_primer_seconds
from ..util import AUDIO_SUFFIXES, StageError, progress
from .page import (
    Report,
    audio_duration,
    audio_tag,
    esc,
    files_in,
    fmt,
    human_size,
    human_time,
    kv_table,
    number,
    read_json,
    records_table,
    roll_for,
)


def _piece_facts(side: dict | None, info: dict | None) -> list[str]:
    """What a listener wants to know of a piece, in words with units."""
    facts = []
    side, info = side or {}, info or {}
    req = side.get("request") if isinstance(side.get("request"), dict) else {}
    if isinstance(info.get("duration_seconds"), int | float):
        loop = info.get("loop_minutes")
        facts.append(f"{human_time(info['duration_seconds'])} ({fmt(loop)}-minute loop)" if loop
                     else human_time(info["duration_seconds"]))
    elif isinstance(side.get("seconds"), int | float):
        facts.append(human_time(side["seconds"]))
    if isinstance(side.get("notes"), int):
        facts.append(f"{side['notes']:,} notes")
    if isinstance(info.get("preset"), str):
        facts.append(f"preset {esc(info['preset'])}")
    for bed in info.get("beds") or []:
        if isinstance(bed, dict):
            facts.append(f"{esc(bed.get('type'))} bed at {number(bed.get('level_lu'), 'LU', 0)} under the music")
    if isinstance(info.get("loudness_lufs"), int | float):
        facts.append(f"loudness {number(info['loudness_lufs'], 'LUFS', 1)}")
    primer = side.get("primer") if isinstance(side.get("primer"), dict) else None
    if primer and isinstance(primer.get("source"), str):
        src = primer["source"].split(":", 1)[-1]
        facts.append(f"grown from the first {number(primer.get('seconds'), 's', 0)} of {esc(src)}")
    for key, label in (("temperature", "temperature"), ("top_p", "top-p"), ("seed", "seed")):
        if isinstance(req.get(key), int | float) and not isinstance(req.get(key), bool):
            facts.append(f"{label} {fmt(req[key])}")
    return facts


def _more_like(report: Report, name: str, mid: Path | None) -> str:
    """How to ask for more like this piece: the compose command, or a request folder for the repo."""
    run = report.run_info
    music = run.get("music") if isinstance(run.get("music"), str) else "MUSIC_DIR"
    out = run.get("run_dir") if isinstance(run.get("run_dir"), str) else str(report.run_dir)
    cmd = f"ambientgen compose {shlex.quote(music)} -o {shlex.quote(out)} --more-like {shlex.quote(name)}"
    request = f'name = "more-like-{name}"\nprimer_midi = "{name}.mid"\n'
    if mid is not None:  # the same primer as `compose --more-like` asks for
        try:
            seconds = more_like_primer_seconds(mid)
        except StageError:
            seconds = None
        request += f"primer_seconds = {seconds}\n" if seconds else ""
    request += "include_primer = false\nnum_samples = 4\n"
    link = f' (<a href="{report.url(mid)}">{esc(mid.name)}</a>)' if mid is not None else ""
    return (f'<div class="more">More like this: <code>{esc(cmd)}</code><details><summary>or on a cluster: a '
            f"request for the generation-config repo</summary><p>Put this file as <code>more-like-{esc(name)}/"
            f"request.toml</code> with the piece's MIDI{link} beside it:</p><pre>{esc(request)}</pre></details></div>")


def section_pieces(report: Report) -> str:
    """The generated pieces: player, piano roll, facts, and how to ask for more like each."""
    gen, ren = report.repo(GENERATED_REPO), report.repo(RENDERED_REPO)
    if gen is None and ren is None:
        return '<p class="missing">No pieces yet: music-transformer-generate/ and ambient-render/ are not in this run.</p>'
    midis = {p.relative_to(gen).with_suffix("").as_posix(): p for p in files_in(gen, MIDI_SUFFIXES)} if gen else {}
    rendered: dict[str, dict[str, Path]] = {}
    for p in files_in(ren):
        rendered.setdefault(p.relative_to(ren).with_suffix("").as_posix(), {})[p.suffix.lower()] = p
    stems = sorted(set(midis) | {s for s, f in rendered.items() if f.keys() & (AUDIO_SUFFIXES | MIDI_SUFFIXES)})
    report.counts["pieces"] = len(stems)
    cards = []
    for stem in progress(stems, "report: pieces", unit="piece"):
        mid, files = midis.get(stem), rendered.get(stem, {})
        name = Path(stem).name
        side = read_json(mid.with_suffix(".json"), report) if mid is not None and mid.with_suffix(".json").is_file() \
            else None
        info = read_json(files[".json"], report) if ".json" in files else None
        player = next((audio_tag(report, files[s]) for s in (".mp3", ".ogg", ".flac", ".wav") if s in files),
                      '<p class="missing">not rendered to audio in this run</p>')
        links = [f'<a href="{report.url(p)}">{esc(p.suffix.lstrip(".").upper())}</a>'
                 for s, p in sorted(files.items()) if s in AUDIO_SUFFIXES]
        if mid is not None:
            links.insert(0, f'<a href="{report.url(mid)}">MIDI</a>')
            roll = roll_for(report, mid, "generated", files.get(".png"))
        elif ".png" in files:
            roll = f'<img src="{report.url(files[".png"])}" alt="piano roll of {esc(name)}">'
        else:
            roll = ""
        facts = " · ".join(_piece_facts(side if isinstance(side, dict) else None,
                                        info if isinstance(info, dict) else None))
        cards.append(f'<div class="card"><h3>{esc(name)}</h3>{player}<div class="facts">{facts}</div>'
                     f'<div class="facts">download: {" · ".join(links)}</div>{roll}{_more_like(report, name, mid)}'
                     "</div>")
    heard = sum(1 for f in rendered.values() if f.keys() & AUDIO_SUFFIXES)
    return f"<p>{len(stems)} new pieces, {heard} ready to play.</p><div class=grid>{''.join(cards)}</div>"


QUALITY_ROWS = (
    ("notes_per_s", "notes per second", "notes/s", 2), ("polyphony", "notes sounding at once", "", 2),
    ("duration_p50", "note length, median", "s", 2), ("duration_p90", "note length, longest tenth", "s", 2),
    ("pitch_median", "register (half the sounding time at or below this pitch)", "pitch", 0),
    ("pitch_class_overlap", "same keys and scales (pitch-class overlap, per piece)", "%", 0),
    ("interval_overlap", "same melodic steps (interval overlap, per piece)", "%", 0),
    ("interval_overlap_set", "same melodic steps, all pieces together", "%", 0),
    ("stuck_rate", "stuck notes (held far longer than in your music)", "%", 1),
    ("longest_copy", "longest passage copied from the training music", "events", 0),
    ("copied_windows", "16-event passages found in the training music", "%", 1),
)


def section_quality(report: Report) -> str:
    """Generated music measured against the transcriptions it learned from (ambientgen evaluate-generation)."""
    from ..music.quality import evaluate_generation

    gen, ref = report.repo(GENERATED_REPO), report.repo("midi")
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

    def cell(value: Any, unit: str, digits: int) -> str:
        if value is None:
            return ""
        if unit == "pitch":
            from ..music.pianoroll import note_name

            return esc(note_name(int(value)))
        return number(value * 100 if unit == "%" else value, unit, digits)

    rows = "".join(f"<tr><td>{esc(label)}</td><td class=num>{cell(g.get(k), unit, d)}</td><td class=num>"
                   f"{cell(r.get(k), unit, d)}</td></tr>" for k, label, unit, d in QUALITY_ROWS
                   if g.get(k) is not None)
    rows += ("<tr><td>same melodic steps, one half of your music against the other</td><td></td>"
             f"<td class=num>{cell(r.get('interval_overlap_halves'), '%', 0)}</td></tr>")
    per_piece = [{"piece": Path(p.get("file", "")).stem, "notes": p.get("notes"),
                  "at once": number(p.get("polyphony"), "", 1), "longest tenth": number(p.get("duration_p90"), "s", 1),
                  "stuck": cell(p.get("stuck_rate"), "%", 1), "melodic steps": cell(p.get("interval_overlap"), "%", 0),
                  "longest copy": p.get("longest_copy")} for p in res["pieces"]]
    return ("<p>How the new pieces compare with your music (its transcriptions): the closer the two columns, the "
            f"closer to your style. A stuck note lasts longer than {number(res['stuck_threshold_s'], 's', 1)} "
            "(twice the longest 1% of your notes).</p><div class=scroll><table><tr><th>measure</th><th>new pieces"
            f"</th><th>your music</th></tr>{rows}</table></div><details><summary>per piece</summary>"
            f"{records_table(per_piece)}</details>")


def section_inputs(report: Report) -> str:
    """The listener's own files, with players, and their transcriptions as piano rolls."""
    raw = report.repo(MP3_REPO)
    parts = []
    if raw is None:
        parts.append('<p class="missing">audio-unprocessed/ is not in this run.</p>')
    else:
        files = files_in(raw)
        audio = [p for p in files if p.suffix.lower() in AUDIO_SUFFIXES]
        report.counts["inputs"] = len(audio)
        total, rows = 0.0, []
        for p in audio:
            d = audio_duration(p)
            total += d or 0.0
            rows.append(f"<tr><td>{esc(p.relative_to(raw).as_posix())}</td><td class=num>{human_time(d)}</td>"
                        f"<td class=num>{human_size(p.stat().st_size)}</td><td>{audio_tag(report, p)}</td></tr>")
        others = len(files) - len(audio)
        parts.append(f"<p>{len(audio)} audio files, {human_time(total)} in all"
                     + (f" ({others} other files, not used)" if others else "") + ".</p>")
        if rows:
            parts.append("<div class=scroll><table><tr><th>file</th><th>length</th><th>size</th><th>listen</th></tr>"
                         + "".join(rows) + "</table></div>")
    parts.append("<h3>What was heard in it (transcriptions)</h3>" + _transcriptions(report))
    return "".join(parts)


def _transcriptions(report: Report) -> str:
    folder = report.repo("midi")
    if folder is None:
        return '<p class="missing">midi/ is not in this run.</p>'
    midis = files_in(folder, MIDI_SUFFIXES)
    report.counts["transcriptions"] = len(midis)
    cards = []
    for mid in progress(midis[: report.max_rolls], "report: transcriptions", unit="file"):
        side = mid.with_suffix(".json")
        facts = read_json(side, report) if side.is_file() else None
        words = []
        if isinstance(facts, dict):
            if isinstance(facts.get("notes"), int):
                words.append(f"{facts['notes']:,} notes")
            if isinstance(facts.get("duration_s"), int | float):
                words.append(human_time(facts["duration_s"]))
            if isinstance(facts.get("pitch_min"), int) and isinstance(facts.get("pitch_max"), int):
                from ..music.pianoroll import note_name

                words.append(f"{note_name(facts['pitch_min'])}–{note_name(facts['pitch_max'])}")
            if isinstance(facts.get("backend"), str):
                words.append(f"heard by {esc(facts['backend'])}")
        cards.append(f'<div class="card"><h3>{esc(mid.relative_to(folder).as_posix())}</h3>'
                     f'<div class="facts">{" · ".join(words)}</div>{roll_for(report, mid, "midi")}</div>')
    more = len(midis) - len(cards)
    note = f'<p class="missing">{more} more not shown (--max-rolls {report.max_rolls}).</p>' if more > 0 else ""
    return f"<p>{len(midis)} transcriptions.</p><div class=grid>{''.join(cards)}</div>{note}"


def section_training(report: Report) -> str:
    """The model's training in a sentence and a picture."""
    from .curves import read_metrics, save_curves, summarize

    folder = report.repo("music-transformer")
    if folder is None:
        return '<p class="missing">music-transformer/ is not in this run.</p>'
    parts = []
    config = read_json(folder / "config.json", report) if (folder / "config.json").is_file() else None
    config = config if isinstance(config, dict) else {}
    metrics = folder / "metrics.csv"
    if metrics.is_file():
        png = report.assets / "training-curves.png"
        try:
            if not png.is_file() or png.stat().st_mtime < metrics.stat().st_mtime:
                save_curves(metrics, png, title="training curves")
            series = read_metrics(metrics)
            s = summarize(series)
            start = "the shipped base model" if config.get("init") else "scratch"
            words = [f"Trained from {start}"]
            if s.get("last_step") is not None:
                words.append(f"for {int(s['last_step']):,} steps")
            if isinstance(config.get("train_seconds"), int | float):
                words.append(f"in {human_time(config['train_seconds'])}")
            text = " ".join(words) + "."
            if series.get("eval_nll"):
                first = series["eval_nll"][0][1]
                text += (f" Loss on held-out music went from {number(first, '', 3)} to a best of "
                         f"{number(s['best_eval_nll'], '', 3)} nats per event (lower is better)")
                if s.get("best_eval_accuracy") is not None:
                    text += f"; the next event was guessed right {number(s['best_eval_accuracy'] * 100, '%', 0)} " \
                            "of the time"
                text += "."
            parts.append(f"<p>{esc(text)}</p>")
            parts.append(f'<img src="{report.url(png)}" alt="training curves" style="max-width:100%">')
            report.technical.append(("training figures", kv_table(s)))
        except StageError as exc:
            report.problems.append(str(exc))
            parts.append(f'<p class="missing">{esc(exc)}</p>')
        parts.append(f'<p><a href="{report.url(metrics)}">metrics.csv</a></p>')
    else:
        parts.append('<p class="missing">no metrics.csv</p>')
    if config:
        report.technical.append(("model configuration", kv_table(config)))
    weights = folder / "model.safetensors"
    if weights.is_file():
        parts.append(f"<p>The model: {human_size(weights.stat().st_size)} of weights.</p>")
    return "".join(parts)


def section_technical(report: Report) -> str:
    """Everything else, folded away: the data set, the model, the run's parameters and requests."""
    parts = []
    folder = report.repo("transformer-preprocess")
    if folder is None:
        parts.append('<p class="missing">transformer-preprocess/ is not in this run.</p>')
    else:
        summary = folder / "summary.json"
        data = read_json(summary, report) if summary.is_file() else None
        records = [p for p in files_in(folder) if p.suffix == ".tfrecord" or ".tfrecord-" in p.name]
        rows = "".join(f"<tr><td>{esc(p.relative_to(folder).as_posix())}</td><td class=num>"
                       f"{human_size(p.stat().st_size)}</td></tr>" for p in records)
        body = (kv_table(data) if data is not None else '<p class="missing">no summary.json</p>') \
            + (f"<table><tr><th>TFRecord file</th><th>size</th></tr>{rows}</table>" if rows else "")
        report.technical.insert(0, ("data set", body))
    path = report.run_dir / "run.json"
    if not path.is_file():
        parts.append('<p class="missing">no run.json in this run.</p>')
    elif report.run_info:
        report.technical.append(("the run", kv_table(report.run_info) + "<details><summary>run.json</summary><pre>"
                                 f"{esc(json.dumps(report.run_info, indent=2))}</pre></details>"))
    configs = report.repo(CONFIG_REPO)
    if configs is not None:
        reqs = []
        for p in files_in(configs):
            if p.suffix.lower() in MIDI_SUFFIXES or p.stat().st_size > 100_000:
                reqs.append(f"<p>{esc(p.relative_to(configs).as_posix())}: {human_size(p.stat().st_size)}</p>")
                continue
            text = p.read_bytes().decode("utf-8", errors="replace")
            reqs.append(f"<h4>{esc(p.relative_to(configs).as_posix())}</h4><pre>{esc(text)}</pre>")
        report.technical.append(("generation requests", "".join(reqs)))
    for title, body in report.technical:
        parts.append(f"<details><summary>{esc(title)}</summary>{body}</details>")
    return "".join(parts)
