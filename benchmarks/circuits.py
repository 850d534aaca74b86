"""Feature circuits across depths: their cost on this CPU, what pruning keeps, and whether
ablating the kept nodes changes the target as predicted.

    python benchmarks/circuits.py [--sae DIR ...] [--contexts 5] [--ctx 32] [--nodes 8]

Default SAEs: the shipped default SAE and its siblings at every other depth
(checkpoints/<model>/resid_post.L/, as `steer circuit --all-depths` finds them). For each
of --contexts held-out Wikipedia contexts (wiki-07, never trained on; per document the
first --ctx tokens that are followed by a word, the target that word) it builds the circuit (`steer circuit`'s
graph, --nodes latents per depth) and reports:
  - seconds to build it: wall time and the CPU time of this process;
  - per depth, the share of the depth's |attribution| the kept latents carry, and the
    SAE error's share;
  - predicted (the node's effect A) against measured (m - m with the node ablated, one
    batched forward) for the --check strongest latent and error nodes one at a time, and
    for each depth's kept latents together: Pearson and Spearman correlation over all
    single-node checks, the per-node table of the first context, and the joint checks.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

import torch

from steer.app.checkpoints import sibling_depths
from steer.app.engine import find_default_sae
from steer.attribution import resolve_target
from steer.attribution.circuit import build_circuit
from steer.attribution.circuit_check import ablate_nodes
from steer.lm.data import iter_texts
from steer.steering import open_sae

CORPUS = "../shared/corpus/wikipedia-en/wiki-07.jsonl.xz"  # from the repo root
WORD = re.compile(r" [A-Za-z]{3,}")
CURVE = (8, 16, 32, 64, 128)  # latents per depth: the share of |attribution| they carry


def ranks(v: torch.Tensor) -> torch.Tensor:
    return v.argsort().argsort().double()


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))


def contexts_from(corpus: str, tokenizer, n: int, ctx: int) -> list[torch.Tensor]:
    """(ctx + 1,) token windows, one per document: the first whose last token is a word
    (a space and 3+ letters), so the target is a word rather than punctuation."""
    out = []
    for text in iter_texts(corpus):
        ids = tokenizer(text)["input_ids"]
        for q in range(ctx, len(ids)):
            if WORD.fullmatch(tokenizer.decode([ids[q]])):
                out.append(torch.tensor(ids[q - ctx : q + 1]))
                break
        if len(out) == n:
            break
    return out


def load(dirs: list[str] | None):
    folders = [Path(d) for d in dirs] if dirs else sibling_depths(find_default_sae())
    lm, first = open_sae(folders[0])
    from sae import load_sae

    return lm, [first] + [load_sae(f) for f in folders[1:]], folders


def one_context(lm, saes, ids, args) -> dict:
    target = resolve_target(lm.tokenizer, ids, position=args.ctx)  # the next token
    start, start_cpu = time.perf_counter(), time.process_time()
    c = build_circuit(lm, saes, ids, target, nodes=args.nodes)
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    inner = [n for n in c.nodes if n.kind in ("latent", "error")]
    single = sorted(inner, key=lambda n: -abs(n.effect))[: args.check]
    joint = {
        layer: [n for n in c.nodes if n.kind == "latent" and n.layer == layer] for layer in c.layers
    }
    groups = [[n] for n in single] + [g for g in joint.values() if g]
    measured = ablate_nodes(lm, saes, ids, target, groups).tolist()
    return {
        "target": c.target_text,
        "metric": c.metric,
        "seconds": seconds,
        "cpu": cpu,
        "explained": {s.layer: s.explained for s in c.stages if s.layer is not None},
        "curve": {
            s.layer: [s.explained_by(n) for n in CURVE] for s in c.stages if s.layer is not None
        },
        "error": {s.layer: s.error_share for s in c.stages if s.layer is not None},
        "single": [(n, n.effect, m) for n, m in zip(single, measured, strict=False)],
        "joint": [
            (layer, sum(n.effect for n in g), m)
            for (layer, g), m in zip(
                [(k, v) for k, v in joint.items() if v], measured[len(single) :], strict=True
            )
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sae", action="append", help="SAE folder (repeat; default: see above)")
    ap.add_argument("--corpus", default=CORPUS)
    ap.add_argument("--contexts", type=int, default=5)
    ap.add_argument("--ctx", type=int, default=32)
    ap.add_argument("--nodes", type=int, default=8, help="latents kept per depth")
    ap.add_argument("--check", type=int, default=12, help="nodes ablated one at a time")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    lm, saes, folders = load(args.sae)
    print("SAEs:", ", ".join(str(f) for f in folders))
    rows = []
    for i, ids in enumerate(contexts_from(args.corpus, lm.tokenizer, args.contexts, args.ctx)):
        row = one_context(lm, saes, ids, args)
        rows.append(row)
        shares = " ".join(
            f"L{k}:{v:.0%}/{row['error'][k]:.0%}" for k, v in row["explained"].items()
        )
        print(
            f"{i:2d} {row['target']!r:>14} {row['seconds']:5.1f} s (cpu {row['cpu']:5.1f} s)  "
            f"kept/error {shares}",
            flush=True,
        )
    report(rows, args, len(saes))


def report(rows, args, depths) -> None:
    print(
        f"\n{len(rows)} contexts of {args.ctx} tokens from {Path(args.corpus).name}, "
        f"{depths} depths, {args.nodes} latents kept per depth, {torch.get_num_threads()} thread(s)"
    )
    for key in ("seconds", "cpu"):
        vals = [r[key] for r in rows]
        print(
            f"build {key:<8} mean {statistics.mean(vals):.2f}  median {statistics.median(vals):.2f}"
        )
    print("share of each depth's |attribution| carried by its n strongest latents (mean):")
    print("        " + "".join(f"n={n:<6}" for n in CURVE) + "SAE error")
    for layer in rows[0]["explained"]:
        curve = [statistics.mean(r["curve"][layer][i] for r in rows) for i in range(len(CURVE))]
        err = statistics.mean(r["error"][layer] for r in rows)
        print(f"  L{layer:<4} " + "".join(f"{v:<8.0%}" for v in curve) + f"{err:.0%}")
    for kinds, name in (
        (("latent", "error"), "all"),
        (("latent",), "latents"),
        (("error",), "errors"),
    ):
        picked = [(p, m) for r in rows for n, p, m in r["single"] if n.kind in kinds]
        pred = torch.tensor([p for p, _ in picked])
        meas = torch.tensor([m for _, m in picked])
        print(
            f"single-node ablations, {name} ({len(pred)}): Pearson {pearson(pred, meas):+.3f}, "
            f"Spearman {pearson(ranks(pred), ranks(meas)):+.3f}"
        )
    print(f"\nfirst context, target {rows[0]['target']!r}: node, predicted, measured")
    for node, p, m in rows[0]["single"]:
        where = "" if node.pos is None else f" @{node.pos} {node.token!r}"
        print(f"  {node.id:<18}{where:<18} {p:+8.3f} {m:+8.3f}")
    print("each depth's kept latents ablated together: predicted, measured (all contexts)")
    for r in rows:
        print("  " + "  ".join(f"L{layer} {p:+.2f}/{m:+.2f}" for layer, p, m in r["joint"]))
    jp = torch.tensor([p for r in rows for _, p, _ in r["joint"]])
    jm = torch.tensor([m for r in rows for _, _, m in r["joint"]])
    print(f"joint ablations ({len(jp)}): Pearson {pearson(jp, jm):+.3f}")


if __name__ == "__main__":
    main()
