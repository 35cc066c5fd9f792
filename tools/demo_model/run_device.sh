#!/usr/bin/env bash
# Device-side training of the demo model in one call of at most 8 minutes (the commands that
# produced the bundled models/demo/flux-tiny). Run from the repository root; the scripts are read
# from this script's folder, the corpus ids from $DEMO_CORPUS (default
# build/demo_model/corpus_ids.npy, written by tokenize_corpus.py); checkpoints and logs go to $OUT.
#   base:   initialized from models/demo/flux-tiny (the previous bundled checkpoint), 4.8 minutes
#           of the new recipe (train.py), then a probe of 24 fresh samples per task and length
#   router: on the frozen result, 2.0 minutes
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export FLUXATTN_EVAL_DIR="${FLUXATTN_EVAL_DIR:-$PWD/apps/fluxattn/eval}"  # words.cc
common=(--tokenizer models/demo/flux-tiny/tokenizer.json
        --corpus "${DEMO_CORPUS:-build/demo_model/corpus_ids.npy}" --workers 14)
python3 "$here/train.py" base "${common[@]}" --init-hf models/demo/flux-tiny \
  --out "$OUT/base" --minutes 4.8 --lr 1.5e-3 --log-every 50 --probe 24 2>&1 \
  | tee "$OUT/stdout.txt"
python3 "$here/train.py" router "${common[@]}" --init "$OUT/base" \
  --out "$OUT/router" --minutes 2.0 --log-every 20 --lambda-lr 0.1 2>&1 \
  | tee -a "$OUT/stdout.txt"
