"""The corpus as the transcriber hears it: corpus pieces rendered to audio and transcribed by the default backend.

Why: a user's data set is what the transcriber wrote, never a score. Its velocities come from the transcriber's
velocity head, its onsets and ends from frame-wise activations, and it holds the transcriber's slips (a missed
inner voice, an octave, a pad's long tail). A base model that has only read scores pays for that channel at every
token of fine-tuning, and fine-tuning on a few minutes of music cannot teach it. So `train-base --heard N` adds N
corpus pieces rendered the way the transcriber's own training data is (ambientgen.music.synth_data: five kinds of
music, six timbre families, two soundfonts, rooms, EQ, noise, MP3) and transcribed by the default backend, each as
NAME.mid with the transcriber's sidecar and what was rendered (work, family, soundfont).

Never rendered here: the base model's held-out pieces (its 5% hash split), the transcriber's held-out works (its
development set), and the demo's chorales, which are the user data that fine-tuning is benchmarked on.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..util import StageError, progress, write_json

log = logging.getLogger(__name__)

HEARD_SECONDS = 40.0  # longest piece rendered; windows of 512 events are about 15-40 s of transcription
HEARD_SEED = 20_261_205
SOLO_SEED = 20_261_207  # the single lines' own plan, so that adding them leaves the heard plan's prefix as it was
# Single lines: tunes as written and one part of a piece in parts (a voice, a quartet's instrument), unaccompanied.
SOLO_KIND_WEIGHTS = {"folk": 0.4, "chorales": 0.15, "polyphony": 0.2, "quartets": 0.25}
BASE_EVAL_PERCENT = 5.0  # the base model's held-out share (train_base's data set)
MANIFEST = "heard.json"

_transcriber = None  # one model per worker process


def base_held_out(rel: str) -> bool:
    """True for a converted corpus piece in the base model's held-out split: what the benches may test it on."""
    from .make_dataset import split_of

    return split_of(rel, BASE_EVAL_PERCENT, 0.0) == "eval"


def base_train_piece(rel: str) -> bool:
    """True for a converted corpus piece ('bach/bwv66.6.mid', 'oneills1850/x-tune12.mid') that the base model
    trains on and that is not one of the demo's chorales."""
    from ..sample_data import DEFAULT_WORKS
    from .make_dataset import split_of

    return split_of(rel, BASE_EVAL_PERCENT, 0.0) == "train" and rel.rsplit(".", 1)[0] not in DEFAULT_WORKS


def plan(count: int, seed: int = HEARD_SEED, solo: int = 0) -> list[tuple[str, str, int, str, bool]]:
    """(corpus path, timbre family, seed, name, solo) of `count` pieces, then of `solo` single lines: kinds and
    families drawn with the transcriber's training weights (the lines' kinds with SOLO_KIND_WEIGHTS), works from
    its training split."""
    from ..music.synth_data import TRAIN_FAMILY_WEIGHTS, TRAIN_KIND_WEIGHTS, plan_examples, safe_stem
    from ..music.synth_sources import work_id

    out = [(str(path), family, s, f"{safe_stem(work_id(path))}-{s}", False)
           for path, family, s in plan_examples("train", count, seed, TRAIN_FAMILY_WEIGHTS, TRAIN_KIND_WEIGHTS)]
    return out + [(str(path), family, s, f"solo-{safe_stem(work_id(path))}-{s}", True)
                  for path, family, s in plan_examples("train", solo, SOLO_SEED, TRAIN_FAMILY_WEIGHTS,
                                                       SOLO_KIND_WEIGHTS)]


def hear_one(path: str, family: str, seed: int, name: str, solo: bool, out_dir: str, threads: int) -> dict:
    """Render one piece and transcribe it into out_dir/NAME.mid (+ NAME.json); returns its sidecar, or
    {'name', 'error'} when the piece cannot be used. A finished piece (its sidecar names what was rendered) is not
    made again. Scores are converted once into out_dir's sibling ``heard-scores/``."""
    import tempfile

    global _transcriber
    out = Path(out_dir)
    sidecar = out / f"{name}.json"
    if sidecar.is_file():
        meta = json.loads(sidecar.read_text())
        if "rendered" in meta:
            return meta
    from ..music.synth_data import SAMPLE_RATE, make_example
    from .transcribe import make_transcriber, transcribe_file

    if _transcriber is None:
        import torch

        torch.set_num_threads(threads)
        _transcriber = make_transcriber()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            wav = make_example(path, tmp, seed, HEARD_SECONDS, family, name=name, sample_rate=SAMPLE_RATE,
                               features=False, cache_dir=out.parent / "heard-scores", keep=base_train_piece,
                               solo=solo)
        except StageError as exc:
            return {"name": name, "error": str(exc)}
        rendered = json.loads(wav.with_suffix(".json").read_text())
        meta = transcribe_file(_transcriber, wav, out, name)
    meta["rendered"] = {k: rendered[k] for k in ("work", "family", "soundfont", "programs", "transpose",
                                                  "tempo_scale", "notes", "solo")}
    write_json(sidecar, meta)
    return meta


def build_heard_midi(out_dir: str | Path, count: int, jobs: int = 2, seed: int = HEARD_SEED, solo: int = 0) -> dict:
    """Make (or finish) `count` heard pieces and `solo` single lines in out_dir; returns a tally written to
    out_dir/heard.json."""
    from .make_dataset_files import ordered_map

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = 1 if jobs > 1 else max(1, os.cpu_count() or 1)
    items = [(*p, str(out), threads) for p in plan(count, seed, solo)]
    failed = 0
    for meta in progress(ordered_map(hear_one, items, jobs), "hear corpus", total=len(items), unit="piece"):
        if "error" in meta:
            log.warning("%s", meta["error"])
            failed += 1
    # The tally is of the folder, which is what the data set is made of: an earlier, larger request's pieces count.
    tally = {"pieces": 0, "solo": 0, "notes": 0, "seconds": 0.0, "failed": failed, "families": {}, "works": set()}
    for path in sorted(out.glob("*.json")):
        meta = json.loads(path.read_text()) if path.name != MANIFEST else {}
        if "rendered" not in meta or not (out / meta["midi"]).is_file():
            continue
        tally["pieces"] += 1
        tally["solo"] += bool(meta["rendered"].get("solo"))
        tally["notes"] += meta["notes"]
        tally["seconds"] += meta["duration_s"]
        fam = meta["rendered"]["family"]
        tally["families"][fam] = tally["families"].get(fam, 0) + 1
        tally["works"].add(meta["rendered"]["work"])
    tally["works"] = len(tally["works"])
    tally["hours"] = round(tally["seconds"] / 3600, 2)
    write_json(out / MANIFEST, {**tally, "requested": count, "requested_solo": solo, "seed": seed,
                                "max_seconds": HEARD_SECONDS})
    return tally
