"""How good the features' explanations and the search are, on held-out text, in one run.

    python benchmarks/explanations.py [--sae DIR] [--corpus FILE] [--tokens 40k]
                                      [--sample 16] [--explainer smollm2-135m]

Prints:
  - N2G: mean precision and recall on held-out text over all live latents (fitted on half
    of --tokens of held-out text plus the catalog's top contexts, scored on the other
    half; a latent fires at half its catalog max; a latent without a matching pattern
    counts as precision 0), the share of latents with a pattern, and the same means for
    the --sample latents.
  - LM detection for the --sample latents: the explainer's explanation of each, scored by
    detection (balanced accuracy of the scorer's yes/no on held-out windows where the
    latent fires vs. where it is silent; 0.5 = chance). Two controls on the same windows:
    the latent's N2G pattern text as its explanation, and each explanation scored on
    another latent's windows (should sit near 0.5).
  - Search: for each of CONCEPTS, whether a feature among the top 5 of the BM25 search
    (`steer features --search WORD`) is about it — the word (as a word start, any case)
    is in at least half of the feature's top-context windows — and the same for the old
    substring search, as a baseline.
The default SAE is the shipped 9216-latent one and the held-out text Wikipedia shard 07,
which neither its training nor its catalog read.
"""

from __future__ import annotations

import argparse
import re
import time

import torch

from steer.features.catalog import FeatureCatalog
from steer.features.explain.from_catalog import catalog_examples
from steer.features.explain.heldout import fit_and_score, sae_codes
from steer.features.explain.lm import LMExplainer, ScoringWindows, balanced_accuracy, mark
from steer.features.explain.n2g import FIRE_FRACTION
from steer.features.explain.store import Explanations
from steer.lm.models import load_model
from steer.steering import open_sae

SAE = "checkpoints/smollm2-135m/resid_post.12/9216-k32"
CORPUS = "../shared/corpus/wikipedia-en/wiki-07.jsonl.xz"
CONCEPTS = [
    "music", "football", "river", "war", "church", "computer", "disease", "election",
    "film", "mountain", "ocean", "king", "money", "school", "railway", "dog", "chemistry",
    "mathematics", "wine", "university", "island", "painting", "airport", "police",
]  # fmt: skip


def about(entry, word: str) -> bool:
    """Is the word (a word start) in at least half of the feature's top-context windows?"""
    pattern = re.compile(rf"\b{re.escape(word)}", re.IGNORECASE)
    hits = sum(bool(pattern.search(c.text)) for c in entry.contexts)
    return bool(entry.contexts) and hits >= len(entry.contexts) / 2


def search_benchmark(catalog: FeatureCatalog) -> None:
    for name, search in (("BM25", catalog.search), ("substring", catalog.substring_search)):
        found, start = [], time.perf_counter()
        for word in CONCEPTS:
            top = search(word, limit=5)
            found.append(any(about(e, word) for e in top))
        ms = 1000 * (time.perf_counter() - start) / len(CONCEPTS)
        missed = [w for w, ok in zip(CONCEPTS, found, strict=True) if not ok]
        print(
            f"search ({name}): {sum(found)}/{len(CONCEPTS)} concept words have a feature about "
            f"them in the top 5 ({ms:.0f} ms a query); missed: {', '.join(missed) or 'none'}"
        )


def lm_benchmark(catalog, explanations, latents, windows, explainer, n_score: int) -> None:
    own, n2g_ctrl, shuffled = [], [], []
    texts = {}
    for latent in latents:
        entry = catalog.entry(latent)
        shown = [
            mark(c.tokens, c.acts, FIRE_FRACTION * entry.max_act).replace("\n", " ")
            for c in entry.contexts[:6]
        ]
        texts[latent] = explainer.explain(shown)
    order = list(latents)
    for j, latent in enumerate(order):
        yes, no = windows.windows(latent, n_score)
        if not yes or not texts[latent]:
            continue
        fires = torch.tensor([True] * len(yes) + [False] * len(no))
        own.append(balanced_accuracy(explainer.says_yes(texts[latent], yes + no), fires))
        pattern = explanations.n2g_label(latent)
        if pattern:
            n2g_ctrl.append(balanced_accuracy(explainer.says_yes(pattern, yes + no), fires))
        other = texts[order[(j + 1) % len(order)]] or "anything"
        shuffled.append(balanced_accuracy(explainer.says_yes(other, yes + no), fires))
        print(f"  #{latent:<5} detection {own[-1]:.2f}  {texts[latent]!r}")

    def mean(xs):
        return f"{sum(xs) / len(xs):.3f} (n={len(xs)})" if xs else "–"

    print(f"LM detection ({explainer.name} explains and scores): {mean(own)}")
    print(f"  control, the N2G pattern as the explanation: {mean(n2g_ctrl)}")
    print(f"  control, another latent's explanation: {mean(shuffled)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sae", default=SAE)
    parser.add_argument("--corpus", default=CORPUS)
    parser.add_argument("--tokens", type=int, default=40_000)
    parser.add_argument("--sample", type=int, default=16)
    parser.add_argument("--score-windows", type=int, default=5, help="of each kind, per latent")
    parser.add_argument("--explainer", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    lm, sae = open_sae(args.sae)
    catalog = FeatureCatalog.load(args.sae)
    search_benchmark(catalog)

    start = time.perf_counter()
    codes = sae_codes(lm, sae, args.corpus, args.tokens)
    examples = catalog_examples(catalog, lm.tokenizer)
    patterns, scores = fit_and_score(codes, catalog.max_acts, examples=examples)
    live = catalog.frequency > 0
    p, r = scores.mean(live)
    fire = live & (scores.fires > 0)
    covered = float(((patterns.counts() > 0) & fire).sum() / fire.sum())
    print(
        f"N2G on {args.tokens:,} held-out tokens ({time.perf_counter() - start:.0f} s): mean "
        f"precision {p:.3f}, recall {r:.3f} over {int(fire.sum())} latents firing there; "
        f"{covered:.1%} of them have a pattern"
    )
    g = torch.Generator().manual_seed(0)
    candidates = fire.nonzero().flatten()
    sample = candidates[torch.randperm(candidates.numel(), generator=g)[: args.sample]].tolist()
    keep = torch.zeros_like(live)
    keep[sample] = True
    sp, sr = scores.mean(keep)
    print(f"N2G on the {len(sample)} sampled latents: mean precision {sp:.3f}, recall {sr:.3f}")

    explanations = Explanations()
    explanations.set_n2g(patterns, scores, lm.tokenizer)
    windows = ScoringWindows(codes, FIRE_FRACTION * catalog.max_acts, lm.tokenizer)
    explainer = LMExplainer(load_model(args.explainer), args.explainer)
    start = time.perf_counter()
    lm_benchmark(catalog, explanations, sample, windows, explainer, args.score_windows)
    print(f"  ({time.perf_counter() - start:.0f} s for {len(sample)} latents)")


if __name__ == "__main__":
    main()
