"""Training memory and speed of the chunked attention kernel against the explicit one, at the lengths that matter.

Each (kernel, length) runs in a fresh child process: a model of the compared peer's shape (d_model 256, 6 layers,
8 heads, d_ff 1024, dropout 0.1, 390 tokens), AdamW, batch 4, one warm-up step, then timed steps; the child
reports training tokens/s and its peak RSS (ru_maxrss, the whole process). Kernels alternate per length.
Ratios are chunked / explicit, measured in the same run.

  .venv/bin/python bench/bench_attention.py                       # L = 512, 1024, 2048, batch 4, 2 threads
  .venv/bin/python bench/bench_attention.py --lengths 2048 --steps 2
  .venv/bin/python bench/bench_attention.py --bf16 --lengths 256,512,1024
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_SHAPE = dict(vocab_size=390, n_layer=6, n_head=8, d_model=256, d_ff=1024, dropout=0.1)


def child(impl: str, length: int, batch: int, steps: int, threads: int, amp: bool) -> None:
    import torch

    from ambientgen.models.transformer import MusicTransformer, TransformerConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = TransformerConfig(**PEER_SHAPE, max_len=length)
    model = MusicTransformer(cfg).train()
    model.set_attn_impl(impl)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(1, cfg.vocab_size, (batch, length + 1))

    cast = torch.autocast("cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext()

    def step() -> None:
        with cast:
            _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t0) / steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB -> GiB
    print(json.dumps({"tokens_per_s": batch * length / dt, "peak_rss_gib": peak, "step_s": dt}))


def run_child(impl: str, length: int, args) -> dict:
    cmd = [sys.executable, __file__, "--_child", impl, "--lengths", str(length), "--batch", str(args.batch),
           "--steps", str(args.steps), "--threads", str(args.threads)] + (["--bf16"] if args.bf16 else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__[__doc__.index("\n\n"):],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="512,1024,2048", help="comma-separated sequence lengths")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per child (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast, as `ambientgen train` runs on CPUs that have it")
    ap.add_argument("--_child", dest="child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    if args.child:
        child(args.child, lengths[0], args.batch, args.steps, args.threads, args.bf16)
        return 0
    print(f"shape {PEER_SHAPE}, batch {args.batch}, {args.threads} threads, {'bf16 autocast' if args.bf16 else 'fp32'}; "
          "each kernel in its own process")
    for i, length in enumerate(lengths):
        order = ["explicit", "chunked"] if i % 2 == 0 else ["chunked", "explicit"]
        res = {impl: run_child(impl, length, args) for impl in order}
        e, c = res["explicit"], res["chunked"]
        print(f"L={length:5d}  explicit {e['tokens_per_s']:7.0f} tok/s {e['peak_rss_gib']:5.2f} GiB   "
              f"chunked {c['tokens_per_s']:7.0f} tok/s {c['peak_rss_gib']:5.2f} GiB   "
              f"speed x{c['tokens_per_s'] / e['tokens_per_s']:.2f}  memory x{c['peak_rss_gib'] / e['peak_rss_gib']:.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
