"""What `ambientgen train` needs to start from a trained model and to keep the best one.

* the model folder to start from (``--init base|scratch|DIR``) and the model shape that follows from it;
* ``Best``: the weights with the lowest eval NLL seen so far, kept on disk beside the checkpoints, so that a
  fine-tuning run that starts to over-learn a user's few pieces still ends with its best model, even across
  ``--resume``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

from ..util import StageError, atomic_path

log = logging.getLogger(__name__)
BEST_FILE = "best.safetensors"
REPLAY_FILE = "replay.safetensors"  # corpus windows shipped beside the base model, mixed into fine-tuning batches
REPLAY_WINDOWS = 2048
MAX_REPLAY_BYTES = 32 * 2**20


def init_dir(opts) -> Path | None:
    """The folder opts.init names (None for scratch, or for 'base' when no base model is shipped)."""
    from ..models.base import resolve_init
    from ..music import performance

    if opts.init in (None, "", "scratch"):
        return None
    return resolve_init(opts.init, performance.VOCAB_SIZE, performance.PAD_ID, performance.EOS_ID)


def model_config(opts, init: Path | None, explicit_config: bool = False):
    """The model's TransformerConfig: the named config (with overrides), or the init folder's own shape."""
    from ..models.base import check_model_dir
    from ..models.transformer import get_config
    from ..music import performance

    overrides = dict(opts.model_overrides)
    if opts.attention:
        overrides["attention"] = opts.attention
    if opts.dropout is not None:
        overrides["dropout"] = opts.dropout
    if init is None:
        try:
            overrides.setdefault("vocab_size", performance.VOCAB_SIZE)
            overrides.setdefault("pad_id", performance.PAD_ID)
            overrides.setdefault("eos_id", performance.EOS_ID)
            return get_config(opts.config, **overrides)
        except ValueError as exc:
            raise StageError(None, str(exc)) from None
    cfg, _ = check_model_dir(init)
    changed = {k: v for k, v in overrides.items() if k != "dropout" and getattr(cfg, k, v) != v}
    if changed:
        raise StageError(init, f"cannot fine-tune with a different model shape ({changed}); the shape comes "
                         "from the --init model (use --init scratch for a new shape)")
    if explicit_config:
        named = get_config(opts.config).to_dict()
        shape = {k: named[k] for k in ("n_layer", "n_head", "d_model", "d_ff", "max_len")}
        have = {k: getattr(cfg, k) for k in shape}
        if shape != have:
            raise StageError(init, f"--config {opts.config} has shape {shape}, the --init model {have}: "
                             "fine-tuning keeps the model's shape (omit --config, or use --init scratch)")
    return replace(cfg, dropout=overrides.get("dropout", cfg.dropout))


def config_name(init: Path) -> str:
    """The named config of a fine-tuned model: its init model's (fine-tuning keeps the shape)."""
    from ..models.base import check_model_dir

    _, meta = check_model_dir(init)
    name = meta.get("config_name")
    return name if isinstance(name, str) else "init"


def load_init(model, folder: Path) -> None:
    """Copy the folder's weights (fp16 or fp32) into the freshly built model."""
    from safetensors.torch import load_file

    from ..models.base import MODEL_FILE
    from ..models.weights import load_tensors_into

    try:
        tensors = {k: v.float() for k, v in load_file(str(folder / MODEL_FILE)).items()}
        load_tensors_into(model, tensors, source=f"weights of {folder}")
    except (OSError, ValueError, RuntimeError) as exc:
        raise StageError(folder / MODEL_FILE, f"cannot load the --init weights: {exc}") from None
    log.info("starting from the weights of %s", folder)


class Best:
    """The lowest eval NLL so far, its step, and its weights in OUT/best.safetensors."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / BEST_FILE
        self.nll = math.inf
        self.accuracy: float | None = None
        self.step: int | None = None
        self.stale = 0  # evaluations since the last improvement

    def state(self) -> dict:
        return {"nll": None if math.isinf(self.nll) else self.nll, "accuracy": self.accuracy, "step": self.step,
                "stale": self.stale}

    def set_state(self, state: dict | None) -> None:
        if not state:
            return
        self.nll = math.inf if state.get("nll") is None else float(state["nll"])
        self.accuracy, self.step, self.stale = state.get("accuracy"), state.get("step"), int(state.get("stale", 0))

    def offer(self, step: int, nll: float, accuracy: float, model) -> bool:
        """Keep the model's weights if nll beats the best so far (by more than noise); True if it did."""
        from safetensors.torch import save_file

        from ..models.weights import model_tensors

        if not math.isfinite(nll) or nll >= self.nll - 1e-4:
            self.stale += 1
            return False
        with atomic_path(self.path) as tmp:
            save_file(model_tensors(model), str(tmp))
        self.nll, self.accuracy, self.step, self.stale = nll, accuracy, step, 0
        return True

    def load_into(self, model) -> bool:
        """Put the best weights into the model (True), or leave it as it is when there are none (False)."""
        if self.step is None or not self.path.is_file():
            return False
        from safetensors.torch import load_file

        from ..models.weights import load_tensors_into

        device = next(model.parameters()).device
        load_tensors_into(model, {k: v.to(device) for k, v in load_file(str(self.path)).items()},
                          source=str(self.path))
        return True


def load_replay(folder: Path | None, vocab_size: int, pad_id: int) -> list:
    """The rehearsal windows shipped beside the init model ([] when it has none), checked before use: int16 ids
    inside the vocabulary, at most MAX_REPLAY_BYTES."""
    import numpy as np

    from ..models.base import read_safetensors_header

    path = folder / REPLAY_FILE if folder is not None else None
    if path is None or not path.is_file():
        return []
    if path.stat().st_size > MAX_REPLAY_BYTES:
        raise StageError(path, f"a rehearsal set is a few MB; this file has {path.stat().st_size:,} bytes")
    header = read_safetensors_header(path)
    info = header.get("tokens")
    if not isinstance(info, dict) or info.get("dtype") != "I16" or len(info.get("shape", [])) != 2:
        raise StageError(path, "a rehearsal set holds one int16 tensor 'tokens' of shape (windows, length)")
    from safetensors.numpy import load_file

    tokens = load_file(str(path))["tokens"]
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise StageError(path, f"token ids outside the vocabulary (0..{vocab_size - 1})")
    rows = [r[r != pad_id].astype(np.int64) for r in tokens]
    return [r for r in rows if len(r) > 1]
