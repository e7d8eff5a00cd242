"""Local runner overheads, as ratios against baselines measured in the same run.

1. put-file: storing files as sha256 blobs in one commit vs a plain copy (shutil.copytree).
2. A job of the real normalize spec (one process per datum, as Pachyderm) vs running the same
   `ambientgen normalize` command once per file by hand: the runner's own cost (staging, hashing, records).
3. Incremental rerun after adding one file vs the first full job.
4. `run` when everything is up to date.
5. export with every object verified against its hash while it is copied, vs copying the same blobs unverified
   (the cost of "the store never serves bytes whose hash does not match"), best of 3 alternated rounds.

Usage: .venv/bin/python bench/bench_local.py [--files N] [--mb SIZE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("AMBIENTGEN_NO_PROGRESS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ambientgen.local import Store, run_pipelines  # noqa: E402


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--mb", type=float, default=4.0, help="size of each file")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        src = tmp / "music"
        src.mkdir()
        rng = os.urandom
        for i in range(args.files):
            (src / f"Morceau n°{i} (été).mp3").write_bytes(rng(int(args.mb * 1e6)))
        extra = tmp / "extra.mp3"
        extra.write_bytes(rng(int(args.mb * 1e6)))
        total_mb = args.files * args.mb

        t_copy = timed(lambda: shutil.copytree(src, tmp / "copy"))

        def copy_fsync() -> None:
            (tmp / "copy2").mkdir()
            for f in sorted(src.iterdir()):
                shutil.copyfile(f, tmp / "copy2" / f.name)
                with open(tmp / "copy2" / f.name, "rb+") as fh:
                    os.fsync(fh.fileno())

        t_sync = timed(copy_fsync)
        store = Store(tmp / "store")
        t_put = timed(lambda: store.put_files("audio-unprocessed", sorted(src.iterdir())))
        print(f"put-file   {args.files} x {args.mb:g} MB: {t_put:.3f} s ({total_mb / t_put:.0f} MB/s); "
              f"plain copy {t_copy:.3f} s (ratio {t_put / t_copy:.2f}x); copy+fsync {t_sync:.3f} s "
              f"(ratio {t_put / t_sync:.2f}x)")

        def by_hand() -> None:
            for i, f in enumerate(sorted(src.iterdir())):
                d = tmp / "hand" / str(i)
                d.mkdir(parents=True)
                shutil.copyfile(f, d / f.name)
                subprocess.run([sys.executable, "-m", "ambientgen", "normalize", str(d), str(tmp / "hand-out")],
                               check=True, capture_output=True)

        t_hand = timed(by_hand)
        results: list = []
        t_job = timed(lambda: results.extend(run_pipelines(store, ROOT / "pipelines", only=["audio-processed"])))
        assert results[0].state == "JOB_SUCCESS", results[0].summary()
        print(f"normalize job, {args.files} datums: {t_job:.2f} s ({t_job / args.files:.3f} s/datum); "
              f"same commands by hand {t_hand:.2f} s; ratio {t_job / t_hand:.2f}x")

        store.put_files("audio-unprocessed", [extra])
        results.clear()
        t_inc = timed(lambda: results.extend(run_pipelines(store, ROOT / "pipelines", only=["audio-processed"])))
        r = results[0]
        assert (r.processed, r.skipped) == (1, args.files), r.summary()
        print(f"incremental job (1 new, {args.files} skipped): {t_inc:.2f} s; ratio to the full job "
              f"{t_inc / t_job:.2f}x")
        t_noop = timed(lambda: run_pipelines(store, ROOT / "pipelines", only=["audio-processed"]))
        print(f"run when up to date: {t_noop * 1000:.1f} ms; ratio to the full job {t_noop / t_job:.4f}x")

        c = store.resolve("audio-unprocessed")

        def export_unverified() -> None:
            dest = tmp / "exp-plain"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            for name, e in c.files.items():
                with open(dest / name, "wb") as out:
                    shutil.copyfile(store.blobs.path(e["hash"]), out.name)
                    os.fsync(out.fileno())

        def export_verified() -> None:
            shutil.rmtree(tmp / "exp", ignore_errors=True)
            store.export("audio-unprocessed", tmp / "exp")

        plain, verified = [], []
        for _ in range(3):
            plain.append(timed(export_unverified))
            verified.append(timed(export_verified))
        mb = (args.files + 1) * args.mb
        print(f"export {mb:g} MB verified: {min(verified):.3f} s ({mb / min(verified):.0f} MB/s); unverified copy "
              f"{min(plain):.3f} s; ratio {min(verified) / min(plain):.2f}x")


if __name__ == "__main__":
    main()
