#!/usr/bin/env bash
# Device-side training of the demo model, in two calls of at most 10 minutes each (the commands
# that produced the bundled models/demo/flux-tiny). Run from a folder holding the scripts of
# tools/demo_model (tasks.py, data.py, model.py, train.py), tokenizer.json and corpus_ids.npy;
# checkpoints go to $OUT.
#   run_device.sh 1            stage-1 base (6.3 min), then a first router (2.0 min)
#   run_device.sh 2 BASE1_DIR  stage-2 base resumed from BASE1_DIR (2.1 min), then the router
#                              of the bundled checkpoint (0.6 min)
set -euo pipefail
cd "$(dirname "$0")"
stage="${1:?stage 1 or 2}"
if [[ "$stage" == 1 ]]; then
  python3 train.py base --tokenizer tokenizer.json --corpus corpus_ids.npy --out "$OUT/base" \
    --minutes 6.3 --workers 14 --log-every 50 2>&1 | tee "$OUT/base_stdout.txt"
  python3 train.py router --tokenizer tokenizer.json --corpus corpus_ids.npy --init "$OUT/base" \
    --out "$OUT/router" --minutes 2.0 --workers 14 --log-every 20 --tokens-per-batch 65536 \
    2>&1 | tee "$OUT/router_stdout.txt"
else
  python3 train.py base --stage 2 --resume "${2:?BASE1_DIR}" --lr 1.5e-3 \
    --tokenizer tokenizer.json --corpus corpus_ids.npy --out "$OUT/base" --minutes 2.1 \
    --workers 15 --log-every 50 2>&1 | tee "$OUT/base2_stdout.txt"
  python3 train.py router --tokenizer tokenizer.json --corpus corpus_ids.npy --init "$OUT/base" \
    --out "$OUT/router" --minutes 0.6 --workers 15 --log-every 20 --tokens-per-batch 65536 \
    --lambda-lr 0.1 2>&1 | tee "$OUT/router_stdout.txt"
fi
