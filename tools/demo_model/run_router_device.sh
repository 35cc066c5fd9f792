#!/usr/bin/env bash
# Device-side training of the Flux router alone, on the frozen base of the bundled model
# (models/demo/flux-tiny), once per target set, in one call. Run from the repository root; the
# corpus ids come from $DEMO_CORPUS (default build/demo_model/corpus_ids.npy), the router
# checkpoints and logs go to $OUT/router-NAME.
#   ROUTER_RUNS="NAME=TARGETS;NAME=TARGETS" (TARGETS as train.py --targets), ROUTER_MINUTES.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export FLUXATTN_EVAL_DIR="${FLUXATTN_EVAL_DIR:-$PWD/apps/fluxattn/eval}"  # words.cc
runs="${ROUTER_RUNS:?set ROUTER_RUNS, e.g. sa75=passkey=0.75,kv_retrieval=0.75}"
IFS=';' read -r -a items <<< "$runs"
for item in "${items[@]}"; do
  name="${item%%=*}"
  targets="${item#*=}"
  python3 "$here/train.py" router --tokenizer models/demo/flux-tiny/tokenizer.json \
    --corpus "${DEMO_CORPUS:-build/demo_model/corpus_ids.npy}" --workers 14 \
    --init-hf models/demo/flux-tiny --targets "$targets" --out "$OUT/router-$name" \
    --minutes "${ROUTER_MINUTES:-2.0}" --log-every 20 --lambda-lr 0.1 2>&1 \
    | tee -a "$OUT/stdout-$name.txt"
done
