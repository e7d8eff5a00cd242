"""Stage 6: generate new MIDI with a trained Music Transformer.

One request per small JSON or TOML file in ``--config-dir`` (on Pachyderm the ``generation-config`` repo,
crossed with the model), or a single request from the command-line options. Each request writes
``NAME-K/NAME-K.mid`` (K = 0..num_samples-1) and ``NAME-K/NAME-K.json`` (the parameters, primer, model and
timing): one folder per piece, so that the render pipeline's ``/*`` glob gives one datum per piece holding its
MIDI and the sidecar that says how to render it.

Request keys (all optional; the command-line options give the defaults):

=================  ==========  ================================================================
key                default     meaning
=================  ==========  ================================================================
name               file stem   output file prefix
num_samples        1           pieces generated together (one batch)
seconds            30          length of the new music in seconds ...
tokens             -           ... or in tokens (wins over seconds)
temperature        1.0         > 0; lower is more conservative
top_k              0           keep the k most likely tokens (0: all)
top_p              1.0         nucleus sampling, in (0, 1]
seed               0           random seed (sample K uses the same stream, in one batch)
primer_midi        -           MIDI file to continue (relative to the request file)
primer_piece       -           a primer of the model's primers.json: its name ("eval:0") or index
primer_seconds     -           use only the first seconds of the primer
include_primer     true        the output .mid starts with the primer
program            0           General MIDI program of the output notes
note_off_mask      true        a note-off may only end a sounding note (false: sample the model as it is)
note_off_share     held        offs the model aims at silent pitches go to the notes sounding longest
                               ("model": as the model ranks the sounding notes)
hold_guard         false       end a note held far longer than the training music's notes ...
max_hold_seconds   -           ... longer than this (default: twice their 99th percentile, from config.json)
preset             -           render preset for these pieces (``ambientgen render --help``)
loop_minutes       -           render each piece as a seamless loop of this many minutes
beds               -           sounds under the music, e.g. ["rain:-12"] (``--bed`` of render)
=================  ==========  ================================================================
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..music.midi_io import MidiLimits
from ..music.performance import SoundingNotes
from ..util import StageError, atomic_path, iter_files, write_json
from .gen_request import MAX_SECONDS, GenerationRequest, parse_request_file

# A primer is a few seconds to a few minutes of music: far below make-dataset's limits.
PRIMER_LIMITS = MidiLimits(max_bytes=8 * 2**20, max_notes=50_000, max_seconds=MAX_SECONDS)

HELP = "generate MIDI with a trained Music Transformer (one request per config file)"
EXAMPLES = """
  ambientgen generate /pfs/music-transformer /pfs/out --config-dir /pfs/generation-config
  ambientgen generate model/ out/ --seconds 60 --temperature 0.9 --top-p 0.95 --num-samples 4
  ambientgen generate model/ out/ --primer-piece eval:0 --seconds 30
  ambientgen generate model/ out/ --primer-midi my_piece.mid --primer-seconds 10 --seed 7
