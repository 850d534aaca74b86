#!/usr/bin/env bash
# Ship a trained SAE family: copy it into checkpoints/ in fp16, index each member's
# feature catalog, and evaluate the family on the held-out shard. These are the exact
# commands behind the figures in the README.
#   scripts/ship.sh runs/final/resid_post.12 checkpoints/smollm2-135m/resid_post.12 9216-k32
# Without the third argument DEFAULT (the SAE `steer chat` opens) is left as it is: e.g.
# one depth of a several-depth run (steer train --layer 4,8,16,20 --out runs/depths):
#   scripts/ship.sh runs/depths/resid_post.4 checkpoints/smollm2-135m/resid_post.4
set -euo pipefail
run=${1:?run folder}; dest=${2:?checkpoint folder}; default=${3:-}
corpus=${CORPUS:-../shared/corpus/wikipedia-en}
steer=.venv/bin/steer
mkdir -p "$dest"
cp "$run/metrics.jsonl" "$dest/metrics.jsonl"   # the training log of the whole family
for member in "$run"/*-k*/; do
  name=$(basename "$member")
  .venv/bin/python - "$member" "$dest/$name" <<'PY'
import sys, torch
from sae import TopKSAE
src, dst = sys.argv[1:]
TopKSAE.load(src).save(dst, dtype=torch.float16)   # fp16 halves the size; SAEs load as fp32
PY
  "$steer" index --sae "$dest/$name" --corpus "$corpus/wiki-06.jsonl.xz" --tokens "${INDEX_TOKENS:-100k}"
done
# One pass evaluates every member (clean, zero-ablated and spliced forwards share the batch).
"$steer" eval --sae "$dest" --corpus "$corpus/wiki-07.jsonl.xz" --split all \
    --tokens "${EVAL_TOKENS:-128k}" --json --hist "$dest/density.png" > "$dest/eval.json"
if [ -n "$default" ]; then
  echo "$(basename "$dest")/$default" > "$dest/../DEFAULT"   # the SAE `steer chat` opens
fi
