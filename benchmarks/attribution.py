"""Attribution against exact ablation on held-out text, and its cost on this CPU.

    python benchmarks/attribution.py [--sae DIR] [--pairs 50] [--ctx 64] [--steps 10]

For each of --pairs (context, target) pairs — the first --ctx tokens of a held-out
Wikipedia document (wiki-07, never trained on) and the token that follows them — it runs
attribution patching (`linear`, the default) and integrated gradients (`ig`), and ablates
exactly (steering's ablate, one batched forward per 16 latents) every latent in the union
of both methods' top --pool. Then per pair and method:
  - Spearman rank correlation of attribution vs exact effect over the method's top 20;
  - overlap of the method's top 10 with the exact top 10 of the pool;
  - seconds per attribution, the attribution alone: wall time, and the CPU time of this
    process (all its threads; on a shared machine the wall time mostly measures the others).
Prints the mean and median over pairs, and the SAE error's share. --methods linear skips IG.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from steer.app.engine import find_default_sae
from steer.attribution import ablation_effects, attribute, resolve_target
from steer.lm.data import iter_texts
from steer.steering import open_sae

CORPUS = "../shared/corpus/wikipedia-en/wiki-07.jsonl.xz"  # from the repo root, as in the README


def ranks(v: torch.Tensor) -> torch.Tensor:
    return v.argsort().argsort().double()


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-12))


def pairs_from(corpus: str, tokenizer, n: int, ctx: int):
    """(ids (ctx + 1,)) for the first n documents with enough tokens."""
    out = []
    for text in iter_texts(corpus):
        ids = tokenizer(text)["input_ids"]
        if len(ids) > ctx:
            out.append(torch.tensor(ids[: ctx + 1]))
        if len(out) == n:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sae", default=None, help="SAE folder (default: the shipped default)")
    ap.add_argument("--corpus", default=CORPUS)
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--ctx", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10, help="integrated-gradient steps")
    ap.add_argument("--pool", type=int, default=30, help="top latents per method ablated exactly")
    ap.add_argument("--batch", type=int, default=32, help="ablations per batched forward")
    ap.add_argument("--methods", default="linear,ig", help="comma-separated: linear, ig")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write per-pair results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    lm, sae = open_sae(args.sae or find_default_sae())
    contexts = pairs_from(args.corpus, lm.tokenizer, args.pairs, args.ctx)
    known = {"linear": {}, "ig": {"method": "ig", "steps": args.steps}}
    methods = {m: known[m] for m in args.methods.split(",")}
    rows = []
    for n, ids in enumerate(contexts):
        target = resolve_target(lm.tokenizer, ids, position=args.ctx)  # the next token
        attrs, seconds, cpu = {}, {}, {}
        for name, kwargs in methods.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            attrs[name] = attribute(lm, sae, ids, target, **kwargs)
            seconds[name] = time.perf_counter() - start
            cpu[name] = time.process_time() - start_cpu
        pool = sorted({s.latent for a in attrs.values() for s in a.top(args.pool)})
        effects = ablation_effects(lm, sae, ids, target, pool, batch=args.batch).tolist()
        exact = dict(zip(pool, effects, strict=True))
        exact_top10 = set(sorted(pool, key=lambda i: -abs(exact[i]))[:10])
        row = {"pair": n, "target": lm.tokenizer.decode([target.token])}
        for name, attr in attrs.items():
            top = attr.top(20)
            est = torch.tensor([s.score for s in top])
            ex = torch.tensor([exact[s.latent] for s in top])
            row[name] = {
                "spearman_top20": spearman(est, ex),
                "top10_overlap": len({s.latent for s in top[:10]} & exact_top10) / 10,
                "seconds": seconds[name],
                "cpu_seconds": cpu[name],
                "error_share": attr.error_share,
            }
        rows.append(row)
        print(
            f"{n:3d} {row['target']!r:>14} "
            + " ".join(
                f"{m}: ρ={row[m]['spearman_top20']:+.2f} top10={row[m]['top10_overlap']:.1f} "
                f"{row[m]['seconds']:.2f}s (cpu {row[m]['cpu_seconds']:.2f}s)"
                for m in methods
            ),
            flush=True,
        )
    print(f"\n{len(rows)} pairs, {args.ctx}-token contexts from {Path(args.corpus).name}, "
          f"{sae.n_latents} latents, {torch.get_num_threads()} threads")  # fmt: skip
    for m in methods:
        for key in ("spearman_top20", "top10_overlap", "seconds", "cpu_seconds", "error_share"):
            vals = [r[m][key] for r in rows]
            print(
                f"{m:>6} {key:<15} mean {statistics.mean(vals):.3f}  "
                f"median {statistics.median(vals):.3f}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
