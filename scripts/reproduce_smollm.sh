#!/usr/bin/env bash
# The reproduction of docs/REPRODUCTION.md on this repo's embedded model (SmolLM2-135M,
# resid_post.12), sized for a 2-core CPU: one model pass cached (300k tokens), then 16 TopK
# SAEs (4 widths x 4 k) and 9 baselines trained on the cache, evaluated and reported.
# On a busy shared 2-core machine this took about 70 minutes end to end (most of it the two
# training runs, about 25 minutes each); figures and report land in docs/reproduction/.
set -euo pipefail
STEER=${STEER:-steer}
CORPUS=${CORPUS:-/work/shared/corpus/wikipedia-en/wiki-00.jsonl.xz}
RUNS=${RUNS:-runs/sweep}
CACHE=${CACHE:-runs/cache-smollm-l12}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # a shared machine: one core per job

$STEER cache --model smollm2-135m --layer 12 --corpus "$CORPUS" --tokens 300k \
  --shard-tokens 32k --out "$CACHE" --device cpu
$STEER train --activations "$CACHE" --widths 1x,2x,4x,8x --k 8,16,32,64 --tokens 300k \
  --batch-tokens 2048 --optimizer signum --out "$RUNS/topk" --device cpu
$STEER train --activations "$CACHE" --widths 2x --arch batchtopk,relu,jumprelu \
  --k 16,32,64 --l1 0.03,0.1,0.3 --l0 0.0003,0.001,0.003 --tokens 300k \
  --batch-tokens 2048 --optimizer signum --out "$RUNS/baselines" --device cpu
# Reconstruction and downstream loss of every SAE on held-out text.
$STEER eval --sae "$RUNS/topk" --tokens 4k --device cpu --json > "$RUNS/topk/eval.json"
$STEER eval --sae "$RUNS/baselines" --tokens 1k --device cpu --json > "$RUNS/baselines/eval.json"
# The costly feature-quality metrics on the k=32 TopK SAEs, one width at a time (not run
# for docs/REPRODUCTION.md: no time left on the busy machine).
for n in 576 1152 2304 4608; do
  $STEER eval --sae "$RUNS/topk/$n-k32" --tokens 1k --device cpu --json \
    --probes --n2g --n2g-tokens 8k --ablation \
    > "$RUNS/topk/eval-quality-$n.json"
done
$STEER report "$RUNS/topk" "$RUNS/baselines" --out docs/reproduction \
  --title "TopK SAE reproduction on SmolLM2-135M resid_post.12"
# The feature-quality metrics vs width on the shipped (better-trained) family instead:
# scripts/family_quality.sh (docs/REPRODUCTION.md's quality row).
