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
import logging
import os
import shutil
from pathlib import Path

from .chain import GENERATED_REPO, RENDERED_REPO
from .compose import find_dir, run_chain

HELP = "run the whole chain end to end on sample music and write an HTML report"
EXAMPLES = """
  ambientgen demo
  ambientgen demo --run-dir runs/demo --pieces 8 --train-minutes 6
  ambientgen demo --fresh            # start again from an empty store
"""
log = logging.getLogger(__name__)

HUMAN_NAMES = ("Chorale n°{i} – evening, Bach.mp3", "Choral {i} – Forêt live.mp3", "sleep chorale {i}.MP3")


def sample_inputs(dest: Path, pieces: int, seconds: float) -> list[Path]:
    """Render `pieces` chorales to MP3 under names with spaces, accents and capitals (made once, then reused)."""
    from .sample_data import make_samples

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
    run_dir = Path(run_dir)
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    pipelines = find_dir(pipelines_dir, "pipelines")
    configs = Path(config_dir) if config_dir else find_dir(None, "data") / "generation-config"
    print(f"sample music: {pieces} chorales x {seconds:.0f} s rendered with FluidSynth -> MP3")
    sample_inputs(run_dir / "input", pieces, seconds)
    # The specs are used as they are; only the training budget comes from the environment
    # (AMBIENTGEN_<COMMAND>_<OPTION>, read by every stage command).
    summary = run_chain(run_dir, run_dir / "input", configs, pipelines,
                        {"AMBIENTGEN_TRAIN_MINUTES": f"{train_minutes:g}"}, what="sample music",
                        record={"pieces": pieces, "seconds": seconds, "train_minutes": train_minutes})
    print(f"\nresults in {run_dir}/:")
    for repo in ("midi", "music-transformer", GENERATED_REPO, RENDERED_REPO):
        if (run_dir / repo).is_dir():
            n = sum(1 for p in (run_dir / repo).rglob("*") if p.is_file())
            print(f"  {repo + '/':<30} {n} files")
    print(f"report: {summary['report']}")
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
