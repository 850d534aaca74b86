"""What training SAEs at several depths in one pass costs, against one depth (run:
`.venv/bin/python benchmarks/depths.py [--layers 4,8,16,20] [--contexts 64] [--width 4608]`).

Four measurements on the same tokens of the held-out shard, each timed end to end
(`Trainer.fit`, initialisation and the final checkpoint included):

- one depth: the model cut after the deepest listed block, one SAE there;
- all depths: the same forward pass capturing every listed block, one SAE per depth
  (`steer train --layer 4,8,16,20`);
- SAE only, one and all: the same SAEs on activations computed beforehand (no model);
- and the forward passes alone, to price the alternative: one run per depth.

The extra cost of the extra depths (all − one) should be close to the extra SAE work
(SAE only: all − one), since the forward pass is shared.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from sae.train.trainer import TrainConfig, Trainer
from steer.lm.activations import ActivationStream
from steer.lm.data import TokenContexts
from steer.lm.models import load_model

SHARD = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus" / "wikipedia-en"


def fit_seconds(cfg: TrainConfig, d: int, source, hookpoints: list[str] | None) -> float:
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg, d, out, hookpoints=hookpoints)
        start = time.perf_counter()
        trainer.fit(source)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", default="4,8,16,20")
    parser.add_argument("--contexts", type=int, default=64)
    parser.add_argument("--width", type=int, default=4608)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-tokens", type=int, default=1024)
    parser.add_argument("--corpus", default=str(SHARD / "wiki-07.jsonl.xz"))
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each measurement, interleaved; the fastest counts",
    )
    args = parser.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    deepest = max(layers)

    lm = load_model()
    contexts = TokenContexts(
        args.corpus, lm.tokenizer, ctx_len=128, max_contexts=args.contexts, shuffle_buffer=0
    )
    ids = torch.stack(list(contexts))  # (C, 128)
    n_tokens = ids.shape[0] * (ids.shape[1] - 1)  # the first position is skipped
    cfg = TrainConfig(
        widths=[args.width],
        ks=[args.k],
        batch_tokens=args.batch_tokens,
        total_tokens=n_tokens,
        optimizer="signum",
        geomedian_tokens=args.batch_tokens,
        save_every_steps=10**9,
    )
    print(
        f"model {lm.name}, layers {layers} (one depth: {deepest}), {n_tokens:,} tokens, "
        f"SAE {args.width}-k{args.k} per depth, batch {args.batch_tokens}, "
        f"{torch.get_num_threads()} threads"
    )

    def stream(layer):
        return ActivationStream(lm, layer, ids, batch_tokens=args.batch_tokens, seed=0)

    def forward_seconds(layer) -> float:
        start = time.perf_counter()
        acts = stream(layer).activations(ids)
        return time.perf_counter() - start, acts

    points = [f"resid_post.{layer}" for layer in layers]
    _, acts = forward_seconds(layers)  # (N, D, d); also the warm-up
    batches = list(acts.split(args.batch_tokens))
    jobs = {
        "one": lambda: fit_seconds(cfg, lm.d_model, stream(deepest), None),
        "every": lambda: fit_seconds(cfg, lm.d_model, stream(layers), points),
        "sae_one": lambda: fit_seconds(cfg, lm.d_model, [b[:, -1].clone() for b in batches], None),
        "sae_all": lambda: fit_seconds(cfg, lm.d_model, [b.clone() for b in batches], points),
        "t_all": lambda: forward_seconds(layers)[0],
        **{layer: (lambda layer=layer: forward_seconds(layer)[0]) for layer in layers},
    }
    # Interleaved repeats, the fastest of each: on a shared machine the load comes and goes.
    best = {key: job() for key, job in jobs.items()}
    for _ in range(args.repeats - 1):
        for key, job in jobs.items():
            best[key] = min(best[key], job())
    one, every, sae_one, sae_all, t_all = (
        best[k] for k in ("one", "every", "sae_one", "sae_all", "t_all")
    )
    forwards = {layer: best[layer] for layer in layers}

    def row(name: str, seconds: float, note: str = "") -> None:
        print(f"{name:<34} {seconds:7.2f} s  {n_tokens / seconds:7.0f} tokens/s  {note}")

    row(f"one depth ({deepest}), model + SAE", one)
    row(f"{len(layers)} depths, one pass, model + SAEs", every, f"({every / one:.2f}x one depth)")
    row("SAE only, one depth", sae_one)
    row(f"SAE only, {len(layers)} depths", sae_all, f"({sae_all / sae_one:.2f}x)")
    row(f"forward to {deepest}, capturing {len(layers)}", t_all)
    separate = sum(forwards.values()) + len(layers) * sae_one
    row(f"{len(layers)} separate one-depth runs (est.)", separate, "(Σ forward to L + SAEs)")
    extra, extra_sae = every - one, sae_all - sae_one
    print(
        f"extra depths cost {extra:.2f} s, the extra SAE work alone {extra_sae:.2f} s "
        f"(ratio {extra / extra_sae:.2f}); one pass saves {1 - every / separate:.0%} "
        "against separate runs"
    )


if __name__ == "__main__":
    main()
