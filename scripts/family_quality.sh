#!/usr/bin/env bash
# The paper's feature-quality metrics vs width (Gao et al. §4.2-4.5: probe loss, N2G
# precision/recall, ablation sparsity) on the shipped family: 2304/4608/9216-k32 at
# resid_post.12 of SmolLM2-135M, 24M training tokens each, on the held-out shard wiki-07.
# Writes eval-quality.json beside the checkpoints (steer report merges it with eval.json)
# and the report with the quality-vs-width figures into docs/reproduction/family/.
# Sized for a busy 2-core CPU (one thread): about 25 minutes of wall time there.
set -euo pipefail
STEER=${STEER:-steer}
FAMILY=${FAMILY:-checkpoints/smollm2-135m/resid_post.12}
HELDOUT=${HELDOUT:-/work/shared/corpus/wikipedia-en/wiki-07.jsonl.xz}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # a shared machine: one core per job

# probes: 10 tasks x 2 x 64 windows of 32 tokens; N2G: fitted on 16k tokens, scored on
# the other 16k; ablation: 16 contexts x 2 positions, every active latent (~1k per SAE).
$STEER eval --sae "$FAMILY" --corpus "$HELDOUT" --split all --tokens 2k --device cpu \
  --probes --probe-examples 64 --n2g --n2g-tokens 32k \
  --ablation --ablation-contexts 16 --json > "$FAMILY/eval-quality.json.tmp"
mv "$FAMILY/eval-quality.json.tmp" "$FAMILY/eval-quality.json"
$STEER report "$FAMILY" --out docs/reproduction/family \
  --title "The shipped SAE family (k = 32, 24M tokens each): quality vs width"
