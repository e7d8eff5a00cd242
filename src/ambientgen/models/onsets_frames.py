"""Onsets and Frames piano-roll transcription (Hawthorne et al., 2018) in PyTorch.

Input: log-mel spectrogram (229 bins, 16 kHz, hop 512, FFT 2048). Three heads:

* onsets: acoustic CNN stack -> BiLSTM (128 units each way) -> FC -> sigmoid over 88 keys;
* frames: its own acoustic stack -> FC -> sigmoid, concatenated with the onset predictions (gradient stopped)
  -> BiLSTM (128 each way) -> FC -> sigmoid;
* velocity: its own acoustic stack -> FC (linear), trained only where there is an onset.

The CNN and FC widths are configurable. The paper uses 48/48/96 filters and an FC of 768; the shipped model is
scaled down to 16/16/32 filters and FC 256 (velocity stack 8/8/16, FC 128) so that it trains and runs on a
2-core CPU; the BiLSTMs keep 128 units each way. The FC output is batch-normalised before its ReLU.

Decoding follows the paper: a note can only start where the onset head fires; it then lasts while the frame head
stays on. Weights are stored as safetensors with a JSON config (never pickles).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..util import StageError

log = logging.getLogger(__name__)

N_KEYS = 88
MIN_PITCH = 21
SILENCE = float(np.log(1e-5))  # log-mel floor: the value of silent cells
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "onsets_frames"


@dataclass
class FeatureConfig:
    """Audio front end: log-mel as in the paper."""

    sample_rate: int = 16000
    hop_length: int = 512
    n_fft: int = 2048
    n_mels: int = 229
    fmin: float = 30.0
    fmax: float = 8000.0
    onset_frames: int = 1  # onset label length: 32 ms = one frame at hop 512 / 16 kHz

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length


@dataclass
class ModelConfig:
    """Network widths. Paper: conv (48, 48, 96), fc 768, lstm 128."""

    conv: tuple[int, int, int] = (16, 16, 32)
    fc: int = 256
    lstm: int = 128
    velocity_conv: tuple[int, int, int] = (8, 8, 16)
    velocity_fc: int = 128
    dropout: float = 0.25
    features: FeatureConfig = field(default_factory=FeatureConfig)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        feats = FeatureConfig(**d.pop("features", {}))
        return cls(conv=tuple(d.pop("conv")), velocity_conv=tuple(d.pop("velocity_conv")), features=feats, **d)


# --------------------------------------------------------------------------------------------------- features
@lru_cache(maxsize=4)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=True).astype(
        np.float32)


def log_mel(audio: np.ndarray, fc: FeatureConfig | None = None) -> np.ndarray:
    """Log-mel spectrogram, shape (frames, n_mels), frame t centred at t * hop / sample_rate."""
    import torch

    fc = fc or FeatureConfig()
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    if x.numel() < fc.n_fft // 2 + 1:
        x = torch.nn.functional.pad(x, (0, fc.n_fft // 2 + 1 - x.numel()))
    window = torch.hann_window(fc.n_fft)
    with torch.no_grad():
        spec = torch.stft(x, fc.n_fft, fc.hop_length, window=window, center=True, pad_mode="constant",
                          return_complex=True).abs()
        mel = torch.from_numpy(_mel_basis(fc.sample_rate, fc.n_fft, fc.n_mels, fc.fmin, fc.fmax)) @ spec
        out = torch.log(mel.clamp_min(1e-5)).T.contiguous()
    return out.numpy()


def sequence_to_rolls(ns, n_frames: int, fc: FeatureConfig | None = None) -> dict[str, np.ndarray]:
    """Onset / frame / offset-free velocity rolls (frames x 88, uint8) for a NoteSequence's notes."""
    fc = fc or FeatureConfig()
    fps = fc.frames_per_second
    onset = np.zeros((n_frames, N_KEYS), np.uint8)
    frame = np.zeros((n_frames, N_KEYS), np.uint8)
    velocity = np.zeros((n_frames, N_KEYS), np.uint8)
    for n in sorted(ns.notes, key=lambda n: n.start_time):
        k = n.pitch - MIN_PITCH
        if not 0 <= k < N_KEYS:
            continue
        s = int(round(n.start_time * fps))
        e = max(int(round(n.end_time * fps)), s + 1)
        if s >= n_frames:
            continue
        frame[s:e, k] = 1
        onset[s:s + fc.onset_frames, k] = 1
        velocity[s:s + fc.onset_frames, k] = n.velocity
    return {"onset": onset, "frame": frame, "velocity": velocity}


