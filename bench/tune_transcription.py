"""Choose transcription decoding settings on the development set's 'tune' part (never on 'test').

Model activations are computed once per clip and cached (DEV/_acts), so a grid of decoding settings costs only
decoding and scoring. Prints, per setting, the mean over clips of onset F1, onset+offset F1 and frame F1 for every
timbre family, the mean over families, and the best settings last.

    python bench/tune_transcription.py --dev-set runs/devset --model basic-pitch
    python bench/tune_transcription.py --dev-set runs/devset --model onsets-frames --checkpoint runs/of
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
from pathlib import Path

import numpy as np


def clips(dev: Path, part: str, per_family: int) -> list[Path]:
    from ambientgen.music.synth_data import make_dev_set

    return make_dev_set(dev, part, per_family)


def activations(model: str, wavs: list[Path], cache: Path, checkpoint: str | None) -> dict[Path, dict]:
    """Per clip: basic-pitch (note, onset) at 86 fps or onsets-frames (onset, frame, velocity) at 31.25 fps."""
    import soundfile as sf
    import soxr

    tag = model if model == "basic-pitch" else "of-" + hashlib.sha1(str(checkpoint).encode()).hexdigest()[:8]
    cache.mkdir(parents=True, exist_ok=True)
    net = None
    out = {}
    for wav in wavs:
        f = cache / f"{tag}-{wav.stem}.npz"
        if f.is_file():
            with np.load(f, allow_pickle=False) as z:
                out[wav] = {k: z[k] for k in z.files}
            continue
        audio, sr = sf.read(str(wav), dtype="float32")
        if net is None:
            if model == "basic-pitch":
                from ambientgen.music.basic_pitch_onnx import BasicPitchTranscriber

                net = BasicPitchTranscriber()
            else:
                from ambientgen.models.onsets_frames import load_model

                net = load_model(checkpoint)
        if model == "basic-pitch":
            note, onset = net.activations_of(soxr.resample(audio, sr, 22050))
            acts = {"note": note, "onset": onset}
        else:
            acts = net.predict(audio, sr)
        np.savez(f, **acts)
        out[wav] = acts
    return out


def decode(model: str, acts: dict, setting: dict):
    from ambientgen.music.transcription import Note, notes_to_sequence

    if model == "basic-pitch":
        from ambientgen.music.basic_pitch_onnx import BasicPitchParams, decode_activations

        fps = 22050 / 256
        events = decode_activations(acts["note"], acts["onset"], BasicPitchParams(**setting))
        return notes_to_sequence([Note(s / fps, e / fps, int(p), int(127 * a)) for s, e, p, a in events])
    from ambientgen.models.onsets_frames import decode_notes
    from ambientgen.models.onsets_frames import notes_to_sequence as of_seq

    return of_seq(decode_notes(acts["onset"], acts["frame"], acts["velocity"], **setting))


def grid(model: str) -> list[dict]:
    if model == "basic-pitch":
        keys = {"onset_threshold": [0.3, 0.4, 0.5, 0.6], "frame_threshold": [0.2, 0.3, 0.4, 0.5],
                "minimum_note_length_ms": [58.0, 127.7], "melodia_trick": [True, False]}
    else:
        keys = {"onset_threshold": [0.3, 0.5, 0.7], "frame_threshold": [0.3, 0.5, 0.7],
                "frame_start_threshold": [None, 0.6, 0.8]}
    return [dict(zip(keys, v)) for v in itertools.product(*keys.values())]


def main() -> None:
    from ambientgen.music.midi_io import load_midi
    from ambientgen.music.transcription import transcription_scores

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dev-set", required=True)
    ap.add_argument("--model", choices=("basic-pitch", "onsets-frames"), default="basic-pitch")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--per-family", type=int, default=12)
    ap.add_argument("--settings", default=None, help="JSON list of settings instead of the built-in grid")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dev = Path(args.dev_set)
    wavs = clips(dev, "tune", args.per_family)
    acts = activations(args.model, wavs, dev / "_acts", args.checkpoint)
    refs = {w: load_midi(w.with_suffix(".mid"), allow_empty=True) for w in wavs}
    fams = {w: json.loads(w.with_suffix(".json").read_text())["family"] for w in wavs}
    families = list(dict.fromkeys(fams.values()))
    results = []
    for setting in (json.loads(args.settings) if args.settings else grid(args.model)):
        per: dict[str, list[dict]] = {f: [] for f in families}
        for w in wavs:
            per[fams[w]].append(transcription_scores(refs[w], decode(args.model, acts[w], setting)))
        means = {f: {m: float(np.mean([r[m] for r in rs])) for m in ("f1", "f1_offset", "frame_f1")}
                 for f, rs in per.items()}
        score = float(np.mean([(v["f1"] + v["frame_f1"] + v["f1_offset"]) / 3 for v in means.values()]))
        results.append({"setting": setting, "score": score, "families": means})
        print(json.dumps(setting), f"score {score:.3f}", " ".join(
            f"{f}:{v['f1']:.2f}/{v['f1_offset']:.2f}/{v['frame_f1']:.2f}" for f, v in means.items()), flush=True)
    results.sort(key=lambda r: -r["score"])
    print("\nbest (score = mean over families of onset, offset and frame F1):")
    for r in results[:5]:
        print(f"{r['score']:.3f}", json.dumps(r["setting"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
