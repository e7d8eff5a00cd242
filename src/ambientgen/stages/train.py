"""Stage 5: train the Music Transformer on the TFRecord data set written by `ambientgen make-dataset`.

Reads DATA_DIR/performance/train*.tfrecord and eval*.tfrecord (int64 feature ``targets``: one piece's performance
tokens). Batches are random windows of at most max_len+1 tokens, grouped by length so that little padding
is needed. Every ``--eval-every`` steps the eval NLL per token and accuracy are measured; every
``--checkpoint-every`` steps a checkpoint is written (safetensors + JSON, the last ``--keep`` kept), holding
the weights, optimizer moments, RNG states and the data sampler position, so that ``--resume`` ends with
bitwise the same weights (on CPU) as an uninterrupted run.

Output (OUT_DIR): model.safetensors + config.json (the model), metrics.csv, primers.json (the first seconds of
a few pieces as token ids, for priming generation), checkpoints/step-NNNNNNN/.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .. import env
from ..music.performance import note_seconds
from ..music.tfrecord_io import load_split
from ..util import StageError, write_json
from . import finetune
from .train_data import (
    MixedSampler,
    collate,
    eval_windows,
    evaluate,
    first_tokens,
    make_primers,
    make_sampler,
)
from .train_state import (
    TRAIN_DEFAULTS,
    Checkpointer,
    TrainOptions,
    autocast,
    bf16_is_fast,
    fmt,
    lr_at,
    make_optimizer,
    read_metrics,
    write_metrics,
)

HELP = "train the Music Transformer (resumable safetensors checkpoints, metrics.csv)"
EXAMPLES = """
  ambientgen train /pfs/transformer-preprocess /pfs/out
  ambientgen train dataset/ model/ --minutes 4                 # fine-tune the shipped base model
  ambientgen train dataset/ model/ --init scratch --config tiny --minutes 10
  ambientgen train dataset/ model/ --init other_model/ --patience 4
  ambientgen train dataset/ model/ --config tiny --steps 2000 --resume
  ambientgen train dataset/ model/ --config base --batch-size 4 --grad-accum 4 --device cuda
"""
log = logging.getLogger(__name__)

@dataclass
class TrainResult:
    out_dir: Path
    step: int
    final_train_loss: float | None
    eval_nll: float | None
    eval_accuracy: float | None
    tokens_per_s: float
    interrupted: bool = False
    rollbacks: int = 0
    resumed_from: int | None = None
    best_step: int | None = None
    init: str | None = None


# ---------------------------------------------------------------------------------------------------------
# Training loop


class _Stop:
    """Turns SIGTERM/SIGINT into a flag checked between steps (handlers restored afterwards)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self) -> _Stop:
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # a second signal: give up at once
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("received signal %d: saving a checkpoint and stopping", signum)

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def accumulate_gradients(fwd, micro: list, pad_id: int, device, amp_dtype=None) -> float:
    """Backward over micro-batches, each weighted by its share of the non-pad tokens, so the gradient is that of
    one batch holding them all; returns that batch's mean loss."""
    n_tok = sum(int((y != pad_id).sum()) for _, y in micro)
    loss_sum = 0.0
    for x, y in micro:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            _, loss = fwd(x, y)
        w = int((y != pad_id).sum()) / max(n_tok, 1)
        (loss * w).backward()
        loss_sum += float(loss.detach()) * w
    return loss_sum