# ------------------------------------------------------------------------------------------------------ model
def _build_modules():
    import torch
    from torch import nn

    class AcousticModel(nn.Module):
        """Conv(3x3)-BN-ReLU x2, max-pool freq, dropout, conv, max-pool, dropout, FC, dropout (paper's stack)."""

        def __init__(self, n_mels: int, conv: tuple[int, int, int], fc: int, dropout: float):
            super().__init__()
            c1, c2, c3 = conv
            self.cnn = nn.Sequential(
                nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
                nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(),
                nn.MaxPool2d((1, 2)), nn.Dropout(dropout),
                nn.Conv2d(c2, c3, 3, padding=1), nn.BatchNorm2d(c3), nn.ReLU(),
                nn.MaxPool2d((1, 2)), nn.Dropout(dropout),
            )
            self.fc = nn.Linear(c3 * (n_mels // 4), fc)
            # batch-normalised like the conv layers, then ReLU (Magenta's fully_connected default) and dropout;
            # without the normalisation the FC output drifts to a large constant that saturates the onset BiLSTM
            self.fc_norm = nn.BatchNorm1d(fc)
            self.fc_out = nn.Sequential(nn.ReLU(), nn.Dropout(dropout * 2))

        def forward(self, mel: torch.Tensor) -> torch.Tensor:  # (B, T, M) -> (B, T, fc)
            x = self.cnn(mel.unsqueeze(1))  # (B, C, T, M/4)
            b, c, t, m = x.shape
            x = self.fc(x.permute(0, 2, 1, 3).reshape(b, t, c * m))
            return self.fc_out(self.fc_norm(x.transpose(1, 2)).transpose(1, 2))

    class OnsetsAndFrames(nn.Module):
        def __init__(self, cfg: ModelConfig):
            super().__init__()
            self.cfg = cfg
            m, d = cfg.features.n_mels, cfg.dropout
            self.onset_stack = AcousticModel(m, cfg.conv, cfg.fc, d)
            self.onset_lstm = nn.LSTM(cfg.fc, cfg.lstm, batch_first=True, bidirectional=True)
            self.onset_out = nn.Linear(2 * cfg.lstm, N_KEYS)
            self.frame_stack = AcousticModel(m, cfg.conv, cfg.fc, d)
            self.frame_pre = nn.Linear(cfg.fc, N_KEYS)
            self.frame_lstm = nn.LSTM(2 * N_KEYS, cfg.lstm, batch_first=True, bidirectional=True)
            self.frame_out = nn.Linear(2 * cfg.lstm, N_KEYS)
            self.velocity_stack = AcousticModel(m, cfg.velocity_conv, cfg.velocity_fc, d)
            self.velocity_out = nn.Linear(cfg.velocity_fc, N_KEYS)
            with torch.no_grad():  # start at the labels' base rates (about 0.3 % onsets, 4 % frames)
                self.onset_out.bias.fill_(-5.0)
                self.frame_pre.bias.fill_(-3.0)
                self.frame_out.bias.fill_(-3.0)

        def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
            """mel (B, T, n_mels) -> logits of onset/frame (B, T, 88) and velocity (B, T, 88)."""
            onset_logits = self.onset_out(self.onset_lstm(self.onset_stack(mel))[0])
            onset_probs = torch.sigmoid(onset_logits).detach()  # stop-gradient into the frame head
            frame_pre = torch.sigmoid(self.frame_pre(self.frame_stack(mel)))
            frame_in = torch.cat([onset_probs, frame_pre], dim=-1)
            frame_logits = self.frame_out(self.frame_lstm(frame_in)[0])
            velocity = self.velocity_out(self.velocity_stack(mel))
            return {"onset": onset_logits, "frame": frame_logits, "velocity": velocity}

    return OnsetsAndFrames


_MODEL_CLASS = None


def build_model(cfg: ModelConfig | None = None):
    """A fresh, randomly initialised OnsetsAndFrames torch module."""
    global _MODEL_CLASS
    if _MODEL_CLASS is None:
        _MODEL_CLASS = _build_modules()
    return _MODEL_CLASS(cfg or ModelConfig())


# ------------------------------------------------------------------------------------------------------- loss
def frame_weights(onset: Any, frame: Any, c: float = 5.0, d: int = 1) -> Any:
    """Per-cell weights of the frame loss (paper, section 3).

    For a note with onset frame t1 and offset frame t3, and t2 = t1 + d: weight c for t1 <= t <= t2, then
    c / (t - t2) for t2 < t <= t3 (decaying along the sustained part), and 1 everywhere else. A new onset
    restarts the note clock. Vectorised over (B, T, 88) tensors.
    """
    import torch

    on = onset > 0
    fr = frame > 0
    t = on.shape[1]
    idx = torch.arange(t, device=on.device).view(1, t, 1).expand_as(on)
    neg = torch.full_like(idx, -1)
    last_on = torch.cummax(torch.where(on, idx, neg), dim=1).values  # latest onset at or before t
    last_gap = torch.cummax(torch.where(~on & ~fr, idx, neg), dim=1).values  # latest silent cell
    active = (last_on >= 0) & (last_on > last_gap)  # inside a note that began with an onset
    since = (idx - last_on).float()
    w = torch.ones(on.shape, dtype=torch.float32, device=on.device)
    w = torch.where(active & (since <= d), torch.full_like(w, c), w)
    w = torch.where(active & (since > d), c / (since - d).clamp_min(1.0), w)
    return w


def compute_loss(out: dict[str, Any], batch: dict[str, Any], frame_c: float = 5.0) -> dict[str, Any]:
    """Onset BCE + weighted frame BCE + velocity MSE at onsets (velocity normalised to [0, 1])."""
    import torch
    import torch.nn.functional as F

    onset, frame = batch["onset"].float(), batch["frame"].float()
    l_onset = F.binary_cross_entropy_with_logits(out["onset"], onset)
    w = batch.get("frame_weight")
    if w is None:
        w = frame_weights(onset, frame, c=frame_c)
    l_frame = (F.binary_cross_entropy_with_logits(out["frame"], frame, reduction="none") * w).sum() / w.sum()
    vel = batch["velocity"].float() / 127.0
    l_vel = (onset * (vel - out["velocity"]) ** 2).sum() / onset.sum().clamp_min(1.0)
    total = l_onset + l_frame + l_vel
    return {"loss": total, "onset": l_onset.detach(), "frame": l_frame.detach(), "velocity": l_vel.detach(),
            "_": torch.zeros(())}


# --------------------------------------------------------------------------------------------------- decoding
FRAME_START_FRAMES = 3  # a frame run this long (about 0.1 s) can start a note without an onset


def decode_notes(onset_probs: np.ndarray, frame_probs: np.ndarray, velocity: np.ndarray | None = None,
                 fc: FeatureConfig | None = None, onset_threshold: float = 0.5, frame_threshold: float = 0.5,
                 min_frames: int = 1, frame_start_threshold: float | None = None
                 ) -> list[tuple[float, float, int, int]]:
    """(start_s, end_s, pitch, velocity) notes from (T, 88) probabilities.

    A note starts where the onset head fires (a run of consecutive onset frames is one onset; a new onset run on a
    sounding key restarts the note) and lasts while the frame head (or the onset) stays on. With
    `frame_start_threshold`, a silent key whose frame probability stays above it for FRAME_START_FRAMES frames
    also starts a note there: pads and bowed sounds swell in without a sharp onset, which the paper's strictly
    onset-gated decoding drops.
    """
    fc = fc or FeatureConfig()
    fps = fc.frames_per_second
    onsets = onset_probs > onset_threshold
    frames = (frame_probs > frame_threshold) | onsets
    t_total = onsets.shape[0]
    if frame_start_threshold is not None:
        strong = frame_probs > frame_start_threshold
        run = strong.copy()
        for i in range(1, FRAME_START_FRAMES):  # strong[t] and the next frames all strong
            run[:t_total - i] &= strong[i:]
            run[t_total - i:] = False
    else:
        run = np.zeros_like(onsets)
    notes: list[tuple[float, float, int, int]] = []

    def vel_at(t: int, k: int) -> int:
        return int(np.clip(round(float(velocity[t, k]) * 127), 1, 127)) if velocity is not None else 80

    for k in np.flatnonzero(onsets.any(axis=0) | run.any(axis=0)):
        k = int(k)
        start, vel = -1, 0
        first = int(np.argmax(onsets[:, k] | run[:, k]))
        for t in range(first, t_total):
            new_onset = onsets[t, k] and (t == 0 or not onsets[t - 1, k])
            if new_onset or (start < 0 and run[t, k]):
                if start >= 0 and t - start >= min_frames:
                    notes.append((start / fps, t / fps, k + MIN_PITCH, vel))
                start, vel = t, vel_at(t, k)
            elif start >= 0 and not frames[t, k]:
                if t - start >= min_frames:
                    notes.append((start / fps, t / fps, k + MIN_PITCH, vel))
                start = -1
        if start >= 0 and t_total - start >= min_frames:
            notes.append((start / fps, t_total / fps, k + MIN_PITCH, vel))
    notes.sort(key=lambda n: (n[0], n[2]))
    return notes


def notes_to_sequence(notes: list[tuple[float, float, int, int]]):
    """A note_seq.NoteSequence holding the decoded notes (program 0, instrument 0)."""
    import note_seq

    ns = note_seq.NoteSequence()
    ns.tempos.add(qpm=120.0)
    ns.ticks_per_quarter = note_seq.constants.STANDARD_PPQ
    for start, end, pitch, vel in notes:
        ns.notes.add(start_time=start, end_time=end, pitch=pitch, velocity=vel, instrument=0, program=0)
    ns.total_time = max((n[1] for n in notes), default=0.0)
    return ns


# ------------------------------------------------------------------------------------------- checkpoint / API
def save_checkpoint(model, directory: str | Path, fp16: bool = False, extra: dict[str, Any] | None = None) -> Path:
    """Write model.safetensors + config.json into directory (atomically)."""
    from safetensors.torch import save_file

    from ..util import atomic_path, write_json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if fp16:
        state = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "model": "onsets_frames"})
    write_json(directory / "config.json", {"model": "onsets_frames", **model.cfg.to_json(), **(extra or {})})
    return directory / "model.safetensors"