"""
log = logging.getLogger(__name__)
CONFIG_SUFFIXES = {".json", ".toml"}


# ---------------------------------------------------------------------------------------------------------
# Token helpers over the performance encoding


def seconds_of(ids) -> float:
    """Seconds covered by the TIME_SHIFT events of a token sequence."""
    from ..music import performance as perf

    a = np.asarray(ids, dtype=np.int64)
    shifts = a[(a >= perf.TIME_SHIFT_OFFSET) & (a < perf.VELOCITY_OFFSET)] - perf.TIME_SHIFT_OFFSET + 1
    return float(shifts.sum()) / perf.STEPS_PER_SECOND


def close_open_notes(ids: list[int], hold_steps: int = 50) -> list[int]:
    """Drop PAD/EOS; if notes are still sounding at the end, let them ring ``hold_steps`` more, then end them."""
    from ..music import performance as perf

    out = [int(t) for t in ids if perf.NOTE_ON_OFFSET <= int(t) < perf.VOCAB_SIZE]
    sounding: dict[int, int] = {}
    for t in out:
        if t < perf.NOTE_OFF_OFFSET:
            sounding[t - perf.NOTE_ON_OFFSET] = sounding.get(t - perf.NOTE_ON_OFFSET, 0) + 1
        elif t < perf.TIME_SHIFT_OFFSET and sounding.get(t - perf.NOTE_OFF_OFFSET):
            sounding[t - perf.NOTE_OFF_OFFSET] -= 1
    open_notes = [(p, n) for p, n in sorted(sounding.items()) if n > 0]
    if open_notes:
        out.append(perf.TIME_SHIFT_OFFSET + min(hold_steps, perf.MAX_SHIFT_STEPS) - 1)
        for p, n in open_notes:
            out.extend([perf.NOTE_OFF_OFFSET + p] * n)
    return out


def load_primers(model_dir: Path) -> list[dict]:
    """primers.json's entries, each checked: a name and a list of token ids inside the vocabulary."""
    from ..music import performance as perf

    path = model_dir / "primers.json"
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text()).get("primers", [])
        if not isinstance(entries, list):
            raise ValueError("'primers' is not a list")
        for i, e in enumerate(entries):
            toks = e.get("tokens") if isinstance(e, dict) else None
            if not isinstance(toks, list) or not toks or not all(
                    isinstance(t, int) and not isinstance(t, bool) and 0 <= t < perf.VOCAB_SIZE for t in toks):
                raise ValueError(f"primer {i} has no list of token ids in 0..{perf.VOCAB_SIZE - 1}")
        return entries
    except (ValueError, AttributeError, RecursionError, UnicodeDecodeError) as exc:
        raise StageError(path, f"not a valid primers file: {exc}"[:300]) from None


def primer_tokens(req: GenerationRequest, model_dir: Path, source: str | Path | None) -> tuple[list[int], str]:
    """The request's primer as token ids and a description ('' and [] when there is none)."""
    import note_seq

    from ..music import performance as perf

    if req.primer_midi:
        from ..music.midi_io import load_midi

        path = Path(req.primer_midi)
        if not path.is_file():
            raise StageError(source, f"primer_midi {path} does not exist")
        ns = load_midi(path, PRIMER_LIMITS)
        if req.primer_seconds:
            ns = note_seq.sequences_lib.trim_note_sequence(ns, 0.0, min(req.primer_seconds, ns.total_time))
        toks = [int(t) for t in perf.encode(ns)]
        if not toks:
            raise StageError(path, "the primer MIDI has no notes")
        return toks, f"midi:{path.name}"
    if req.primer_piece is not None:
        primers = load_primers(model_dir)
        if not primers:
            raise StageError(source, f"primer_piece asked for, but {model_dir / 'primers.json'} has no primers")
        if isinstance(req.primer_piece, int):
            if not 0 <= req.primer_piece < len(primers):
                raise StageError(source, f"primer_piece {req.primer_piece} out of range (0-{len(primers) - 1})")
            entry = primers[req.primer_piece]
        else:
            entry = next((p for p in primers if p.get("name") == req.primer_piece), None)
            if entry is None:
                names = ", ".join(str(p.get("name")) for p in primers)
                raise StageError(source, f"no primer named {req.primer_piece!r} (have: {names})")
        toks = [int(t) for t in entry["tokens"]]
        if req.primer_seconds:
            ns = perf.decode(toks)
            ns = note_seq.sequences_lib.trim_note_sequence(ns, 0.0, min(req.primer_seconds, ns.total_time))
            toks = [int(t) for t in perf.encode(ns)] or toks[:1]
        return toks, f"piece:{entry.get('name')}"
    return [], ""


HOLD_FLOOR_S = 1.0  # the hold guard never ends a note sooner than this
HOLD_FALLBACK_S = 10.0  # the guard's limit for a model whose config.json has no note statistics


