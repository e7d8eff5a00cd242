"""What `ambientgen train` runs by and keeps: its options and their defaults, the device's number format, the
learning-rate schedule, the optimizer, checkpoints (safetensors + JSON, resumable bitwise on CPU), metrics.csv."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..util import StageError, atomic_path

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------
# Options

# Optimisation defaults per model config (the model shapes are in models.transformer.CONFIGS).
TRAIN_DEFAULTS: dict[str, dict] = {
    "tiny": dict(steps=1500, batch_size=16, lr=2e-3, warmup=100, eval_every=100, checkpoint_every=100),
    "medium": dict(steps=100000, batch_size=16, lr=1e-3, warmup=200, eval_every=200, checkpoint_every=200),
    "small": dict(steps=20000, batch_size=16, lr=6e-4, warmup=1000, eval_every=500, checkpoint_every=500),
    "base": dict(steps=100000, batch_size=8, lr=3e-4, warmup=4000, eval_every=1000, checkpoint_every=1000),
}
# Fine-tuning a model folder (--init base|DIR): a short warm-up, a peak a quarter of the base's own last peak
# (2e-4; a higher rate undoes what the base knows faster than a few pieces teach), frequent evaluation and early
# stopping, since a user's few pieces are learned (and then over-learned) within minutes. No rehearsal by default:
# the base's windows in half of every batch kept its texture (folk tunes came out as busy textures), and leaving
# them out moves eval NLL by under 0.4% (bench/RESULTS.md, round eleven).
FINETUNE_DEFAULTS = dict(steps=800, batch_size=8, lr=5e-5, warmup=20, eval_every=20, checkpoint_every=40,
                         patience=8, dropout=0.0, replay=0.0)  # dropout 0: as the base was trained


@dataclass
class TrainOptions:
    config: str = "auto"  # auto: small on a GPU, tiny on a CPU; with --init, the init model's own shape
    steps: int | None = None
    minutes: float | None = None
    batch_size: int | None = None
    grad_accum: int = 1
    lr: float | None = None
    min_lr_ratio: float = 0.1
    warmup: int | None = None
    schedule: str = "cosine"  # or "inverse-sqrt"
    weight_decay: float = 0.01
    clip: float = 1.0
    eval_every: int | None = None
    eval_windows: int = 32
    checkpoint_every: int | None = None
    keep: int = 3
    log_every: int = 10
    seq_len: int | None = None  # window length (default: the model's max_len)
    seed: int = 0
    device: str = "auto"
    attn_impl: str = "auto"
    compile: str = "auto"  # auto: on for CUDA
    amp: str = "auto"  # auto: bf16 autocast on CUDA and on CPUs with native bf16
    attention: str | None = None  # override the config: "relative" or "vanilla"
    dropout: float | None = None
    primer_seconds: float = 10.0
    primer_count: int = 8
    resume: bool = False
    max_rollbacks: int = 5
    init: str = "scratch"  # "scratch", "base" (the shipped base model) or a model folder to fine-tune
    patience: int | None = None  # stop after this many evaluations without a better eval NLL
    replay: float | None = None  # share of each batch from the init model's rehearsal set (default 0: none)
    model_overrides: dict = field(default_factory=dict)

    def resolved(self) -> TrainOptions:
        if self.config == "auto":
            return replace(self, config=auto_config(self.device)).resolved()
        d = TRAIN_DEFAULTS.get(self.config)
        if d is None:
            raise StageError(None, f"unknown config {self.config!r}; choose one of {', '.join(TRAIN_DEFAULTS)}")
        if self.init != "scratch":
            d = FINETUNE_DEFAULTS
        out = TrainOptions(**asdict(self))
        for k, v in d.items():
            if getattr(out, k) is None:
                setattr(out, k, v)
        if out.steps <= 0 or out.batch_size <= 0 or out.grad_accum <= 0:
            raise StageError(None, "--steps, --batch-size and --grad-accum must be positive")
        if out.schedule not in ("cosine", "inverse-sqrt"):
            raise StageError(None, f"unknown schedule {out.schedule!r}")
        return out


def auto_config(device: str = "auto") -> str:
    """`small` where training runs on a GPU, `tiny` on a CPU (minutes, not days, on a laptop)."""
    if device.startswith("cuda"):
        return "small"
    if device == "auto":
        import torch

        return "small" if torch.cuda.is_available() else "tiny"
    return "tiny"


METRIC_COLUMNS = ["step", "epoch", "train_loss", "eval_nll", "eval_accuracy", "lr", "tokens_per_s"]

# ---------------------------------------------------------------------------------------------------------
# Number format


def bf16_is_fast(device) -> bool:
    """bf16 autocast pays off on CUDA and on CPUs with native bf16 matmuls (AVX512-BF16/AMX)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and "avx512_bf16" in _cpu_flags()
        except (AttributeError, RuntimeError):
            return False
    return False