def _resolve(checkpoint: str | Path | None) -> tuple[Path, Path]:
    if checkpoint is None:
        d = ASSET_DIR
        return d / "model.safetensors", d / "config.json"
    p = Path(checkpoint)
    if p.is_dir():
        return p / "model.safetensors", p / "config.json"
    return p, p.with_name("config.json")


def load_config(config_path: str | Path) -> ModelConfig:
    config_path = Path(config_path)
    if not config_path.is_file():
        raise StageError(config_path, "checkpoint config.json not found")
    try:
        raw = json.loads(config_path.read_text())
        if raw.get("model") != "onsets_frames":
            raise ValueError(f"model is {raw.get('model')!r}, not 'onsets_frames'")
        fields = set(ModelConfig.__dataclass_fields__)
        return ModelConfig.from_json({k: v for k, v in raw.items() if k in fields})
    except (ValueError, TypeError, KeyError) as exc:
        raise StageError(config_path, f"not an Onsets and Frames config: {exc}") from exc


def load_torch_model(checkpoint: str | Path | None = None):
    """(torch module in eval mode, ModelConfig) from a safetensors checkpoint; StageError naming a bad file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, config = _resolve(checkpoint)
    if not weights.is_file():
        raise StageError(weights, "checkpoint weights not found")
    cfg = load_config(config)
    model = build_model(cfg)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise StageError(weights, f"not a readable safetensors file: {exc}") from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shape = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or bad_shape:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        if bad_shape:
            k = bad_shape[0]
            parts.append(f"shape mismatch for {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}")
        raise StageError(weights, "checkpoint does not match its config: " + "; ".join(parts))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    model.eval()
    return model, cfg


class Transcriber:
    """A loaded Onsets and Frames model: ``transcribe(audio, sample_rate) -> NoteSequence``."""

    def __init__(self, model, cfg: ModelConfig, onset_threshold: float = 0.5, frame_threshold: float = 0.5,
                 chunk_frames: int = 512, context_frames: int = 32, frame_start_threshold: float | None = None):
        self.model = model
        self.cfg = cfg
        self.onset_threshold = onset_threshold
        self.frame_threshold = frame_threshold
        self.frame_start_threshold = frame_start_threshold
        self.chunk_frames = chunk_frames
        self.context_frames = context_frames

    @property
    def sample_rate(self) -> int:
        """The rate the network was trained at; other rates are resampled in transcribe()."""
        return self.cfg.features.sample_rate

    def parameters(self) -> dict[str, Any]:
        """Decoding settings, for sidecars."""
        return {"onset_threshold": self.onset_threshold, "frame_threshold": self.frame_threshold,
                "frame_start_threshold": self.frame_start_threshold, "sample_rate": self.sample_rate}

    def predict(self, audio: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """Onset/frame probabilities and velocities, each (frames, 88), for mono or (n, channels) audio."""
        import torch

        fc = self.cfg.features
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 2:  # (samples, channels) or (channels, samples): mix down
            audio = audio.mean(axis=1 if audio.shape[0] > audio.shape[1] else 0)
        if sample_rate != fc.sample_rate:
            import librosa

            audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=fc.sample_rate, res_type="soxr_hq")
        mel = torch.from_numpy(log_mel(audio, fc))
        t = mel.shape[0]
        n, c = self.chunk_frames, self.context_frames
        # overlapping chunks run as one batch (fast on CPU); each keeps `c` frames of context either side
        starts = list(range(0, t, n))
        pad = torch.nn.functional.pad(mel.T, (c, n + c), value=SILENCE).T
        batch = torch.stack([pad[s:s + n + 2 * c] for s in starts])
        with torch.inference_mode():
            out = self.model(batch)
        res = {}
        for key in ("onset", "frame", "velocity"):
            v = out[key][:, c:c + n]
            if key != "velocity":
                v = torch.sigmoid(v)
            res[key] = v.reshape(-1, N_KEYS)[:t].numpy()
        return res

    def transcribe(self, audio: np.ndarray, sample_rate: int):
        """Audio -> note_seq.NoteSequence, onset-gated decoding."""
        p = self.predict(audio, sample_rate)
        notes = decode_notes(p["onset"], p["frame"], p["velocity"], self.cfg.features,
                             self.onset_threshold, self.frame_threshold,
                             frame_start_threshold=self.frame_start_threshold)
        return notes_to_sequence(notes)


def load_model(checkpoint: str | Path | None = None, onset_threshold: float | None = None,
               frame_threshold: float | None = None, frame_start_threshold: float | None = None) -> Transcriber:
    """The transcriber from a checkpoint directory or model.safetensors path; None: the shipped checkpoint.

    Thresholds default to the checkpoint's config.json "decoding" entry (chosen on the development set's tune
    part), else 0.5 and no frame-run starts.
    """
    model, cfg = load_torch_model(checkpoint)
    decoding = json.loads(_resolve(checkpoint)[1].read_text()).get("decoding", {})
    on = onset_threshold if onset_threshold is not None else float(decoding.get("onset_threshold", 0.5))
    fr = frame_threshold if frame_threshold is not None else float(decoding.get("frame_threshold", 0.5))
    fs = frame_start_threshold if frame_start_threshold is not None else decoding.get("frame_start_threshold")
    return Transcriber(model, cfg, on, fr, frame_start_threshold=None if fs is None else float(fs))