def hold_limit(req: GenerationRequest, meta: dict) -> float | None:
    """Seconds after which the hold guard ends a note (None: no guard)."""
    if not req.hold_guard:
        return None
    if req.max_hold_seconds:
        return req.max_hold_seconds
    stats = meta.get("note_seconds")  # from train: the lengths of the notes the model learned from
    p99 = stats.get("p99") if isinstance(stats, dict) else None
    if isinstance(p99, int | float) and not isinstance(p99, bool) and 0 < p99 < MAX_SECONDS:
        return max(HOLD_FLOOR_S, 2.0 * p99)
    return HOLD_FALLBACK_S


def start_token(meta: dict, seed: int, source: str | Path = "config.json") -> int:
    """A first token for unprimed generation, drawn from the training pieces' first tokens (config.json)."""
    from ..music import performance as perf

    counts = meta.get("first_tokens") or {}
    try:
        ids = sorted(int(k) for k in counts)
        w = np.array([float(counts[str(i)]) for i in ids], dtype=np.float64)
        if any(not 0 <= i < perf.VOCAB_SIZE for i in ids) or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("ids outside the vocabulary or counts below zero")
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise StageError(source, f"first_tokens must map token ids to counts: {exc}") from None
    if ids and w.sum() > 0:
        return int(np.random.Generator(np.random.PCG64(seed)).choice(ids, p=w / w.sum()))
    return perf.VELOCITY_OFFSET + int(perf.velocity_to_bin(80)) - 1


# ---------------------------------------------------------------------------------------------------------
# Generation


class NoEndBefore:
    """A constraint for ``generate_tokens``: no EOS in a row before its new music lasts ``steps`` time-shift steps.

    A length asked for in seconds is a length given: a model that learned pieces of 30 s ends a primer taken from
    near a piece's end almost at once, and a variation with no notes is no variation. Wraps the other constraint
    (the note-off rule, the hold guard), if any.
    """

    def __init__(self, rows: int, steps: int, inner: SoundingNotes | None = None):
        import torch

        self.left = torch.full((rows,), steps, dtype=torch.int64)
        self.inner = inner

    def ban(self, logits):
        from ..music.performance import EOS_ID

        logits = self.inner.ban(logits) if self.inner is not None else logits.clone()
        logits[self.left.to(logits.device) > 0, EOS_ID] = float("-inf")
        return logits

    def push(self, tok) -> None:
        from ..music.performance import TIME_SHIFT_OFFSET, VELOCITY_OFFSET

        if self.inner is not None:
            self.inner.push(tok)
        t = tok[:, 0].cpu()
        shift = (t >= TIME_SHIFT_OFFSET) & (t < VELOCITY_OFFSET)
        self.left[shift] -= t[shift] - TIME_SHIFT_OFFSET + 1


