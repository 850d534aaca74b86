"""Can one SAE latent steer toward a concept? A brute-force ceiling (issue 11).

run: `python benchmarks/single_latents.py [--sae DIR] [--only dog,ocean] [--threads 1]`

Why `steer features --toward` recommends a *set* of latents: for each concept, the best
single-latent candidates any cheap signal finds are each added alone at four strengths
and judged with the steering benchmark's meters (benchmarks/steering_success.py: 40
greedy tokens on its three neutral prompts; success = the concept word in >= 2 of 3
replies whose baseline lacks it, coherent). Candidates (up to 18 per concept):

  - the 12 best by measured rise: each latent added at every position of the unsteered
    replies to --toward's calibration prompts (teacher-forced), the rise of log P(a concept
    token somewhere in the reply) minus the mean rise for unrelated words
    (steer/steering/toward.py: measure_rise), among
  - the 24 best by first-order effect: the gradient of that specific log-mass with respect
    to a vector added at the SAE's layer, dotted with each latent's unit direction, plus
    the 4 latents firing most on the word;
  - and the 6 best by first-order effect themselves.

Strengths: the added vector's norm at 0.4, 0.65, 1.0 and 1.4 times the median residual
norm at the layer (the range where single latents go from no effect to loops). Prints,
per concept, how many candidates steer and which; at the end, the concepts for which at
least one does.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from steering_success import CONCEPTS, N_TOKENS, PROMPTS  # noqa: E402

RUNGS = (0.4, 0.65, 1.0, 1.4)


def residual_norm(lm, sae, prompts) -> float:
    from steer.steering.intervention import sae_layer

    layer = sae_layer(lm, sae)
    with torch.inference_mode():
        norms = [lm.residual(p[None], layer)[0, 1:].norm(dim=-1) for p in prompts]
    return float(torch.cat(norms).median())


def gradient_scores(lm, sae, prompts, replies, targets, refs) -> torch.Tensor:
    """(n_latents,): d(specific concept log-mass)/d(vector added at the layer) . unit dir."""
    from steer.lm.models import block_output
    from steer.steering.intervention import sae_layer
    from steer.steering.toward import _log_mass

    delta = torch.zeros(lm.d_model, requires_grad=True)

    def hook(_m, _a, output):
        x = block_output(output) + delta
        return (x, *output[1:]) if isinstance(output, tuple) else x

    handle = lm.block(sae_layer(lm, sae)).register_forward_hook(hook)
    try:
        with torch.enable_grad():
            for prompt, reply in zip(prompts, replies, strict=True):
                ids = torch.cat([prompt, torch.tensor(reply[:-1])])[None]
                logits = lm.model(input_ids=ids).logits[:, prompt.numel() - 1 :]
                mass = _log_mass(F.log_softmax(logits.float(), dim=-1), [targets, *refs])
                (mass[0, 0] - mass[0, 1:].mean()).backward()
    finally:
        handle.remove()
    dirs = sae.decoder_directions(torch.arange(sae.n_latents)).detach()
    return (dirs / dirs.norm(dim=-1, keepdim=True)) @ delta.grad  # (n,)


def candidates(lm, sae, word, prompts, replies, targets, refs, unit_raw):
    """Up to 18 latents: the 12 best by measured rise among the gradient's 24 and the 4
    firing most on the word, and the gradient's 6 best."""
    from steer.steering.readouts import latent_codes, max_over_tokens
    from steer.steering.toward import measure_rise

    grad = gradient_scores(lm, sae, prompts, replies, targets, refs)
    fire = max_over_tokens(sae, latent_codes(lm, sae, lm.tokenizer(word)["input_ids"]))
    pool = grad.topk(24).indices.tolist() + fire.topk(4).indices.tolist()
    pool = list(dict.fromkeys(pool))
    norms = sae.decoder_directions(torch.tensor(pool)).detach().norm(dim=-1)
    rise = measure_rise(lm, sae, pool, unit_raw * 0.65 / norms, prompts, replies, targets, refs)
    by_rise = [pool[j] for j in rise.argsort(descending=True)[:12].tolist()]
    return list(dict.fromkeys(by_rise + grad.topk(6).indices.tolist()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sae", default="checkpoints/smollm2-135m/resid_post.12/9216-k32")
    parser.add_argument("--only", default="", help="comma-separated concepts")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from steer.steering import Intervention, open_sae
    from steer.steering.generate import build_prompt_ids
    from steer.steering.success import coherence, greedy_replies, succeeded
    from steer.steering.toward import (
        NEUTRAL_PROMPTS,
        concept_tokens,
        generate_grid,
        reference_tokens,
    )

    lm, sae = open_sae(args.sae)
    words = [w.strip() for w in args.only.split(",") if w.strip()] or list(CONCEPTS)
    eval_ids = [build_prompt_ids(lm, p) for p in PROMPTS]
    base = [greedy_replies(lm, sae, p, [[]], N_TOKENS)[0] for p in eval_ids]
    cal_ids = [build_prompt_ids(lm, p) for p in NEUTRAL_PROMPTS]
    cal_replies = generate_grid(lm, sae, [[]], cal_ids, 12)[0]
    unit_raw = residual_norm(lm, sae, cal_ids)
    steerable = []
    for word in words:
        t0 = time.perf_counter()
        targets = concept_tokens(lm.tokenizer, word)
        refs = reference_tokens(lm.tokenizer, [word], targets)
        cands = candidates(lm, sae, word, cal_ids, cal_replies, targets, refs, unit_raw)
        norms = sae.decoder_directions(torch.tensor(cands)).detach().norm(dim=-1)
        rows = [
            [Intervention(c, unit_raw * a / float(n), "add")]
            for c, n in zip(cands, norms, strict=True)
            for a in RUNGS
        ]
        texts = [[] for _ in rows]
        oks = [[] for _ in rows]
        for p, ids in enumerate(eval_ids):
            for r, reply in enumerate(greedy_replies(lm, sae, ids, rows, N_TOKENS)):
                texts[r].append(reply.text)
                oks[r].append(coherence(reply, base[p]).ok)
        bt = [b.text for b in base]
        wins = [
            c
            for j, c in enumerate(cands)
            if any(
                succeeded(bt, texts[j * len(RUNGS) + a], oks[j * len(RUNGS) + a], [word])
                for a in range(len(RUNGS))
            )
        ]
        steerable += [word] if wins else []
        print(
            f"{word:10s} {len(wins)}/{len(cands)} single latents steer {wins}  "
            f"{time.perf_counter() - t0:.0f}s",
            flush=True,
        )
    print(f"\nconcepts some single latent steers: {len(steerable)}/{len(words)} {steerable}")


if __name__ == "__main__":
    main()
