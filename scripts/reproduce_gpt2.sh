#!/usr/bin/env bash
# Gao et al. 2024's GPT-2 small study with steer, for one 24 GB GPU and the Hugging Face Hub.
#
# Hook point: resid_post.8, the output of block 8 (0-based; TransformerLens's
# blocks.8.hook_resid_post), the layer of the paper's GPT-2 small experiments and of
# openai/sparse_autoencoder's released GPT-2 SAEs. Context length 64 as in the paper.
#
# What it runs: one model pass cached to disk (20M tokens: 20M x 768 x 2 bytes = 31 GB in
# bf16: check the disk), then on that cache
#   - TopK: widths 2^11 .. 2^15 x k in {8, 16, 32, 64, 128} (25 SAEs, 40M tokens: two passes)
#   - baselines at 2^13 latents: BatchTopK k {16, 32, 64}, ReLU+L1, JumpReLU (3 knobs each)
# then held-out eval (reconstruction, delta loss; probes, N2G, ablation sparsity for k=32)
# and `steer report`.
#
# Estimated run time (NOT measured: this repo's machine has no GPU): the cache pass at
# ~150k tokens/s on a 24 GB card is ~3 min plus disk writes; training is bound by the
# encoder matmuls, ~6·d·Σn FLOP per token = 6·768·310k·40M ≈ 5.7e16 FLOP for the TopK
# family (Σn of the 25 SAEs ≈ 310k latents): ~30 min at a sustained 30 TFLOP/s fp32-TF32,
# the baselines (dense decode) about as much again; evals ~15 min. About 1.5 hours in all;
# treat it as an order of magnitude. Split --widths across runs to resume in sittings
# (every run resumes with --resume after Ctrl-C).
set -euo pipefail
STEER=${STEER:-steer}
CORPUS=${CORPUS:?set CORPUS to training text: a .jsonl/.txt/.parquet file or dir, or hf:<dataset>}
RUNS=${RUNS:-runs/gpt2-repro}
CACHE=${CACHE:-$RUNS/cache}
DEV=${DEV:-cuda}

$STEER cache --model gpt2 --layer 8 --corpus "$CORPUS" --ctx-len 64 --tokens 20M \
  --shard-tokens 1M --out "$CACHE" --device "$DEV"
$STEER train --activations "$CACHE" --widths 2048,4096,8192,16384,32768 --k 8,16,32,64,128 \
  --tokens 40M --batch-tokens 4096 --out "$RUNS/topk" --device "$DEV"
$STEER train --activations "$CACHE" --widths 8192 --arch batchtopk,relu,jumprelu \
  --k 16,32,64 --l1 0.03,0.1,0.3 --l0 0.0003,0.001,0.003 --tokens 40M --batch-tokens 4096 \
  --out "$RUNS/baselines" --device "$DEV"
$STEER eval --sae "$RUNS/topk" --tokens 64k --device "$DEV" --json > "$RUNS/topk/eval.json"
$STEER eval --sae "$RUNS/baselines" --tokens 64k --device "$DEV" --json \
  > "$RUNS/baselines/eval.json"
for n in 2048 4096 8192 16384 32768; do
  $STEER eval --sae "$RUNS/topk/$n-k32" --tokens 8k --device "$DEV" --json \
    --probes --probe-examples 128 --n2g --n2g-tokens 64k --ablation --ablation-contexts 32 \
    > "$RUNS/topk/eval-quality-$n.json"
done
$STEER report "$RUNS/topk" "$RUNS/baselines" --out "$RUNS/report" \
  --title "TopK SAE reproduction on GPT-2 small resid_post.8"
