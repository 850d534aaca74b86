"""Choose the layer to ship an SAE at, by measurement (issue 6).

For each layer: train one SAE (same width, k, tokens) on the training shards, then on the
held-out shard measure FVU, fraction of loss recovered and Δ loss, and how well clamping
concept features steers: for each concept, the latent that fires most specifically on a
sentence about it is clamped to a few times its max activation (--strengths) while the
model answers neutral prompts; a hit is a steered answer that mentions the concept where
the baseline does not.

Short runs train with schedule-free SignSGD (`--optimizer signum`), which gets much further
than Adam in a few hundred steps, so the depths are compared nearer to where they converge.

    .venv/bin/python scripts/layer_sweep.py --layers 4,8,12,16,20,24 --tokens 500k

Writes runs/sweep/<layer>/ (checkpoints) and prints a markdown table (docs/LAYER_SWEEP.md
holds the one we ran).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

import torch

from sae import TopKSAE
from sae.train.trainer import TrainConfig, Trainer
from steer.cli.options import parse_count
from steer.evals.evaluate import EvalConfig, evaluate_saes
from steer.lm.activations import ActivationStream
from steer.lm.data import TokenContexts
from steer.lm.models import load_model
from steer.steering import Intervention
from steer.steering.generate import GenerationSettings, generate_text

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "wikipedia-en"
TRAIN = str(CORPUS / "wiki-0[0-6].jsonl.xz")
HELDOUT = str(CORPUS / "wiki-07.jsonl.xz")

# concept -> (a sentence about it, the words a steered answer should use)
CONCEPTS = {
    "Paris": (
        "Paris is the capital of France, home of the Eiffel Tower and the Louvre.",
        r"paris|france|french|eiffel",
    ),
    "dogs": (
        "My dog barks at the mailman; dogs and puppies are loyal pets.",
        r"\bdogs?\b|pupp|canine",
    ),
    "music": (
        "The orchestra played music: a symphony with melody, rhythm and harmony.",
        r"music|song|melod|symphon|orchestra",
    ),
    "Golden Gate": (
        "The Golden Gate Bridge spans the strait in San Francisco.",
        r"golden gate|bridge|san francisco",
    ),
    "space": (
        "The astronauts orbited the planet; NASA launched the rocket into space.",
        r"\bspace|planet|orbit|nasa|astronaut|rocket",
    ),
    "football": (
        "The football team scored a goal in the final minute of the soccer match.",
        r"football|soccer|\bgoal|striker",
    ),
    "the ocean": (
        "Waves crashed on the beach as the ocean tide rolled in from the sea.",
        r"ocean|\bsea\b|waves?\b|beach|tide",
    ),
    "war": (
        "Soldiers fought the battle as the army advanced during the war.",
        r"\bwar\b|soldier|battle|army|military",
    ),
}
PROMPTS = [
    "Tell me about your weekend.",
    "What should I cook for dinner tonight?",
    "Write one sentence about the weather.",
    "Describe your ideal job.",
    "What did you do yesterday?",
]


def latent_stats(lm, sae, layer: int, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Max activation and firing frequency of every latent on held-out text."""
    contexts = TokenContexts(
        HELDOUT, lm.tokenizer, ctx_len=128, shuffle_buffer=0, max_contexts=tokens // 127 + 1
    )
    max_acts = torch.zeros(sae.n_latents)
    fired = torch.zeros(sae.n_latents)
    n = 0
    for batch in ActivationStream(lm, layer, contexts, batch_tokens=2048):
        with torch.inference_mode():
            acts, idx = sae.encode(batch)
        max_acts.scatter_reduce_(0, idx.flatten(), acts.flatten(), "amax")
        fired += torch.bincount(idx[acts > 0], minlength=sae.n_latents)
        n += batch.shape[0]
    return max_acts, fired / max(n, 1)


def concept_latent(lm, sae, layer, text, max_acts, freq) -> int:
    """The latent most specific to `text`: relative activation x log(1 + 1/frequency)."""
    ids = lm.tokenizer(text, return_tensors="pt").input_ids
    with torch.inference_mode():
        resid = lm.residual(ids, layer)[0, 1:]  # (T-1, d)
        dense = sae.encode_dense(resid).amax(0)  # (n,)
    rel = dense / max_acts.clamp_min(1e-6)
    key = rel * torch.log1p(1 / freq.clamp_min(1e-5))
    return int(key.argmax())