def generate_request(model, meta: dict, model_dir: Path, out_dir: Path, req: GenerationRequest,
                     source: str | Path | None = None, use_cache: bool = True) -> list[Path]:
    """Generate one request's samples into out_dir; returns the written .mid paths."""
    import note_seq
    import torch

    from ..models.sampling import generate_tokens
    from ..music import performance as perf

    primer, primer_desc = primer_tokens(req, model_dir, source)
    prompt_ids = primer or [start_token(meta, req.seed, model_dir / "config.json")]
    device = next(model.parameters()).device
    prompt = torch.tensor([prompt_ids] * req.num_samples, dtype=torch.long, device=device)
    T = len(prompt_ids)
    if req.tokens is not None:
        max_new = req.tokens
        should_stop = None
    else:
        # a generous token cap for the seconds asked (real music rarely needs more than ~60 tokens/s)
        max_new = int(req.seconds * 100) + 64
        target = req.seconds

        def should_stop(seq: torch.Tensor) -> bool:
            a = seq[:, T:].cpu().numpy()
            return all(seconds_of(row) >= target for row in a)

    t0 = time.perf_counter()
    limit = hold_limit(req, meta)
    steps = int(round(limit * perf.STEPS_PER_SECOND)) if limit else None
    sounding = (perf.SoundingNotes(prompt, steps, req.note_off_mask, req.note_off_share)
                if (req.note_off_mask or steps) else None)
    constraint = sounding if req.tokens is not None else \
        NoEndBefore(req.num_samples, int(round(req.seconds * perf.STEPS_PER_SECOND)), sounding)
    seq = generate_tokens(model, prompt, max_new, temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                          seed=req.seed, use_cache=use_cache, should_stop=should_stop, constraint=constraint)
    elapsed = time.perf_counter() - t0
    new_tokens = int(seq.shape[1] - T)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    primer_time = seconds_of(primer) if primer else 0.0
    for k in range(req.num_samples):
        row = seq[k].tolist()
        cont = row[T:]
        if req.tokens is None:  # cut at the first token past the seconds asked
            acc, cut = 0.0, len(cont)
            for i, t in enumerate(cont):
                if perf.TIME_SHIFT_OFFSET <= t < perf.VELOCITY_OFFSET:
                    acc += (t - perf.TIME_SHIFT_OFFSET + 1) / perf.STEPS_PER_SECOND
                    if acc >= req.seconds:
                        cut = i + 1
                        break
            cont = cont[:cut]
        ids = close_open_notes((primer if primer else []) + cont)
        ns = perf.decode(ids, program=req.program)
        if primer and not req.include_primer:  # only the new music (none when the model ended at the primer)
            ns = note_seq.sequences_lib.extract_subsequence(ns, primer_time, ns.total_time) \
                if ns.total_time > primer_time else perf.decode([], program=req.program)
        stem = f"{req.name}-{k}"
        mid = out_dir / stem / f"{stem}.mid"
        mid.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(mid) as tmp:
            note_seq.sequence_proto_to_midi_file(ns, str(tmp))
        write_json(mid.with_suffix(".json"), {
            "request": asdict(req), "config_file": str(source) if source else None, "sample": k,
            "model": {"dir": str(model_dir), "config_name": meta.get("config_name"), "step": meta.get("step"),
                      "attention": model.cfg.attention},
            "primer": {"source": primer_desc, "tokens": len(primer), "seconds": round(primer_time, 3)} if primer
            else None,
            "tokens": {"prompt": T, "generated": len(cont), "ended_with_eos": perf.EOS_ID in row[T:]},
            "seconds": round(ns.total_time, 3), "notes": len(ns.notes),
            "generation_seconds": round(elapsed, 3), "tokens_per_s": round(new_tokens * req.num_samples / elapsed, 1)
            if elapsed > 0 else None, "kv_cache": use_cache,
            "hold_guard": {"max_hold_s": round(limit, 3), "forced_offs": int(sounding.forced[k])} if limit else None,
        })
        written.append(mid)
        log.info("%s: %d notes, %.1f s", mid, len(ns.notes), ns.total_time)
    return written