def train(data_dir: str | Path, out_dir: str | Path, opts: TrainOptions | None = None,
          fault_hook: Callable[[int, object], None] | None = None) -> TrainResult:
    """Train (or resume) a Music Transformer from DATA_DIR's TFRecord splits into OUT_DIR.

    ``fault_hook(step, model)``, if given, runs before each step (tests use it to inject faults).
    """
    import torch

    from ..models.transformer import MusicTransformer
    from ..models.weights import save_model_dir

    opts = opts or TrainOptions()
    init_dir = finetune.init_dir(opts)
    explicit_config = opts.config != "auto"
    opts = replace(opts, init=str(init_dir) if init_dir else "scratch").resolved()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise StageError(data_dir, "data directory does not exist")
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(out_dir, opts.keep)
    if ckpt.list() and not opts.resume:
        raise StageError(out_dir, "holds checkpoints from an earlier run: pass --resume, or use an empty directory")

    device = torch.device("cuda" if opts.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if opts.device == "auto" else opts.device))
    amp_dtype = torch.bfloat16 if (opts.amp == "on" or (opts.amp == "auto" and bf16_is_fast(device))) else None
    use_compile = opts.compile == "on" or (opts.compile == "auto" and device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    cfg = finetune.model_config(opts, init_dir, explicit_config)
    window = min(opts.seq_len or cfg.max_len, cfg.max_len) + 1

    train_pieces = load_split(data_dir, "train")
    if not train_pieces:
        raise StageError(data_dir, "no training data: expected train*.tfrecord with pieces (run make-dataset)")
    eval_pieces = load_split(data_dir, "eval")
    if not eval_pieces:
        log.warning("%s: no eval split; evaluating on training windows", data_dir)
        eval_pieces = train_pieces
    bad = [int(p.max()) for p in train_pieces if p.max() >= cfg.vocab_size or p.min() < 0]
    if bad:
        raise StageError(data_dir, f"token id {max(bad)} outside the vocabulary (size {cfg.vocab_size})")
    train_tokens = sum(len(p) for p in train_pieces)
    log.info("data: %d train pieces (%d tokens), %d eval pieces", len(train_pieces), train_tokens, len(eval_pieces))

    torch.manual_seed(opts.seed)
    model = MusicTransformer(cfg)
    if init_dir is not None:
        finetune.load_init(model, init_dir)
    model = model.to(device)
    impl = model.set_attn_impl(opts.attn_impl, amp_dtype=amp_dtype, compiled=use_compile)
    opt = make_optimizer(model, opts, device)
    replay = finetune.load_replay(init_dir, cfg.vocab_size, cfg.pad_id) if opts.replay else []
    sampler = make_sampler(train_pieces, replay, opts, window)
    if isinstance(sampler, MixedSampler):
        log.info("rehearsal: %d corpus windows shipped with %s, %d of every %d windows", len(replay), init_dir,
                 sampler.replay.batch_size, opts.batch_size)
    ev_windows = eval_windows(eval_pieces, window, opts.eval_windows)
    log.info("model %s (%s attention, %s kernel): %.2fM parameters on %s%s%s",
             f"fine-tuned from {init_dir}" if init_dir else opts.config, cfg.attention, impl,
             model.num_params() / 1e6, device, ", bf16" if amp_dtype else "", ", compiled" if use_compile else "")

    step, tokens_seen, lr_scale, rollbacks, resumed_from = 0, 0, 1.0, 0, None
    best = finetune.Best(out_dir)
    metrics_path = out_dir / "metrics.csv"
    if opts.resume and ckpt.list():
        latest = ckpt.list()[-1]
        info = ckpt.load(latest, model, opt)
        step, tokens_seen, lr_scale = info["step"], info["tokens_seen"], info.get("lr_scale", 1.0)
        best.set_state(info.get("best"))
        sampler.set_state(info["sampler"])
        resumed_from = step
        log.info("resumed from %s (step %d)", latest, step)
    rows = read_metrics(metrics_path, step)
    fwd = torch.compile(model) if use_compile else model

    def save_ckpt() -> Path:
        write_metrics(metrics_path, rows)
        return ckpt.save(step, model, opt, {"tokens_seen": tokens_seen, "lr_scale": lr_scale,
                                            "sampler": sampler.state(), "config": opts.config,
                                            "best": best.state(),
                                            "model": cfg.to_dict(), "options": asdict(opts)})

    if not ckpt.list():
        if init_dir is not None:  # the starting point is a candidate too: fine-tuning must beat it
            nll, acc = evaluate(model, ev_windows, opts.batch_size, device, amp_dtype)
            rows.append({"step": 0, "epoch": "0", "eval_nll": fmt(nll), "eval_accuracy": fmt(acc)})
            best.offer(0, nll, acc, model)
            log.info("step 0 (%s): eval NLL %.4f, accuracy %.3f", init_dir.name, nll, acc)
        save_ckpt()  # step 0: the rollback target before the first regular checkpoint

    deadline = time.monotonic() + opts.minutes * 60 if opts.minutes else None
    from tqdm import tqdm

    bar = tqdm(total=opts.steps, initial=step, desc="train", unit="step", dynamic_ncols=True, leave=False,
               disable=env.no_progress())
    t_start, tok_window, t_window = time.monotonic(), 0, time.monotonic()
    loss_acc, loss_n, last_loss, tps = 0.0, 0, None, 0.0
    interrupted = False
    model.train()
    with _Stop() as stop:
        while step < opts.steps:
            if stop.signum is not None or (deadline and time.monotonic() > deadline):
                interrupted = stop.signum is not None
                break
            if opts.patience and best.stale >= opts.patience:
                log.info("no better eval NLL in %d evaluations: stopping at step %d (best: step %d, %.4f)",
                         best.stale, step, best.step, best.nll)
                break
            if fault_hook:
                fault_hook(step, model)
            lr = lr_at(step, opts) * lr_scale
            for g in opt.param_groups:
                g["lr"] = lr
            micro = [collate(sampler.next(), cfg.pad_id) for _ in range(opts.grad_accum)]
            n_tok = sum(int((y != cfg.pad_id).sum()) for _, y in micro)
            opt.zero_grad(set_to_none=True)
            loss_sum = accumulate_gradients(fwd, micro, cfg.pad_id, device, amp_dtype)
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), opts.clip)
            if not (math.isfinite(loss_sum) and math.isfinite(float(gnorm))):
                rollbacks += 1
                if rollbacks > opts.max_rollbacks:
                    last_good = ckpt.list()[-1] if ckpt.list() else None
                    raise StageError(out_dir, f"loss is not finite at step {step + 1} after {opts.max_rollbacks} "
                                     f"rollbacks; last good checkpoint: {last_good}")
                good = ckpt.list()[-1]
                data_state = sampler.state()
                info = ckpt.load(good, model, opt)
                step, tokens_seen = info["step"], info["tokens_seen"]
                lr_scale *= 0.5
                sampler.set_state(data_state)  # move on past the bad batch, do not replay it
                rows[:] = [r for r in rows if int(r["step"]) <= step]
                bar.n = step
                log.error("non-finite loss/gradient at step %d: rolled back to %s, learning rate scale %.3g",
                          step + 1, good.name, lr_scale)
                continue
            opt.step()
            step += 1
            tokens_seen += n_tok
            tok_window += n_tok
            loss_acc += loss_sum
            loss_n += 1
            last_loss = loss_sum
            bar.update(1)
            now = time.monotonic()
            if now - t_window > 0:
                tps = tok_window / (now - t_window)
            bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{tps:.0f}", lr=f"{lr:.2e}", refresh=False)
            is_eval = step % opts.eval_every == 0 or step == opts.steps
            if step % opts.log_every == 0 or is_eval:
                row = {"step": step, "epoch": f"{tokens_seen / train_tokens:.4f}",
                       "train_loss": fmt(loss_acc / max(loss_n, 1)), "lr": fmt(lr), "tokens_per_s": f"{tps:.1f}"}
                if is_eval:
                    nll, acc = evaluate(model, ev_windows, opts.batch_size, device, amp_dtype)
                    row.update(eval_nll=fmt(nll), eval_accuracy=fmt(acc))
                    best.offer(step, nll, acc, model)
                    log.info("step %d: train loss %.4f, eval NLL %.4f, accuracy %.3f, %.0f tokens/s",
                             step, loss_acc / max(loss_n, 1), nll, acc, tps)
                rows.append(row)
                if is_eval:  # readable while training runs
                    write_metrics(metrics_path, rows)
                loss_acc, loss_n, tok_window, t_window = 0.0, 0, 0, time.monotonic()
            if step % opts.checkpoint_every == 0:
                save_ckpt()
        bar.close()
        stopped_early = step < opts.steps
        if not ckpt.list() or int(ckpt.list()[-1].name.split("-")[1]) != step:
            save_ckpt()
        write_metrics(metrics_path, rows)
        last_eval = next((r for r in reversed(rows) if r.get("eval_nll")), None)
        nll = float(last_eval["eval_nll"]) if last_eval else None
        acc = float(last_eval["eval_accuracy"]) if last_eval else None
        if best.load_into(model):  # the model folder holds the weights with the best eval NLL
            nll, acc = best.nll, best.accuracy
        save_model_dir(model, out_dir, {
            "config_name": finetune.config_name(init_dir) if init_dir else opts.config, "step": step,
            "tokens_seen": tokens_seen, "attn_impl": impl,
            "init": str(init_dir) if init_dir else "scratch", "best_step": best.step,
            "eval_nll": nll, "eval_accuracy": acc, "complete": not stopped_early,
            "train_seconds": round(time.monotonic() - t_start, 1),
            "note_seconds": note_seconds(train_pieces),  # what the hold guard of generate goes by
            "first_tokens": first_tokens(train_pieces)})
        primer_src = [(f"eval:{i}", p) for i, p in enumerate(eval_pieces)]
        primer_src += [(f"train:{i}", p) for i, p in enumerate(train_pieces)]
        write_json(out_dir / "primers.json", {"seconds": opts.primer_seconds,
                                              "primers": make_primers(primer_src, opts.primer_seconds,
                                                                      opts.primer_count)})
        if stop.signum is not None:
            interrupted = True
    if interrupted:
        log.warning("stopped at step %d by a signal; continue with --resume", step)
    elif stopped_early:
        log.info("time limit reached at step %d of %d; continue with --resume", step, opts.steps)
    return TrainResult(out_dir, step, last_loss, nll, acc, tps, interrupted, rollbacks, resumed_from, best.step,
                       str(init_dir) if init_dir else None)


