"""`ambientgen demo`: the whole chain end to end on one machine, on music made from public-domain scores.

1. renders a few Bach chorales (music21 corpus) with FluidSynth to MP3, under human-style file names;
2. puts them into the ``audio-unprocessed`` repo of a local store, and the example requests of
   data/generation-config/ into ``generation-config``;
3. runs every spec of pipelines/ with the embedded runner (the same files a Pachyderm cluster runs);
4. exports each repo's latest files next to the store and writes the HTML report.

A second run reuses everything that has not changed (incremental datums), so it returns in seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

from .util import StageError, write_json

HELP = "run the whole chain end to end on sample music and write an HTML report"
EXAMPLES = """
  ambientgen demo
  ambientgen demo --run-dir runs/demo --pieces 8 --train-minutes 6
  ambientgen demo --fresh            # start again from an empty store
"""
log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
# The order of the chain, for the export and the summary.
REPOS = (
    "audio-unprocessed", "audio-processed", "audio-processed-wav", "midi", "transformer-preprocess",
    "music-transformer", "generation-config", "music-transformer-generate", "ambient-render",
)
HUMAN_NAMES = ("Chorale n°{i} – evening, Bach.mp3", "Choral {i} – Forêt live.mp3", "sleep chorale {i}.MP3")


def find_dir(explicit: str | os.PathLike | None, name: str) -> Path:
    """A project folder (pipelines/, data/...): explicit, the current directory's, or the source checkout's."""
    for cand in (explicit, Path.cwd() / name, REPO_ROOT / name):
        if cand and Path(cand).is_dir():
            return Path(cand)
    raise StageError(name, "folder not found: run from the project checkout or pass its path")


def sample_inputs(dest: Path, pieces: int, seconds: float) -> list[Path]:
    """Render `pieces` chorales to MP3 under names with spaces, accents and capitals (made once, then reused)."""
    from .sampledata import make_samples

    dest.mkdir(parents=True, exist_ok=True)
    existing = sorted(p for p in dest.iterdir() if p.suffix.lower() == ".mp3")
    if len(existing) >= pieces:
        return existing[:pieces]
    scratch = dest / ".render"
    made = [p for p in make_samples(scratch, count=pieces, seconds=seconds, mp3=True) if p.suffix == ".mp3"]
    out = []
    for i, mp3 in enumerate(made, 1):
        target = dest / HUMAN_NAMES[(i - 1) % len(HUMAN_NAMES)].format(i=i)
        shutil.move(mp3, target)
        out.append(target)
    shutil.rmtree(scratch, ignore_errors=True)
    return out


def run_demo(run_dir: str | os.PathLike = "runs/demo", pieces: int = 6, seconds: float = 24.0,
             train_minutes: float = 4.0, pipelines_dir: str | os.PathLike | None = None,
             config_dir: str | os.PathLike | None = None, fresh: bool = False) -> dict:
    """Run the chain; return a summary dict (also written to RUN_DIR/run.json)."""
    from .local import Store, run_pipelines

    run_dir = Path(run_dir)
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    pipelines = find_dir(pipelines_dir, "pipelines")
    configs = Path(config_dir) if config_dir else find_dir(None, "data") / "generation-config"
    started = time.monotonic()

    print(f"[1/4] sample music: {pieces} chorales x {seconds:.0f} s rendered with FluidSynth -> MP3")
    inputs = sample_inputs(run_dir / "input", pieces, seconds)

    store = Store(run_dir / "store")
    print(f"[2/4] putting {len(inputs)} MP3s and {len(list(configs.glob('*')))} generation request(s) into {store.root}")
    for repo, paths in (("audio-unprocessed", inputs), ("generation-config", sorted(configs.glob("*.*")))):
        current = store.walk(repo) if store.repo_exists(repo) and store.head(repo) else {}
        wanted = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
        if {k: v["hash"] for k, v in current.items()} != wanted:
            store.put_files(repo, paths, message="demo input")

    # The specs are used as they are; only the training budget comes from the environment
    # (AMBIENTGEN_<COMMAND>_<OPTION>, read by every stage command).
    os.environ.setdefault("AMBIENTGEN_TRAIN_MINUTES", str(train_minutes))
    print(f"[3/4] running {pipelines}/*.json with the local runner (training budget {train_minutes:g} min)")
    results = run_pipelines(store, pipelines)
    failed = [r for r in results if not r.ok]

    print(f"[4/4] exporting repos and writing the report into {run_dir}")
    for repo in REPOS:
        if store.repo_exists(repo) and store.head(repo):
            target = run_dir / repo
            shutil.rmtree(target, ignore_errors=True)
            store.export(repo, target)
    summary = {
        "run_dir": str(run_dir), "pieces": pieces, "seconds": seconds, "train_minutes": train_minutes,
        "pipelines": str(pipelines), "store": str(store.root),
        "jobs": [r.to_json() for r in results], "elapsed_s": round(time.monotonic() - started, 1),
    }
    write_json(run_dir / "run.json", summary)
    from .report.html import build_report

    report = build_report(run_dir)
    summary["report"] = str(report)
    for r in results:
        print("  " + r.summary())
    print(f"\nresults in {run_dir}/:")
    for repo in ("midi", "music-transformer", "music-transformer-generate", "ambient-render"):
        if (run_dir / repo).is_dir():
            n = sum(1 for p in (run_dir / repo).rglob("*") if p.is_file())
            print(f"  {repo + '/':<30} {n} files")
    print(f"report: {report}")
    if failed:
        raise StageError(None, "failed jobs: " + ", ".join(r.pipeline for r in failed)
                         + f" (see `ambientgen local logs PIPELINE --store {store.root}`)")
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", default="runs/demo", help="where the store, exports and report go (default runs/demo)")
    p.add_argument("--pieces", type=int, default=6, help="sample chorales to use (default 6)")
    p.add_argument("--seconds", type=float, default=24.0, help="length of each sample piece (default 24)")
    p.add_argument("--train-minutes", type=float, default=4.0, help="training budget in minutes (default 4)")
    p.add_argument("--pipelines", default=None, help="pipeline specs folder (default ./pipelines)")
    p.add_argument("--config-dir", default=None, help="generation requests (default data/generation-config)")
    p.add_argument("--fresh", action="store_true", help="delete RUN_DIR first")


def main(args: argparse.Namespace) -> int:
    run_demo(args.run_dir, args.pieces, args.seconds, args.train_minutes, args.pipelines, args.config_dir, args.fresh)
    return 0