def generate(model_dir: str | Path, out_dir: str | Path, config_dir: str | Path | None = None,
             defaults: GenerationRequest | None = None, device: str = "auto", use_cache: bool = True) -> dict:
    """Run every request (the config files in config_dir, else ``defaults``); returns {"written", "failed"}.

    A bad request file is logged with its path and skipped; the others still run.
    """
    import torch

    from ..models.weights import load_model_dir

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    defaults = (defaults or GenerationRequest()).validate("command line")
    model, meta = load_model_dir(model_dir, dev)
    model.set_attn_impl("sdpa")
    requests: list[tuple[Path | None, GenerationRequest | StageError]] = []
    if config_dir is not None:
        config_dir = Path(config_dir)
        if not config_dir.exists():
            raise StageError(config_dir, "config directory does not exist")
        files = [p for p in iter_files(config_dir) if p.suffix.lower() in CONFIG_SUFFIXES]
        if not files:
            log.warning("%s: no .json/.toml generation configs (other files are ignored)", config_dir)
        for path in files:
            try:
                requests.append((path, parse_request_file(path, defaults)))
            except StageError as exc:
                requests.append((path, exc))
    else:
        requests.append((None, defaults))
    written: list[Path] = []
    failed: list[str] = []
    names: set[str] = set()
    for path, req in requests:
        if isinstance(req, StageError):
            log.error("%s", req)
            failed.append(str(path))
            continue
        if req.name in names:
            log.error("%s: name %r is used by another request", path, req.name)
            failed.append(str(path))
            continue
        names.add(req.name)
        try:
            written += generate_request(model, meta, model_dir, out_dir, req, path or "command line", use_cache)
        except StageError as exc:
            log.error("%s", exc)
            failed.append(str(path or "command line"))
        except (OSError, ValueError, RuntimeError, OverflowError, MemoryError) as exc:  # this request alone fails
            log.error("%s: %s: %s", path or "command line", type(exc).__name__, exc)
            failed.append(str(path or "command line"))
    return {"written": written, "failed": failed}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="trained model directory (model.safetensors + config.json [+ primers.json])")
    p.add_argument("output_dir", help="where .mid files and .json sidecars go")
    p.add_argument("--config-dir", default=None, help="directory of .json/.toml requests, one request per file")
    p.add_argument("--name", default="generated", help="output prefix for a command-line request")
    p.add_argument("--num-samples", type=int, default=1, help="pieces per request (one batch)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of new music in seconds (default 30)")
    p.add_argument("--tokens", type=int, default=None, help="length in tokens instead of seconds")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature > 0 (default 1.0)")
    p.add_argument("--top-k", type=int, default=0, help="top-k filtering (0: off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1] (1: off)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--primer-midi", default=None, help="MIDI file to continue")
    p.add_argument("--primer-piece", default=None, help="primer from the model's primers.json (name or index)")
    p.add_argument("--primer-seconds", type=float, default=None, help="use only the primer's first seconds")
    p.add_argument("--no-primer-in-output", action="store_true", help="write only the continuation")
    p.add_argument("--program", type=int, default=0, help="General MIDI program of the output (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context each step (slow)")
    p.add_argument("--hold-guard", action="store_true",
                   help="end a note held longer than twice the training notes' 99th percentile (off by default: "
                        "the model tends to strike the notes it was made to end again)")
    p.add_argument("--max-hold-seconds", type=float, default=None, metavar="S",
                   help="the hold guard's limit in seconds (default: from the model's config.json)")
    p.add_argument("--no-note-off-mask", action="store_true",
                   help="let the model end notes that are not sounding (by default a note-off may only end a "
                        "sounding note, and the off's probability goes to the sounding notes: an off for a silent "
                        "pitch means nothing, and spending offs there leaves sounding notes held)")
    p.add_argument("--note-off-share", choices=SoundingNotes.OFF_SHARES, default="held",
                   help="where the probability of offs the model aims at silent pitches goes: 'held' (default), "
                        "to the sounding notes by how long each has sounded, so a note just struck is not cut "
                        "short; 'model', as the model ranks the sounding notes")


def main(args: argparse.Namespace) -> int:
    piece = args.primer_piece
    if isinstance(piece, str) and piece.isdigit():
        piece = int(piece)
    defaults = GenerationRequest(
        name=args.name, num_samples=args.num_samples, seconds=None if args.tokens else args.seconds,
        tokens=args.tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
        primer_midi=args.primer_midi, primer_piece=piece, primer_seconds=args.primer_seconds,
        include_primer=not args.no_primer_in_output, program=args.program, note_off_mask=not args.no_note_off_mask,
        note_off_share=args.note_off_share,
        hold_guard=args.hold_guard or args.max_hold_seconds is not None, max_hold_seconds=args.max_hold_seconds)
    res = generate(args.model_dir, args.output_dir, args.config_dir, defaults, args.device, not args.no_cache)
    for path in res["written"]:
        print(path)
    if res["failed"]:
        log.error("%d request(s) failed: %s", len(res["failed"]), ", ".join(res["failed"]))
        return 1
    return 0