def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def autocast(device, amp_dtype):
    import contextlib

    import torch

    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=amp_dtype)


# ---------------------------------------------------------------------------------------------------------
# Schedule, optimizer and checkpoints


def lr_at(step: int, opts: TrainOptions) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up, then cosine or inverse-sqrt."""
    base, warm = opts.lr, max(1, opts.warmup)
    if step < warm:
        return base * (step + 1) / warm
    if opts.schedule == "inverse-sqrt":
        return base * math.sqrt(warm / (step + 1))
    progress = min(1.0, (step - warm) / max(1, opts.steps - warm))
    floor = base * opts.min_lr_ratio
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * progress))


def make_optimizer(model, opts: TrainOptions, device):
    """AdamW (beta2 0.98 as the paper), decay on matrices only, fused kernel where the build has one."""
    import torch

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.endswith(".er")]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or n.endswith(".er")]
    groups = [{"params": decay, "weight_decay": opts.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kw = dict(lr=opts.lr, betas=(0.9, 0.98), eps=1e-9)
    try:
        return torch.optim.AdamW(groups, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, **kw)


def _opt_tensors(opt) -> tuple[dict, list]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{idx}.{k}"] = v.detach().to("cpu").contiguous()
    return tensors, sd["param_groups"]


def _load_opt(opt, tensors: dict, groups: list) -> None:
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


class Checkpointer:
    """OUT/checkpoints/step-NNNNNNN/{model.safetensors, state.safetensors, state.json}, the last k kept."""

    def __init__(self, out_dir: Path, keep: int):
        self.root = out_dir / "checkpoints"
        self.keep = max(1, keep)

    def list(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("step-*") if p.is_dir() and (p / "state.json").is_file())

    def save(self, step: int, model, opt, info: dict) -> Path:
        import torch
        from safetensors.torch import save_file

        from ..models.weights import model_tensors

        dest = self.root / f"step-{step:07d}"
        tmp = self.root / f".tmp-step-{step:07d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(model_tensors(model), str(tmp / "model.safetensors"))
        tensors, groups = _opt_tensors(opt)
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**info, "step": step, "param_groups": groups}, indent=1))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        for old in self.list()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return dest

    def load(self, path: Path, model, opt) -> dict:
        import torch
        from safetensors.torch import load_file

        from ..models.weights import load_tensors_into

        try:
            info = json.loads((path / "state.json").read_text())
            load_tensors_into(model, load_file(str(path / "model.safetensors")), source=str(path))
            tensors = load_file(str(path / "state.safetensors"))
            _load_opt(opt, tensors, info["param_groups"])
            torch.set_rng_state(tensors["rng.torch"])
            if "rng.cuda" in tensors and torch.cuda.is_available():
                torch.cuda.set_rng_state(tensors["rng.cuda"])
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise StageError(path, f"cannot restore checkpoint: {type(exc).__name__}: {exc}"[:300]) from None
        return info


# ---------------------------------------------------------------------------------------------------------
# Metrics


def read_metrics(path: Path, upto: int) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [r for r in csv.DictReader(fh) if r.get("step") and int(r["step"]) <= upto]


def write_metrics(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in METRIC_COLUMNS})


def fmt(v: float | None) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.6g}"
