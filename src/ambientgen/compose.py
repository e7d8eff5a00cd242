"""`ambientgen compose`: from a folder of the listener's music to new pieces and a report, in one command.

1. the folder goes into the ``audio-unprocessed`` repo of a local store (OUT/store) as one commit that mirrors
   it (a file added, changed or removed in the folder is added, changed or removed in the repo);
2. the pieces asked for become generation requests in ``generation-config``: ``compose.toml`` from the options,
   and one ``more-like-NAME/`` folder (request + primer) per liked piece;
3. every spec of pipelines/ runs with the embedded runner: incremental, so a second call after adding one MP3
   normalizes, converts and transcribes only that file (training and generation then run again on the new data);
4. each repo is exported into OUT/<repo>/ and OUT/report.html is written.

Liked pieces are remembered in OUT/liked/ so that later calls keep making variations of them; with
``--learn-from-liked`` they also join the training data (``liked/`` in the input repo; make-dataset weights them).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from . import env as env_mod  # run_chain takes an `env` dict
from .chain import CONFIG_REPO, GENERATED_REPO, MP3_REPO, RENDERED_REPO, REPOS
from .music.midi_io import MIDI_SUFFIXES
from .pfs import refused
from .stages.gen_request import GenerationRequest, more_like_primer_seconds
from .util import AUDIO_SUFFIXES, StageError, atomic_path, write_json

HELP = "from a folder of your music to new pieces and a report, in one command (reruns only what changed)"
EXAMPLES = """
  ambientgen compose ~/Music/sleep -o results/
  ambientgen compose ~/Music/sleep -o results/ --pieces 6 --seconds 120 --preset rain-pad --loop-minutes 30
  ambientgen compose ~/Music/sleep -o results/ --bed brown-noise:-16 --train-minutes 20
  ambientgen compose ~/Music/sleep -o results/ --more-like compose-2 compose-4     # variations of liked pieces
  ambientgen compose ~/Music/sleep -o results/ --more-like compose-2 --learn-from-liked
"""
log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
LIKED_DIR = "liked"  # in OUT (the liked pieces kept) and in the input repo (when they join the training)


@dataclass
class ComposeOptions:
    """What `ambientgen compose` asks of the chain (the command-line options)."""

    train_minutes: float = 10.0
    pieces: int = 4
    seconds: float = 90.0
    preset: str | None = None  # None: render's default preset
    loop_minutes: float | None = None
    beds: list[str] | None = None
    temperature: float = 1.0  # the model as it is: truncated sampling plays 1.4-1.8x the music's notes a second
    top_p: float = 1.0
    seed: int = 0
    more_like: list[str] = field(default_factory=list)
    learn_from_liked: bool | None = None  # None: as the last call into this OUT folder asked (else no)
    liked_weight: int = 3
    pipelines: str | None = None
    parallelism: int = 1


def find_dir(explicit: str | os.PathLike | None, name: str) -> Path:
    """A project folder (pipelines/, data/...): explicit, the current directory's, or the source checkout's."""
    for cand in (explicit, Path.cwd() / name, REPO_ROOT / name):
        if cand and Path(cand).is_dir():
            return Path(cand)
    raise StageError(name, "folder not found: run from the project checkout or pass its path")


def run_chain(run_dir: Path, music_dir: Path, requests_dir: Path, pipelines: Path, env: dict[str, str],
              parallelism: int = 1, what: str = "your music", record: dict | None = None) -> dict:
    """Mirror music_dir and requests_dir into the store's input repos, run every pipeline, export, report.

    Returns the summary (also RUN_DIR/run.json, which the report reads; ``record`` joins it); raises StageError
    naming the failed pipelines after the export and the report are written, so what did succeed can still be
    looked at.
    """
    from .local import Store, run_pipelines
    from .report.html import build_report

    started = time.monotonic()
    store = Store(run_dir / "store")
    n_audio = sum(1 for p in music_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    n_req = sum(1 for p in requests_dir.rglob("*") if p.is_file())
    print(f"[1/3] {what}: {n_audio} audio files from {music_dir}; {n_req} request file(s) -> {store.root}")
    for repo, folder in ((MP3_REPO, music_dir), (CONFIG_REPO, requests_dir)):
        before = store.head(repo) if store.repo_exists(repo) else None
        after = store.put_files(repo, [folder], message=f"{folder}", replace=True).id
        print(f"      {repo}: {'unchanged' if after == before else 'new commit ' + after[:12]}")
    print(f"[2/3] running {pipelines}/*.json with the local runner "
          + ", ".join(f"{k}={v}" for k, v in sorted(env.items())))
    with env_mod.overridden(env):
        results = run_pipelines(store, pipelines, parallelism=parallelism)
    for r in results:
        print("      " + r.summary())
    failed = [r for r in results if not r.ok]

    print(f"[3/3] exporting the repos and writing the report into {run_dir}")
    for repo in REPOS:
        if store.repo_exists(repo) and store.head(repo):
            target = run_dir / repo
            shutil.rmtree(target, ignore_errors=True)
            store.export(repo, target)
    summary = {"run_dir": str(run_dir), "music": str(music_dir), "pipelines": str(pipelines),
               "store": str(store.root), "environment": env, "jobs": [r.to_json() for r in results],
               "elapsed_s": round(time.monotonic() - started, 1), **(record or {})}
    write_json(run_dir / "run.json", summary)
    summary["report"] = str(build_report(run_dir))
    if failed:
        raise StageError(None, "failed jobs: " + ", ".join(r.pipeline for r in failed)
                         + f" (see `ambientgen local logs PIPELINE --store {store.root}`); the report shows the rest: "
                         + summary["report"])
    return summary


def find_piece(spec: str, out_dir: Path) -> Path:
    """A liked piece: a MIDI file's path, or the name of a piece this OUT folder generated (`compose-2`)."""
    path = Path(spec).expanduser()
    if path.suffix.lower() in MIDI_SUFFIXES and path.is_file():
        return path
    gen = out_dir / GENERATED_REPO
    hits = sorted(gen.glob(f"{spec}/{spec}.mid")) + sorted(gen.glob(f"*/{spec}.mid")) if gen.is_dir() else []
    if not hits:
        known = sorted(p.stem for p in gen.glob("*/*.mid")) if gen.is_dir() else []
        raise StageError(spec, "not a MIDI file, nor a piece generated in " + str(out_dir)
                         + (f" (pieces: {', '.join(known[:12])})" if known else ""))
    return hits[0]


