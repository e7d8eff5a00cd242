"""The shipped base Music Transformer, and reading any model folder's shapes safely before building a model.

The base model was trained on the music21 corpus (`ambientgen train-base`, see assets/base-model/TRAINING.md)
and is what `ambientgen train` fine-tunes by default: a handful of a user's pieces is far too little music to
learn from scratch, but enough to adapt a model that already knows how notes start, move and end.

A model folder is checked from its config.json and the safetensors header alone (shapes, dtypes, sane sizes)
before a single tensor is allocated, so a hostile or broken folder is one clear error, never a multi-gigabyte
allocation.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

from ..util import StageError

log = logging.getLogger(__name__)

BASE_DIR = Path(__file__).resolve().parent.parent / "assets" / "base-model"
MAX_PARAMS = 200_000_000  # far above any shipped or trainable-here model, far below what would exhaust memory
LIMITS = {"n_layer": 64, "n_head": 64, "d_model": 4096, "d_ff": 16384, "max_len": 16384, "vocab_size": 65536}
HEADER_MAX = 16 << 20
MODEL_FILE = "model.safetensors"  # a model folder: these two files, never a pickle
CONFIG_FILE = "config.json"


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file: {name: {"dtype", "shape", "data_offsets"}} (metadata dropped)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise StageError(path, "not a safetensors file (shorter than its 8-byte header length)")
            (n,) = struct.unpack("<Q", raw)
            if n > HEADER_MAX:
                raise StageError(path, f"not a safetensors file (header of {n} bytes)")
            header = json.loads(fh.read(n))
    except OSError as exc:
        raise StageError(path, f"cannot read weights: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise StageError(path, f"not a safetensors file: {exc}") from None
    if not isinstance(header, dict):
        raise StageError(path, "not a safetensors file (header is not an object)")
    header.pop("__metadata__", None)
    for name, info in header.items():
        shape = info.get("shape") if isinstance(info, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise StageError(path, f"tensor {name!r} has no valid shape")
    return header


def check_model_dir(model_dir: str | Path):
    """(TransformerConfig, meta) of a model folder, checked against its weights' header and sane limits."""
    from .transformer import MusicTransformer, TransformerConfig

    model_dir = Path(model_dir)
    cfg_path, weights_path = model_dir / CONFIG_FILE, model_dir / MODEL_FILE
    if not cfg_path.is_file():
        raise StageError(cfg_path, "model config is missing (a model directory holds config.json + model.safetensors)")
    if not weights_path.is_file():
        raise StageError(weights_path, "model weights are missing")
    try:
        meta = json.loads(cfg_path.read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
            raise ValueError("no 'model' object")
        raw = meta["model"]
        for key, top in LIMITS.items():
            v = raw.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= top):
                raise ValueError(f"{key} must be an integer in 1..{top}, not {v!r}")
        cfg = TransformerConfig.from_dict(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, OSError) as exc:
        raise StageError(cfg_path, f"not a valid model config: {exc}") from None
    est = cfg.n_layer * (4 * cfg.d_model ** 2 + 2 * cfg.d_model * cfg.d_ff + cfg.max_len * cfg.d_model) \
        + cfg.vocab_size * cfg.d_model
    if est > MAX_PARAMS:
        raise StageError(cfg_path, f"model of about {est / 1e6:.0f}M parameters is larger than the "
                         f"{MAX_PARAMS / 1e6:.0f}M this program loads")
    header = read_safetensors_header(weights_path)
    import torch

    with torch.device("meta"):  # shapes without memory
        expected = {k: tuple(v.shape) for k, v in MusicTransformer(cfg).state_dict().items()}
    if cfg.tie_embeddings:
        expected.pop("head.weight", None)
    missing = sorted(set(expected) - set(header))
    bad = sorted(k for k in set(expected) & set(header) if tuple(header[k]["shape"]) != expected[k])
    unexpected = sorted(set(header) - set(expected))
    if missing or bad or unexpected:
        parts = [f"missing {', '.join(missing[:4])}" if missing else "",
                 "shape mismatch " + ", ".join(f"{k} {tuple(header[k]['shape'])} != {expected[k]}" for k in bad[:4])
                 if bad else "",
                 f"unexpected {', '.join(unexpected[:4])}" if unexpected else ""]
        raise StageError(weights_path, "weights do not match config.json: " + "; ".join(p for p in parts if p))
    return cfg, meta


def resolve_init(init: str, vocab_size: int, pad_id: int, eos_id: int) -> Path | None:
    """The model folder to start training from: None for 'scratch', the shipped base for 'base', or a folder.

    A missing shipped base falls back to scratch with a warning; a folder whose vocabulary differs from the data
    set's is refused (its token ids would mean other events).
    """
    if init == "scratch":
        return None
    path = BASE_DIR if init == "base" else Path(init)
    if not (path / "model.safetensors").is_file():
        if init == "base":
            log.warning("no shipped base model at %s: training from scratch", path)
            return None
        raise StageError(path, "--init: not a model folder (config.json + model.safetensors)")
    cfg, _ = check_model_dir(path)
    if (cfg.vocab_size, cfg.pad_id, cfg.eos_id) != (vocab_size, pad_id, eos_id):
        raise StageError(path, f"--init model has vocabulary {cfg.vocab_size} (PAD {cfg.pad_id}, EOS {cfg.eos_id}); "
                         f"the data set uses {vocab_size} (PAD {pad_id}, EOS {eos_id}): fine-tuning needs the same "
                         "encoding (use --init scratch)")
    return path
