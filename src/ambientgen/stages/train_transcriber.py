"""`ambientgen train-transcriber`: train the Onsets and Frames transcriber on audio rendered from public-domain scores.

The training data (see ambientgen.music.synth_data) is rendered into OUT_DIR/data unless --data points at a
folder made before. Checkpoints are safetensors (model, optimizer) plus JSON (config, step, losses); the last
three are kept and --resume continues from the newest one.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..util import StageError, atomic_path, iter_files, progress, write_json

HELP = "train the Onsets and Frames transcriber on rendered public-domain scores"
EXAMPLES = """
  ambientgen train-transcriber runs/of --minutes 45
  ambientgen train-transcriber runs/of --data runs/of/data --steps 20000 --resume
  ambientgen train-transcriber runs/of2 --data runs/of/data --init shipped --minutes 90 --threads 1
"""
log = logging.getLogger(__name__)
KEEP_CHECKPOINTS = 3
DEFAULT_LR = 6e-4  # the paper's Adam learning rate


class TrainingData:
    """All rendered training examples of the 'train' split in memory, re-scanned as new ones appear."""

    def __init__(self, data_dir: str | Path, seq_frames: int, seed: int = 0):
        self.data_dir = Path(data_dir)
        self.seq_frames = seq_frames
        self.rng = np.random.default_rng(seed)
        self.examples: dict[str, dict[str, np.ndarray]] = {}
        self.refresh()

    def refresh(self) -> int:
        """Load examples not loaded yet; held-out (test split) works are refused. Returns how many are loaded."""
        import torch

        from ..models.onsets_frames import frame_weights
        from ..music.synth_data import load_example, split_of

        for npz in iter_files(self.data_dir, [".npz"]):
            key = str(npz)
            if key in self.examples:
                continue
            meta_path = npz.with_suffix(".json")
            if not meta_path.exists():  # still being written (its .json comes last)
                continue
            try:
                meta = json.loads(meta_path.read_text())
                if split_of(meta["work"]) != "train":
                    log.warning("%s: held-out work %s, not used for training", npz, meta["work"])
                    self.examples[key] = {}
                    continue
                ex = load_example(npz)
                on = torch.from_numpy(ex["onset"]).unsqueeze(0)
                fr = torch.from_numpy(ex["frame"]).unsqueeze(0)
                ex["frame_weight"] = frame_weights(on, fr)[0].numpy().astype(np.float16)
                self.examples[key] = ex
            except (OSError, ValueError, KeyError) as exc:
                log.warning("%s: cannot load training example: %s", npz, exc)
                self.examples[key] = {}
        n = sum(1 for e in self.examples.values() if e)
        if n == 0:
            raise StageError(self.data_dir, "no training examples (.npz made by synth_data) found")
        return n

    def batch(self, size: int) -> dict[str, Any]:
        import torch

        usable = [e for e in self.examples.values() if e]
        lengths = np.array([e["mel"].shape[0] for e in usable], dtype=np.float64)
        picks = self.rng.choice(len(usable), size=size, p=lengths / lengths.sum())
        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("mel", "onset", "frame", "velocity", "frame_weight")}
        from ..models.onsets_frames import SILENCE

        for i in picks:
            ex = usable[i]
            t = ex["mel"].shape[0]
            n = self.seq_frames
            s = int(self.rng.integers(0, max(t - n, 0) + 1))
            for k in cols:
                a = ex[k][s:s + n]
                if a.shape[0] < n:  # short example: pad with silence
                    fill = SILENCE if k == "mel" else (1.0 if k == "frame_weight" else 0)
                    a = np.concatenate([a, np.full((n - a.shape[0], a.shape[1]), fill, a.dtype)])
                cols[k].append(a)
        out = {k: torch.from_numpy(np.stack(v).astype(np.float32)) for k, v in cols.items()}
        return out


def _save_optimizer(opt, path: Path) -> None:
    from safetensors.torch import save_file

    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for name, val in st.items():
            tensors[f"state.{idx}.{name}"] = val.detach().cpu().contiguous() if hasattr(val, "detach") else \
                __import__("torch").tensor(val)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"param_groups": json.dumps(sd["param_groups"])})


def _load_optimizer(opt, path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
        state: dict[int, dict[str, Any]] = {}
        for key in f.keys():
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = f.get_tensor(key)
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_training_checkpoint(model, opt, out_dir: Path, state: dict[str, Any]) -> Path:
    """OUT_DIR/ckpt-STEP/{model.safetensors, config.json, optimizer.safetensors, rng.safetensors, state.json}
    (state.json holds the data sampler's RNG state); the last 3 are kept. Resuming from it is exact."""
    import torch
    from safetensors.torch import save_file

    from ..models.onsets_frames import save_checkpoint

    d = out_dir / f"ckpt-{state['step']:07d}"
    save_checkpoint(model, d, extra={"step": state["step"]})
    _save_optimizer(opt, d / "optimizer.safetensors")
    save_file({"torch": torch.get_rng_state()}, str(d / "rng.safetensors"))
    write_json(d / "state.json", state)
    write_json(out_dir / "latest.json", {"checkpoint": d.name, "step": state["step"]})
    for old in sorted(out_dir.glob("ckpt-*"))[:-KEEP_CHECKPOINTS]:
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    return d


def latest_checkpoint(out_dir: Path) -> Path | None:
    latest = out_dir / "latest.json"
    if latest.is_file():
        d = out_dir / json.loads(latest.read_text())["checkpoint"]
        if (d / "state.json").is_file():
            return d
    cands = sorted(p for p in out_dir.glob("ckpt-*") if (p / "state.json").is_file())
    return cands[-1] if cands else None


def train(out_dir: str | Path, data_dir: str | Path | None = None, steps: int = 10_000, minutes: float | None = None,
          resume: bool = False, batch_size: int = 8, seq_frames: int = 160, lr: float | None = None,
          pieces: int = 200, seed: int = 0, checkpoint_every: int = 500, threads: int | None = None,
          model_config: dict[str, Any] | None = None, init: str | Path | None = None) -> dict[str, Any]:
    """Train until `steps` (total, counting resumed ones) or `minutes` (this run) is reached; returns the state.

    `init` (a checkpoint folder or "shipped") starts a new run from those weights and their architecture instead
    of random ones; a resumed run ignores it."""
    import torch

    from ..models.onsets_frames import ModelConfig, build_model, compute_loss, load_config
    from ..music.synth_data import make_dataset

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    if data_dir is None:
        data_dir = out_dir / "data"
        make_dataset(data_dir, "train", count=pieces, seed=seed + 1)
    data = TrainingData(data_dir, seq_frames, seed)

    ckpt = latest_checkpoint(out_dir) if resume else None
    if resume and ckpt is None:
        log.warning("%s: no checkpoint to resume from; starting afresh", out_dir)
    start_from = None
    if ckpt:
        cfg = load_config(ckpt / "config.json")
    elif init is not None:
        from ..models.onsets_frames import load_torch_model

        start_from, cfg = load_torch_model(None if str(init) == "shipped" else init)
    else:
        cfg = ModelConfig.from_json({**ModelConfig().to_json(), **(model_config or {})})
    model = build_model(cfg)
    if start_from is not None:
        model.load_state_dict({k: v.float() for k, v in start_from.state_dict().items()})
        log.info("starting from the weights of %s", init)
    opt = torch.optim.Adam(model.parameters(), lr=lr or DEFAULT_LR)
    state: dict[str, Any] = {"step": 0, "seconds": 0.0, "history": [], "batch_size": batch_size,
                             "seq_frames": seq_frames, "lr": lr or DEFAULT_LR,
                             "init": str(init) if init is not None else None}
    if ckpt:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
        _load_optimizer(opt, ckpt / "optimizer.safetensors")
        state = json.loads((ckpt / "state.json").read_text())
        if "data_rng" in state:  # the same batches as an uninterrupted run
            data.rng.bit_generator.state = state["data_rng"]
        if (ckpt / "rng.safetensors").is_file():
            torch.set_rng_state(load_file(str(ckpt / "rng.safetensors"))["torch"])
        if lr is not None and lr != state.get("lr"):  # a learning rate given for this run wins
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] = lr
            state["lr"] = lr
        state.setdefault("runs", []).append({"from_step": state["step"], "batch_size": batch_size,
                                             "seq_frames": seq_frames, "threads": threads,
                                             "lr": state["lr"]})
        log.info("resumed from %s (step %d)", ckpt, state["step"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.98 ** ((state["step"]) / 1000))
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model: %d parameters, %d training examples in %s", n_params, len(data.examples), data_dir)

    model.train()
    t0 = time.monotonic()
    deadline = t0 + minutes * 60 if minutes else math.inf
    run = {"loss": 0.0, "onset": 0.0, "frame": 0.0, "velocity": 0.0, "n": 0}
    start_step = state["step"]
    bar = progress(range(start_step, steps), "train-transcriber", total=steps - start_step, unit="step")
    for _ in bar:
        if time.monotonic() > deadline:
            log.info("time budget of %.1f min reached", minutes)
            break
        if state["step"] % 200 == 0 and state["step"] > start_step:
            data.refresh()
        batch = data.batch(batch_size)
        out = model(batch["mel"])
        losses = compute_loss(out, batch)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        opt.step()
        state["step"] += 1
        sched.step()
        for k in ("loss", "onset", "frame", "velocity"):
            run[k] += float(losses[k].detach())
        run["n"] += 1
        if state["step"] % 50 == 0:
            avg = {k: round(run[k] / run["n"], 5) for k in ("loss", "onset", "frame", "velocity")}
            elapsed = state["seconds"] + time.monotonic() - t0
            row = {"step": state["step"], "seconds": round(elapsed, 1), **avg}
            state["history"].append(row)
            with open(out_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
            log.info("step %d  loss %.4f  onset %.4f  frame %.4f  velocity %.4f  (%.0f s, %d examples)",
                     state["step"], avg["loss"], avg["onset"], avg["frame"], avg["velocity"], elapsed,
                     sum(1 for e in data.examples.values() if e))
            run = dict.fromkeys(run, 0.0)
            run["n"] = 0
        if state["step"] % checkpoint_every == 0:
            save_training_checkpoint(model, opt, out_dir, {**state, "data_rng": data.rng.bit_generator.state,
                                                           "seconds": state["seconds"] + time.monotonic() - t0})
    state["seconds"] = state["seconds"] + time.monotonic() - t0
    state["examples"] = sum(1 for e in data.examples.values() if e)
    model.eval()
    d = save_training_checkpoint(model, opt, out_dir, {**state, "data_rng": data.rng.bit_generator.state})
    log.info("checkpoint %s (step %d, %.1f min of training in all)", d, state["step"], state["seconds"] / 60)
    return state


def export_checkpoint(checkpoint_dir: str | Path, dest_dir: str | Path, fp16: bool = True) -> Path:
    """Copy a training checkpoint's weights (fp16 by default) and config into dest_dir for shipping."""
    from ..models.onsets_frames import load_torch_model, save_checkpoint

    model, _ = load_torch_model(checkpoint_dir)
    step = json.loads((Path(checkpoint_dir) / "config.json").read_text()).get("step")
    return save_checkpoint(model, dest_dir, fp16=fp16, extra={"step": step} if step is not None else None)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output_dir", help="where checkpoints, metrics and (without --data) rendered data go")
    p.add_argument("--data", default=None, help="folder of rendered examples (default: render into OUT_DIR/data)")
    p.add_argument("--pieces", type=int, default=200, help="examples to render when --data is not given (200)")
    p.add_argument("--steps", type=int, default=10_000, help="total training steps (10000)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this many minutes of this run")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT_DIR")
    p.add_argument("--batch-size", type=int, default=8, help="examples per step (8)")
    p.add_argument("--seq-frames", type=int, default=160, help="frames per example crop, 32 ms each (160 = 5.1 s)")
    p.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate (default 6e-4 as in the paper; on --resume: the saved one)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (500)")
    p.add_argument("--init", default=None, metavar="DIR",
                   help="start a new run from these weights: a checkpoint folder, or 'shipped' for the packaged model")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="after training, write the fp16 model.safetensors + config.json to DIR")


def main(args: argparse.Namespace) -> int:
    state = train(args.output_dir, args.data, args.steps, args.minutes, args.resume, args.batch_size,
                  args.seq_frames, args.lr, args.pieces, checkpoint_every=args.checkpoint_every, threads=args.threads,
                  init=args.init)
    if args.export:
        ckpt = latest_checkpoint(Path(args.output_dir))
        print(export_checkpoint(ckpt, args.export))
    print(f"step {state['step']}  {state['seconds'] / 60:.1f} min  last loss "
          f"{state['history'][-1]['loss'] if state['history'] else float('nan')}")
    return 0
