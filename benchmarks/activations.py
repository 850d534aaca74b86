"""Activation streaming throughput on the embedded model (run: `make bench` or
`.venv/bin/python benchmarks/activations.py [--layer 15] [--contexts 64]`).

Prints tokens/s of ActivationStream at one layer in fp32 and under bf16 autocast, and the
same batches through the full model, so the gain of cutting the model after the hooked
block is a ratio measured in one run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from steer.lm.activations import ActivationStream
from steer.lm.data import TokenContexts
from steer.lm.models import load_model

SHARD = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "corpus"
    / "wikipedia-en"
    / "wiki-07.jsonl.xz"
)
FALLBACK = "The Golden Gate Bridge is a suspension bridge spanning the Golden Gate strait. " * 400


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--contexts", type=int, default=64)
    parser.add_argument("--ctx-len", type=int, default=128)
    parser.add_argument("--corpus", default=str(SHARD))
    args = parser.parse_args()

    lm = load_model()
    corpus = args.corpus
    if not Path(corpus).exists():
        corpus = Path("/tmp/steer-bench-corpus.txt")
        corpus.write_text(FALLBACK)
    contexts = TokenContexts(
        corpus, lm.tokenizer, ctx_len=args.ctx_len, max_contexts=args.contexts, shuffle_buffer=0
    )
    ids = torch.stack(list(contexts))
    print(
        f"model {lm.name}, layer {args.layer}/{lm.n_layers}, {ids.numel()} tokens, {torch.get_num_threads()} threads"
    )

    def rate(autocast: bool, full: bool) -> float:
        stream = ActivationStream(
            lm, args.layer, ids, batch_tokens=4096, chunk_contexts=len(ids), autocast=autocast
        )
        start = time.perf_counter()
        if full:
            with torch.inference_mode(), stream._autocast():
                for i in range(0, len(ids), stream.model_batch):
                    lm.model(ids[i : i + stream.model_batch], use_cache=False)
        else:
            sum(b.shape[0] for b in stream)
        return ids.numel() / (time.perf_counter() - start)

    rate(True, False)  # warm up
    fp32, bf16, full = rate(False, False), rate(True, False), rate(True, True)
    print(f"activations fp32            {fp32:8.0f} tokens/s")
    print(f"activations bf16 autocast   {bf16:8.0f} tokens/s  ({bf16 / fp32:.2f}x fp32)")
    print(
        f"full forward bf16 autocast  {full:8.0f} tokens/s  (cut after layer {args.layer}: {bf16 / full:.2f}x)"
    )


if __name__ == "__main__":
    main()