def write_requests(folder: Path, opts: ComposeOptions, liked: list[Path]) -> None:
    """compose.toml from the options, and more-like-NAME/{request.toml, NAME.mid} per liked piece."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    common = {"seconds": opts.seconds, "temperature": opts.temperature, "top_p": opts.top_p, "preset": opts.preset,
              "loop_minutes": opts.loop_minutes, "beds": opts.beds}
    main = GenerationRequest(name="compose", num_samples=opts.pieces, seed=opts.seed, **common)
    main.validate("compose options")
    _write_toml(folder / "compose.toml", main)
    for k, mid in enumerate(liked):
        name = f"more-like-{mid.stem}"[:100]
        sub = folder / name
        sub.mkdir()
        shutil.copyfile(mid, sub / f"{mid.stem}.mid")
        req = GenerationRequest(name=name, num_samples=opts.pieces, seed=opts.seed + 1 + k,
                                primer_midi=f"{mid.stem}.mid", primer_seconds=more_like_primer_seconds(mid),
                                include_primer=False, **common)
        req.validate(f"--more-like {mid}")
        _write_toml(sub / "request.toml", req)


def _write_toml(path: Path, req: GenerationRequest) -> None:
    import json

    lines = ["# written by `ambientgen compose`; every key is described in `ambientgen generate --help`"]
    for key, value in asdict(req).items():
        if value is not None and value != getattr(GenerationRequest, key, object()):
            lines.append(f"{key} = {json.dumps(value)}")  # JSON strings, numbers, booleans and lists are TOML
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def compose(music_dir: str | os.PathLike, out_dir: str | os.PathLike, opts: ComposeOptions | None = None) -> dict:
    """The whole chain on the listener's folder; returns the summary (OUT/run.json)."""
    opts = replace(opts) if opts else ComposeOptions()  # a copy: what was asked is resolved below
    music_dir, out_dir = Path(music_dir).expanduser(), Path(out_dir)
    if not music_dir.is_dir():
        raise StageError(music_dir, "not a folder of music")
    if not any(p.suffix.lower() in AUDIO_SUFFIXES for p in music_dir.rglob("*") if p.is_file()):
        raise StageError(music_dir, f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in this folder")
    if out_dir.resolve() == music_dir.resolve() or music_dir.resolve() in out_dir.resolve().parents:
        raise StageError(out_dir, "the output folder must not be inside the music folder (it would be read as music)")
    if not 1 <= opts.pieces <= 64:
        raise StageError(None, "--pieces must be 1-64")
    if opts.train_minutes <= 0:
        raise StageError(None, "--train-minutes must be > 0")
    if opts.preset is not None:
        from .music.presets import default_presets_path, load_presets

        presets, _ = load_presets()
        if opts.preset not in presets:
            raise StageError(default_presets_path(), f"no preset {opts.preset!r} (have: {', '.join(presets)})")
    out_dir.mkdir(parents=True, exist_ok=True)
    liked_dir = out_dir / LIKED_DIR
    for spec in opts.more_like:
        mid = find_piece(spec, out_dir)
        liked_dir.mkdir(exist_ok=True)
        if refused(mid.stem) or len(mid.stem) > 80:
            raise StageError(mid, "a liked piece needs a plain name (letters, digits, '-', '_', '.'): rename it")
        if mid.resolve() != (liked_dir / f"{mid.stem}.mid").resolve():
            shutil.copyfile(mid, liked_dir / f"{mid.stem}.mid")
    liked = sorted(liked_dir.glob("*.mid")) if liked_dir.is_dir() else []
    if opts.learn_from_liked is None:
        opts.learn_from_liked = _last_options(out_dir).get("learn_from_liked") is True
    write_requests(out_dir / ".requests", opts, liked)
    music = _music_view(music_dir, out_dir, liked if opts.learn_from_liked else [])
    env = {"AMBIENTGEN_TRAIN_MINUTES": f"{opts.train_minutes:g}"}
    if opts.learn_from_liked:
        env["AMBIENTGEN_MAKE_DATASET_LIKED_WEIGHT"] = str(opts.liked_weight)
    summary = run_chain(out_dir, music, out_dir / ".requests", find_dir(opts.pipelines, "pipelines"), env,
                        opts.parallelism, record={"music": str(music_dir), "options": asdict(opts),
                                                  "liked": [p.name for p in liked]})
    _print_pieces(music_dir, out_dir, summary["report"])
    return summary


def _last_options(out_dir: Path) -> dict:
    """The options of the last compose into out_dir (run.json), {} when there is none."""
    import json

    try:
        options = json.loads((out_dir / "run.json").read_text()).get("options")
    except (OSError, ValueError, AttributeError):
        return {}
    return options if isinstance(options, dict) else {}


def _music_view(music_dir: Path, out_dir: Path, liked: list[Path]) -> Path:
    """The folder that goes into the input repo: the music folder itself, or, when liked pieces join the
    training, a folder of links to its files plus liked/ (links: nothing is copied)."""
    if not liked:
        return music_dir
    view = out_dir / ".input"
    shutil.rmtree(view, ignore_errors=True)
    for p in sorted(music_dir.rglob("*")):
        rel = p.relative_to(music_dir)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts) and rel.parts[0] != LIKED_DIR:
            (view / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(p.resolve(), view / rel)
    (view / LIKED_DIR).mkdir(parents=True, exist_ok=True)
    for mid in liked:
        os.symlink(mid.resolve(), view / LIKED_DIR / mid.name)
    return view


def _print_pieces(music_dir: Path, out_dir: Path, report: str) -> None:
    rendered = sorted((out_dir / RENDERED_REPO).glob("*/*.mp3")) if (out_dir / RENDERED_REPO).is_dir() else []
    print(f"\n{len(rendered)} pieces:")
    for p in rendered:
        print(f"  {p}")
    print(f"report: {report}")
    if rendered:
        print(f"more like one you like: ambientgen compose {shlex.quote(str(music_dir))} -o "
              f"{shlex.quote(str(out_dir))} --more-like {rendered[0].stem}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("music_dir", help="folder of your music (MP3, WAV, FLAC, OGG ...; sub-folders too)")
    p.add_argument("-o", "--output", required=True, help="results folder: store, exported repos, report.html")
    p.add_argument("--train-minutes", type=float, default=10.0, help="fine-tuning budget in minutes (default 10)")
    p.add_argument("--pieces", type=int, default=4, help="pieces to generate (default 4; per liked piece too)")
    p.add_argument("--seconds", type=float, default=90.0, help="length of each piece in seconds (default 90)")
    p.add_argument("--preset", default=None, help="render preset (see `ambientgen render --help`)")
    p.add_argument("--loop-minutes", type=float, default=None, metavar="N",
                   help="render each piece as a seamless N-minute loop (e.g. 30 for a night)")
    p.add_argument("--bed", dest="beds", action="append", default=None, metavar="TYPE[:LU]",
                   help="a sound under the music: pink-noise, brown-noise, rain or binaural, at LU relative to "
                        "the music (e.g. rain:-12); repeat for more. A binaural beat is for headphones at a low "
                        "volume, not while driving nor with epilepsy")
    p.add_argument("--temperature", type=float, default=ComposeOptions.temperature,
                   help=f"sampling temperature (default {ComposeOptions.temperature:g}: lower values make the "
                        "pieces busier)")
    p.add_argument("--top-p", type=float, default=ComposeOptions.top_p,
                   help=f"nucleus sampling mass (default {ComposeOptions.top_p:g}: off)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the pieces (default 0)")
    p.add_argument("--more-like", nargs="+", default=[], metavar="PIECE",
                   help="pieces you liked (names from the report, or MIDI files): variations of each are made, "
                        "now and in later calls")
    p.add_argument("--learn-from-liked", action=argparse.BooleanOptionalAction, default=None,
                   help="also train on the liked pieces, so that the model drifts toward what you keep (kept for "
                        "later calls into the same results folder until --no-learn-from-liked)")
    p.add_argument("--liked-weight", type=int, default=3, help="how many times a liked piece counts (default 3)")
    p.add_argument("--pipelines", default=None, help="pipeline specs folder (default ./pipelines)")
    p.add_argument("--parallelism", type=int, default=1, help="datums run at once (default 1)")


def main(args: argparse.Namespace) -> int:
    opts = ComposeOptions(
        train_minutes=args.train_minutes, pieces=args.pieces, seconds=args.seconds, preset=args.preset,
        loop_minutes=args.loop_minutes, beds=args.beds, temperature=args.temperature, top_p=args.top_p,
        seed=args.seed, more_like=args.more_like, learn_from_liked=args.learn_from_liked,
        liked_weight=args.liked_weight, pipelines=args.pipelines, parallelism=args.parallelism)
    compose(args.music_dir, args.output, opts)
    return 0
