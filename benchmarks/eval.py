"""`steer eval`'s speed against the forward-pass rate of its own model, in one run.

    python benchmarks/eval.py [--sae DIR] [--tokens 8192] [--batch-contexts 4] [--threads 1]

The eval runs the model on 2 + n stacked copies of every batch (clean, zero-ablated, one
per SAE), so a natural bound is the plain forward rate divided by 2 + n. This script reads
the same held-out contexts (wiki-07, never trained on) and measures, on the same batches
(same (B, T) shapes, same dtype and bf16 autocast):

  forward  the model's plain forward pass with its LM head (logits), before and after the
           eval (the mean of both, so a machine whose load changes is seen in both);
  eval     steer.evals.evaluate.evaluate_saes on every SAE of --sae at once, and where its
           time goes: the SAEs (encode/decode, in the hook), the LM head and the vocab-size
           fp32 softmaxes (CE, KL), and the rest (the model's blocks);

and prints eval tokens/s, the bound = forward rate / (2 + n), and eval / bound (target
>= 50%). Rates count eval tokens (positions 1..T-1 of each context) in both. Wall time
and this process's CPU time are both shown: on a shared machine the wall time also
measures the others, the CPU time (one thread by default) mostly does not.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

import steer.evals.evaluate as ev
from sae import load_sae
from steer.lm.data import TokenContexts
from steer.lm.models import load_model

CORPUS = "../shared/corpus/wikipedia-en/wiki-07.jsonl.xz"  # from the repo root, as in the README
SAES = "checkpoints/smollm2-135m/resid_post.12"


class Clock:
    """Wall and CPU seconds spent inside the wrapped calls."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall += time.perf_counter() - wall
                self.cpu += time.process_time() - cpu

        return timed


@torch.inference_mode()
def forward_seconds(lm, batches, autocast: bool) -> tuple[float, float]:
    clock = Clock()
    run = clock.wrap(lambda ids: lm.model(input_ids=ids, use_cache=False).logits)
    for ids in batches:
        with ev._autocast(lm, autocast):
            run(ids)
    return clock.wall, clock.cpu


def eval_seconds(lm, saes, layer, contexts, cfg) -> tuple[dict, dict[str, Clock]]:
    """Run the eval with its SAE hook and its loss step timed (patched for this run)."""
    clocks = {"eval": Clock(), "saes": Clock(), "head": Clock()}
    splice_hook, add_losses = ev._splice_hook, ev._add_losses
    ev._splice_hook = lambda *a: clocks["saes"].wrap(splice_hook(*a))
    ev._add_losses = clocks["head"].wrap(add_losses)
    try:
        results = clocks["eval"].wrap(ev.evaluate_saes)(lm, saes, layer, contexts, cfg)
    finally:
        ev._splice_hook, ev._add_losses = splice_hook, add_losses
    return results, clocks


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sae", default=SAES, help="an SAE folder or a folder of several")
    ap.add_argument("--corpus", default=CORPUS)
    ap.add_argument("--tokens", type=int, default=8192, help="eval tokens")
    ap.add_argument("--batch-contexts", type=int, default=4)
    ap.add_argument("--ctx-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="auto", help="auto (fp32 weights, bf16 autocast) or fp32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    saes = {name: load_sae(path) for name, path in ev.find_sae_dirs(args.sae).items()}
    first = next(iter(saes.values()))
    layer = int(first.cfg.hookpoint.rsplit(".", 1)[-1])
    lm = load_model(first.cfg.model_name or "smollm2-135m", device=torch.device("cpu"))
    cfg = ev.EvalConfig(
        tokens=args.tokens, batch_contexts=args.batch_contexts, autocast=args.dtype == "auto"
    )
    stream = TokenContexts(args.corpus, lm.tokenizer, ctx_len=args.ctx_len, shuffle_buffer=0)
    n_contexts = -(-args.tokens // (args.ctx_len - cfg.skip_first))
    contexts = list(itertools.islice(iter(stream), n_contexts))
    batches = list(ev._batches(contexts, cfg.batch_contexts, cfg.tokens, cfg.skip_first))
    forward_seconds(lm, batches[:1], cfg.autocast)  # warm-up (allocator, kernels)

    before = forward_seconds(lm, batches, cfg.autocast)
    results, clocks = eval_seconds(lm, saes, layer, contexts, cfg)
    after = forward_seconds(lm, batches, cfg.autocast)

    tokens = next(iter(results.values()))["tokens"]
    copies = 2 + len(saes)
    print(
        f"{lm.name} resid_post.{layer}, {len(saes)} SAEs ({', '.join(saes)}), {tokens:,} eval "
        f"tokens in {len(batches)} batches of {cfg.batch_contexts} x {args.ctx_len}, "
        f"{'bf16 autocast' if cfg.autocast else 'fp32'}, {torch.get_num_threads()} thread(s)"
    )
    for kind, index in (("wall", 0), ("cpu", 1)):
        fwd = (before[index] + after[index]) / 2
        spent = getattr(clocks["eval"], kind)
        rate, fwd_rate = tokens / spent, tokens / fwd
        bound = fwd_rate / copies
        saes_s, head_s = getattr(clocks["saes"], kind), getattr(clocks["head"], kind)
        print(
            f"{kind:>4}: forward {fwd_rate:,.0f} tok/s (before {tokens / before[index]:,.0f}, "
            f"after {tokens / after[index]:,.0f}); bound = forward / {copies} = {bound:,.0f} "
            f"tok/s; eval {rate:,.0f} tok/s = {rate / bound:.0%} of the bound"
        )
        print(
            f"      eval {spent:.1f} s: SAEs {saes_s / spent:.0%}, LM head + softmaxes "
            f"{head_s / spent:.0%}, the model's blocks and the rest "
            f"{(spent - saes_s - head_s) / spent:.0%}; {copies} plain forwards take "
            f"{copies * fwd:.1f} s"
        )


if __name__ == "__main__":
    main()
