"""Steering costs on the embedded model, measured in one run.

    python benchmarks/steering.py [--sae DIR] [--new-tokens 32] [--repeats 5]

Prints:
  - a side-by-side pair (baseline + clamped row, one batch) vs one unsteered generation
    of the same length (target <= 1.2x), for positions=all and positions=generated;
  - the clamp hook's overhead on a forward pass over a prompt (target <= 5%), and on one
    cached decoding step, with the bf16 threshold encode (default) and the exact fp32 one.
Without --sae a random 18,432-latent (32x) k=32 SAE at resid_post.16 stands in: the cost
does not depend on the weights. Timings are the minimum over repeats, A and B interleaved
(the machine is shared; the minimum is the least disturbed run).
"""

from __future__ import annotations

import argparse
import time

import torch

from sae import SAEConfig, TopKSAE, load_sae
from steer.lm.models import load_model
from steer.steering import Intervention, SteeringHook
from steer.steering.generate import GenerationSettings, build_prompt_ids, generate_rows

PROMPT = "Write a short paragraph about the Golden Gate Bridge and the history of San Francisco."


def best_of(fns: dict, repeats: int) -> dict:
    """Minimum wall time of each function, calls interleaved."""
    times = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn()  # warm up
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name] = min(times[name], time.perf_counter() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument(
        "--sae",
        default=None,
        help="SAE checkpoint folder (default: random 18k-latent SAE at resid_post.16)",
    )
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--forward-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    lm = load_model(args.model)
    if args.sae:
        sae = load_sae(args.sae)
    else:
        torch.manual_seed(0)
        sae = TopKSAE(
            SAEConfig(
                lm.d_model, 32 * lm.d_model, 32, hookpoint="resid_post.16", model_name=args.model
            )
        )
    print(
        f"model {lm.name} ({lm.dtype}), SAE {sae.n_latents} latents k={sae.k} at {sae.cfg.hookpoint}, "
        f"torch threads {torch.get_num_threads()}"
    )

    ids = build_prompt_ids(lm, PROMPT)
    clamp = [Intervention(123, 40.0, "clamp"), Intervention(4567, -10.0, "clamp")]

    def gen(rows, positions="all"):
        settings = GenerationSettings(
            max_new_tokens=args.new_tokens, positions=positions, stop_on_eos=False
        )
        for _ in generate_rows(lm, sae, ids, rows, settings):
            pass

    t = best_of(
        {
            "single": lambda: gen([[]]),
            "pair_all": lambda: gen([[], clamp], "all"),
            "pair_generated": lambda: gen([[], clamp], "generated"),
        },
        args.repeats,
    )
    print(f"\ngeneration, prompt {ids.numel()} tokens + {args.new_tokens} new tokens:")
    print(
        f"  one unsteered generation        {t['single']:.3f} s ({args.new_tokens / t['single']:.1f} tok/s)"
    )
    for name in ("pair_all", "pair_generated"):
        ratio = t[name] / t["single"]
        print(
            f"  side-by-side pair, positions={name[5:]:<9} {t[name]:.3f} s  = {ratio:.2f}x  "
            f"(target <= 1.2x: {'ok' if ratio <= 1.2 else 'MISSED'})"
        )

    text = " ".join([PROMPT] * 20)
    fwd_ids = torch.tensor(lm.tokenizer(text)["input_ids"][: args.forward_tokens])[None]
    hooks = {
        "bf16": SteeringHook(lm, sae, [clamp]),
        "exact": SteeringHook(lm, sae, [clamp], encode_dtype=None),
    }

    def forward(hook=None):
        with torch.inference_mode():
            if hook is None:
                return lm.model(fwd_ids, logits_to_keep=1)
            with hook.reset(0):
                return lm.model(fwd_ids, logits_to_keep=1)

    with torch.inference_mode():
        cache_ids = fwd_ids[:, :-1]

    def step(hook=None):
        with torch.inference_mode():
            out = lm.model(cache_ids, use_cache=True)
            cache = out.past_key_values
            start = time.perf_counter()
            for i in range(8):
                token = fwd_ids[:, -1:]
                if hook is None:
                    out = lm.model(token, past_key_values=cache, use_cache=True, logits_to_keep=1)
                else:
                    with hook.reset(cache_ids.shape[1] + i):
                        out = lm.model(
                            token, past_key_values=cache, use_cache=True, logits_to_keep=1
                        )
                cache.crop(-1)  # drop the token again: every step sees the same cache
            return (time.perf_counter() - start) / 8

    f = best_of(
        {"plain": forward, **{n: (lambda h=h: forward(h)) for n, h in hooks.items()}},
        args.repeats * 2,
    )
    print(f"\nforward pass over {fwd_ids.shape[1]} tokens, clamping 2 features at every position:")
    print(f"  no hook                         {f['plain'] * 1e3:.1f} ms")
    for name in hooks:
        over = f[name] / f["plain"] - 1
        target = f"  (target <= 5%: {'ok' if over <= 0.05 else 'MISSED'})" if name == "bf16" else ""
        print(
            f"  clamp hook, {name:<5} threshold     {f[name] * 1e3:.1f} ms  = {over:+.1%}{target}"
        )

    s = {"plain": min(step() for _ in range(args.repeats))}
    for name, h in hooks.items():
        s[name] = min(step(h) for _ in range(args.repeats))
    print("\none cached decoding step (1 token):")
    print(f"  no hook                         {s['plain'] * 1e3:.1f} ms")
    for name in hooks:
        print(
            f"  clamp hook, {name:<5} threshold     {s[name] * 1e3:.1f} ms  = {s[name] / s['plain'] - 1:+.1%}"
        )


if __name__ == "__main__":
    main()