# ---------------------------------------------------------------------------------------------------------
# CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data_dir", help="data set directory (make-dataset output: performance/{train,eval}.tfrecord)")
    p.add_argument("output_dir", help="model directory: model.safetensors, config.json, metrics.csv, checkpoints/")
    p.add_argument("--config", default="auto", choices=["auto", *TRAIN_DEFAULTS],
                   help="model size (default auto: the --init model's shape; from scratch small on a GPU, tiny "
                        "on a CPU)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (also the schedule's length)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this many minutes (checkpointed)")
    p.add_argument("--batch-size", type=int, default=None, help="windows per micro-batch")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps")
    p.add_argument("--schedule", default="cosine", choices=["cosine", "inverse-sqrt"], help="learning-rate schedule")
    p.add_argument("--seq-len", type=int, default=None, help="window length in tokens (default: model max_len)")
    p.add_argument("--eval-every", type=int, default=None, help="evaluate every N steps")
    p.add_argument("--checkpoint-every", type=int, default=None, help="checkpoint every N steps")
    p.add_argument("--keep", type=int, default=3, help="checkpoints to keep (default 3)")
    p.add_argument("--attention", choices=["relative", "vanilla"], default=None, help="attention type (default relative)")
    p.add_argument("--dropout", type=float, default=None, help="dropout (default per config)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--attn-impl", default="auto", choices=["auto", "explicit", "chunked", "sdpa", "flex"],
                   help="attention kernel (auto: explicit on a CPU; on CUDA flex when compiled, else sdpa)")
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"], help="torch.compile (auto: on CUDA)")
    p.add_argument("--amp", default="auto", choices=["auto", "on", "off"], help="bf16 autocast (auto: on CUDA and bf16-capable CPUs)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in OUTPUT_DIR")
    p.add_argument("--init", default="base",
                   help="start from: base (the shipped base model, default; scratch when none is shipped), "
                        "scratch, or a model folder")
    p.add_argument("--patience", type=int, default=None,
                   help="stop after N evaluations without a better eval NLL (default 8 when fine-tuning)")
    p.add_argument("--replay", type=float, default=None, metavar="SHARE",
                   help="share of each fine-tuning batch taken from the rehearsal windows shipped with the init "
                        "model (the base model's corpus; default 0, none): the model keeps more of what it knew, "
                        "and adapts less to your music's texture")


def main(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    opts = TrainOptions(config=args.config, steps=args.steps, minutes=args.minutes, batch_size=args.batch_size,
                        grad_accum=args.grad_accum, lr=args.lr, warmup=args.warmup, schedule=args.schedule,
                        seq_len=args.seq_len, eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
                        keep=args.keep, attention=args.attention, dropout=args.dropout, seed=args.seed,
                        device=args.device, attn_impl=args.attn_impl, compile=args.compile, amp=args.amp,
                        resume=args.resume, init=args.init, patience=args.patience, replay=args.replay)
    res = train(args.data_dir, args.output_dir, opts)
    resumed = f" (resumed from step {res.resumed_from})" if res.resumed_from is not None else ""
    start = f"fine-tuned from {res.init}, " if res.init else ""
    print(f"{res.out_dir}: {start}step {res.step}{resumed}, best step {res.best_step}, eval NLL {res.eval_nll}, "
          f"accuracy {res.eval_accuracy}")
    return 143 if res.interrupted else 0
