#!/usr/bin/env bash
# Ship a trained SAE family: copy it into checkpoints/ in fp16, index each member's
# feature catalog, and evaluate it on the held-out shard. The exact commands that
# produced the figures in the README.
#   scripts/ship.sh runs/final/resid_post.12 checkpoints/smollm2-135m/resid_post.12 4608-k32
set -euo pipefail
run=${1:?run folder}; dest=${2:?checkpoint folder}; default=${3:?default member}
corpus=${CORPUS:-../shared/corpus/wikipedia-en}
steer=.venv/bin/steer
mkdir -p "$dest"
for member in "$run"/*-k*/; do
  name=$(basename "$member")
  .venv/bin/python - "$member" "$dest/$name" <<'PY'
import shutil, sys, torch
from sae import TopKSAE
src, dst = sys.argv[1:]
TopKSAE.load(src).save(dst, dtype=torch.float16)   # fp16 halves the size; SAEs load as fp32
PY
  cp "$run/metrics.jsonl" "$dest/$name/metrics.jsonl"
  "$steer" index --sae "$dest/$name" --corpus "$corpus/wiki-06.jsonl.xz" --tokens "${INDEX_TOKENS:-150k}"
  "$steer" eval --sae "$dest/$name" --corpus "$corpus/wiki-07.jsonl.xz" --split all \
      --tokens "${EVAL_TOKENS:-32k}" --json > "$dest/$name/eval.json"
done
echo "$(basename "$dest")/$default" > "$dest/../DEFAULT"  # the SAE `steer chat` opens
