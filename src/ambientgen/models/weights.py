"""Model folders: model.safetensors + config.json (never pickle), written atomically and read back only after
models.base has checked their shapes."""

from __future__ import annotations

import torch

from .base import CONFIG_FILE, MODEL_FILE, check_model_dir
from .transformer import MusicTransformer


def model_tensors(model: MusicTransformer, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The state dict as plain contiguous CPU tensors (in ``dtype`` if given), without the tied output head (it is
    wte.weight)."""
    sd = model.state_dict()
    if model.cfg.tie_embeddings:
        sd.pop("head.weight", None)
    return {k: v.detach().to("cpu", dtype=dtype or v.dtype).contiguous() for k, v in sd.items()}


def load_tensors_into(model: MusicTransformer, tensors: dict[str, torch.Tensor], source: str = "weights") -> None:
    """Copy tensors into the model; any missing, unexpected or mis-shaped tensor is a ValueError naming it."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        expected.pop("head.weight", None)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    bad = sorted(k for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != tuple(expected[k]))
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
    if bad:
        problems.append("shape mismatch " + ", ".join(
            f"{k} {tuple(tensors[k].shape)} != {tuple(expected[k])}" for k in bad[:5]))
    if problems:
        raise ValueError(f"{source} do not match the config: " + "; ".join(problems))
    model.load_state_dict(tensors, strict=False)


def save_model_dir(model: MusicTransformer, out_dir, meta: dict | None = None,
                   dtype: torch.dtype | None = None) -> None:
    """Write out_dir/model.safetensors (in ``dtype`` if given) and out_dir/config.json ({"model": config, **meta})
    atomically."""
    from pathlib import Path

    from safetensors.torch import save_file

    from ..util import atomic_path, write_json

    out_dir = Path(out_dir)
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        save_file(model_tensors(model, dtype), str(tmp), metadata={"format": "pt"})
    write_json(out_dir / CONFIG_FILE, {"model": model.cfg.to_dict(), **(meta or {})})


def load_model_dir(model_dir, device: str | torch.device = "cpu") -> tuple[MusicTransformer, dict]:
    """Load a model directory; a missing or inconsistent file is a StageError naming it."""
    from pathlib import Path

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..util import StageError

    model_dir = Path(model_dir)
    cfg_path, weights_path = model_dir / CONFIG_FILE, model_dir / MODEL_FILE
    cfg, meta = check_model_dir(model_dir)  # shapes and sizes checked before anything is allocated
    model = MusicTransformer(cfg)
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise StageError(weights_path, f"cannot read weights: {exc}") from None
    try:
        load_tensors_into(model, {k: v.float() for k, v in tensors.items()}, source=f"weights (config {cfg_path})")
    except (ValueError, RuntimeError) as exc:
        raise StageError(weights_path, str(exc)) from None
    return model.to(device).eval(), meta


def add_state_features(model_dir) -> bool:
    """Give a model folder the sounding-notes input and logit bias (models/state.py) in place, their weights zero,
    so the model computes what it did before and training can learn to use them; False if it has both already."""
    from dataclasses import replace
    from pathlib import Path

    from safetensors import safe_open

    old, meta = load_model_dir(model_dir)
    if old.cfg.state_features and old.cfg.state_logits:
        return False
    with safe_open(str(Path(model_dir) / MODEL_FILE), "pt") as f:  # stored as it was: the shipped base is fp16
        dtype = f.get_tensor(next(iter(f.keys()))).dtype
    model = MusicTransformer(replace(old.cfg, state_features=True, state_logits=True))
    model.load_state_dict(old.state_dict(), strict=False)  # everything but what is new, which starts at zero
    save_model_dir(model, model_dir, {k: v for k, v in meta.items() if k != "model"}, dtype)
    return True
