"""Throughput of `ambientgen cluster` put-mp3 / get-results through the real pachyderm-sdk over loopback gRPC.

Baseline measured in the same run: copying the same files on the local disk (shutil.copytree). The server is
the in-process pfs_v2/pps_v2 stand-in from tests/test_pach.py (memory store), so the ratio is the client-side
cost of the SDK path (chunking, protobuf, gRPC) and a floor for a real cluster, where the network dominates.

    .venv/bin/python bench/bench_pach.py [--files 24] [--mb 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ["AMBIENTGEN_NO_PROGRESS"] = "1"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--mb", type=float, default=8.0, help="size of each file in MB")
    args = ap.parse_args()

    import test_pach as t

    fake = t.FakePachd()
    server, port = t.start_server(fake)
    client = t.pach.connect("127.0.0.1", port)
    t.pach.deploy(client)

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "music"
        src.mkdir()
        size = int(args.mb * 1e6)
        for i in range(args.files):
            (src / f"track-{i:03d}.mp3").write_bytes(os.urandom(size))
        total_mb = args.files * size / 1e6

        t0 = time.perf_counter()
        shutil.copytree(src, Path(tmp) / "copy1")
        copy_s = time.perf_counter() - t0

        tracemalloc.start()
        t0 = time.perf_counter()
        t.pach.put_mp3(client, src)
        put_s = time.perf_counter() - t0
        put_peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()

        fake.write_files("ambient-render", fake.files("audio-unprocessed"))
        t0 = time.perf_counter()
        shutil.copytree(src, Path(tmp) / "copy2")
        copy2_s = time.perf_counter() - t0
        tracemalloc.start()
        t0 = time.perf_counter()
        got = t.pach.download_repo(client, "ambient-render", Path(tmp) / "out")
        get_s = time.perf_counter() - t0
        get_peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        assert len(got) == args.files and all(p.stat().st_size == size for p in got)
    server.stop(grace=None)

    base = min(copy_s, copy2_s)
    print(f"{args.files} files x {args.mb:g} MB = {total_mb:.0f} MB")
    print(f"baseline local copy:   {base:6.2f} s  {total_mb / base:7.0f} MB/s")
    print(f"put-mp3 (SDK, gRPC):   {put_s:6.2f} s  {total_mb / put_s:7.0f} MB/s  ratio {put_s / base:5.1f}x  "
          f"peak Python heap {put_peak:.0f} MB (client + in-process server)")
    print(f"get-results (SDK):     {get_s:6.2f} s  {total_mb / get_s:7.0f} MB/s  ratio {get_s / base:5.1f}x  "
          f"peak Python heap {get_peak:.0f} MB (client + in-process server)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
