#!/usr/bin/env bash
# transcribe-dir INPUT_DIR OUTPUT_DIR: run Magenta's onsets_frames_transcription_transcribe on every WAV under
# INPUT_DIR (Pachyderm: /pfs/<input>) and write NAME.mid into OUTPUT_DIR (/pfs/out).
# The input is read-only on Pachyderm, so each file is transcribed from a private copy; a failed file is named
# on stderr, the others are still done, and the exit status is 1 at the end.
set -uo pipefail

in_dir=${1:?usage: transcribe-dir INPUT_DIR OUTPUT_DIR}
out_dir=${2:?usage: transcribe-dir INPUT_DIR OUTPUT_DIR}
model_dir=${MODEL_DIR:-/opt/maestro/train}
[ -d "$in_dir" ] || { echo "$in_dir: input directory does not exist" >&2; exit 1; }
mkdir -p "$out_dir"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
count=0
while IFS= read -r -d '' wav; do
    rel=${wav#"$in_dir"/}
    name=$(basename "${rel%.*}")
    # files in sub-folders keep their folder in the name, as the ambientgen transcribe stage does
    case "$rel" in */*) name="$(dirname "$rel" | tr '/' '_')_$name" ;; esac
    cp "$wav" "$work/$name.wav" || { echo "$wav: cannot copy" >&2; failed=1; continue; }
    if onsets_frames_transcription_transcribe --model_dir="$model_dir" "$work/$name.wav" >"$work/$name.log" 2>&1 \
        && [ -s "$work/$name.wav.midi" ]; then
        mv "$work/$name.wav.midi" "$out_dir/.$name.mid.tmp" && mv "$out_dir/.$name.mid.tmp" "$out_dir/$name.mid"
        echo "$rel -> $name.mid"
        count=$((count + 1))
    else
        echo "$wav: transcription failed: $(tail -n 3 "$work/$name.log" | tr '\n' ' ')" >&2
        failed=1
    fi
    rm -f "$work/$name.wav" "$work/$name.log"
done < <(find "$in_dir" -type f \( -iname '*.wav' \) -not -path '*/.*' -print0 | sort -z)

echo "transcribed $count file(s) into $out_dir"
exit "$failed"