def steering_hits(lm, sae, layer, max_acts, freq, strength: float) -> tuple[int, int, list]:
    settings = GenerationSettings(max_new_tokens=32, temperature=0.0)
    hits = total = 0
    examples = []
    for concept, (text, pattern) in CONCEPTS.items():
        latent = concept_latent(lm, sae, layer, text, max_acts, freq)
        for prompt in PROMPTS:
            base, steered = generate_text(
                lm,
                sae,
                prompt,
                [[], [Intervention(latent, strength, "clamp")]],
                settings,
                max_acts=max_acts,
            )
            hit = bool(re.search(pattern, steered["text"], re.I)) and not re.search(
                pattern, base["text"], re.I
            )
            hits += hit
            total += 1
            examples.append(
                {
                    "concept": concept,
                    "latent": latent,
                    "strength": strength,
                    "prompt": prompt,
                    "baseline": base["text"],
                    "steered": steered["text"],
                    "hit": hit,
                }
            )
    return hits, total, examples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", default="4,8,12,16,20,24")
    parser.add_argument("--width", type=int, default=2304)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--tokens", default="500k")
    parser.add_argument("--optimizer", default="signum", choices=["adam", "signum"])
    parser.add_argument(
        "--strengths", default="1.5,2.5,4", help="clamp values, in multiples of the max activation"
    )
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--out", default="runs/sweep")
    parser.add_argument(
        "--no-steer", action="store_true", help="skip the steering test (slow on CPU)"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="load the SAE a previous sweep left in --out"
    )
    args = parser.parse_args()

    strengths = [float(x) for x in args.strengths.split(",")]
    lm = load_model()
    rows = []
    for layer in (int(x) for x in args.layers.split(",")):
        start = time.time()
        out = Path(args.out) / f"resid_post.{layer}"
        contexts = TokenContexts(TRAIN, lm.tokenizer, ctx_len=128, seed=0)
        stream = ActivationStream(lm, layer, contexts, batch_tokens=4096)
        total = parse_count(args.tokens)
        cfg = TrainConfig(
            widths=[args.width],
            ks=[args.k],
            total_tokens=total,
            optimizer=args.optimizer,
            warmup_steps=min(100, max(1, total // 4096 // 20)),  # as `steer train` does
            save_every_steps=10**9,
        )
        trainer = Trainer(
            cfg, lm.d_model, out, hookpoint=f"resid_post.{layer}", model_name="smollm2-135m"
        )
        kept = out / f"{args.width}-k{args.k}"
        if args.reuse and (kept / "cfg.json").is_file():
            sae = TopKSAE.load(kept).eval()
            tokens = sae.cfg.extra["tokens"]
        else:
            tokens = trainer.fit(stream)["tokens"]
            sae = next(iter(trainer.saes.values())).eval()
        heldout = TokenContexts(HELDOUT, lm.tokenizer, ctx_len=128, shuffle_buffer=0)
        metrics = evaluate_saes(
            lm, {"sae": sae}, layer, heldout, EvalConfig(tokens=args.eval_tokens)
        )["sae"]
        hits, examples = {}, []
        if not args.no_steer:
            max_acts, freq = latent_stats(lm, sae, layer, args.eval_tokens)
            for strength in strengths:
                n_hits, n, found = steering_hits(lm, sae, layer, max_acts, freq, strength)
                hits[strength] = f"{n_hits}/{n}"
                examples += found
        row = {
            "layer": layer,
            "tokens": tokens,
            "fvu": metrics["fvu"],
            "loss_recovered": metrics["loss_recovered"],
            "delta_loss": metrics["delta_loss"],
            "dead_frac": metrics["dead_frac"],
            "steering_hits": hits,
            "minutes": (time.time() - start) / 60,
        }
        rows.append(row)
        (out / "sweep.json").write_text(json.dumps({**row, "examples": examples}, indent=2))
        print(json.dumps(row), flush=True)

    steer_cols = [f"hits @{s:g}x" for s in strengths] if not args.no_steer else []
    print(
        "\n| layer | tokens | FVU | loss recovered | Δ loss | dead | "
        + " | ".join(steer_cols)
        + " |"
    )
    print("|---" * (6 + len(steer_cols)) + "|")
    for r in rows:
        hits = " | ".join(r["steering_hits"].get(s, "-") for s in strengths) if steer_cols else ""
        print(
            f"| resid_post.{r['layer']} | {r['tokens']:,} | {r['fvu']:.3f} | {r['loss_recovered']:.3f} | "
            f"{r['delta_loss']:.3f} | {100 * r['dead_frac']:.1f}% | {hits} |"
        )
    assert all(math.isfinite(r["fvu"]) for r in rows)


if __name__ == "__main__":
    main()
