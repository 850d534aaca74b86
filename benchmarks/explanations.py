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
    latent fires vs. where it is silent; 0.5 = chance), on windows of the N2G score split
    (text neither the explainer nor the N2G fit read). Controls, through the same scorer
    on the same windows, which tell whether the explainer or the scorer is the bottleneck:
      N2G      the latent's N2G patterns rendered as text (`the word "Paris" right after
               "in"`);
      oracle   `the word "X", "Y" or "Z"`: the three tokens the latent fires on most often
               in the scored text itself (it peeks at the answers: for a token-level latent
               a near-perfect explanation, so it bounds what the scorer can do with one);
      another  another sampled latent's LM explanation (should sit near 0.5).
    Each: mean over latents with a 95% bootstrap interval (over latents), and the rate at
    which the scorer says yes (a scorer that always says yes or no is at 0.5 whatever the
    explanation).
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
from steer.features.explain.lm import LMExplainer, ScoringWindows, _plain, balanced_accuracy, mark
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


def n2g_as_text(label: str | None) -> str | None:
    """An N2G label (`" Paris" after " in"/" to"`, `" Paris"/" Rome"`, `" end" after " by _"`:
    one token between) as a phrase: `the word "Paris" right after "in" or "to"`."""
    if not label:
        return None
    head, _, tail = label.partition(" after ")
    quoted = [w.strip() for w in re.findall(r'"([^"]*)"', tail)]
    gap = any(w.endswith("_") for w in quoted)
    before = " or ".join(f'"{w.rstrip("_ ").strip()}"' for w in quoted if w.rstrip("_ "))
    words = " or ".join(f'"{w.strip()}"' for w in re.findall(r'"([^"]*)"', head) if w.strip())
    if not words:
        return None
    text = f"the word {words}"
    if before:
        text += f" {'two words after' if gap else 'right after'} {before}"
    elif "⟨start⟩" in tail:
        text += " at the start of a text"
    return text


def oracle_text(windows: ScoringWindows, latent: int, tokenizer, top: int = 3) -> str | None:
    """`the word "X", "Y" or "Z"`: the tokens the latent fires on most in the scored text."""
    lo, hi = torch.searchsorted(windows.lat, torch.tensor([latent, latent + 1])).tolist()
    tokens = windows.codes.tokens.flatten()[windows.pos[lo:hi]]
    if tokens.numel() == 0:
        return None
    ids, counts = tokens.unique(return_counts=True)
    best = ids[counts.argsort(descending=True)[:top]].tolist()
    words = [w for w in (tokenizer.decode([t]).strip() for t in best) if w]
    return "the word " + " or ".join(f'"{w}"' for w in words) if words else None


def interval(xs: list[float], draws: int = 10_000) -> str:
    """mean [95% bootstrap interval over the items] (n)."""
    if not xs:
        return "–"
    v = torch.tensor(xs, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    means = v[torch.randint(len(v), (draws, len(v)), generator=g)].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return f"{v.mean():.3f} [{lo:.3f}, {hi:.3f}] (n={len(v)})"


def lm_benchmark(catalog, explanations, latents, windows, explainer, n_score: int) -> None:
    texts = {}
    tokenizer = explainer.lm.tokenizer
    for latent in latents:
        entry = catalog.entry(latent)
        shown = [  # as steer explain shows them (explain_latents)
            _plain(mark(c.tokens, c.acts, FIRE_FRACTION * entry.max_act), tokenizer)
            for c in entry.contexts[:6]
        ]
        texts[latent] = explainer.explain(shown)
    kinds = ("LM", "N2G", "oracle", "another")
    scores: dict[str, list[float]] = {k: [] for k in kinds}
    yes_rate: dict[str, list[float]] = {k: [] for k in kinds}
    order = list(latents)
    for j, latent in enumerate(order):
        yes, no = windows.windows(latent, n_score)
        if not yes:
            continue
        fires = torch.tensor([True] * len(yes) + [False] * len(no))
        given = {
            "LM": texts[latent],
            "N2G": n2g_as_text(explanations.n2g_label(latent)),
            "oracle": oracle_text(windows, latent, tokenizer),
            "another": texts[order[(j + 1) % len(order)]] or "anything",
        }
        line = []
        for kind, text in given.items():
            if not text:
                continue
            said = explainer.says_yes(text, yes + no)
            scores[kind].append(balanced_accuracy(said, fires))
            yes_rate[kind].append(float(said.float().mean()))
            line.append(f"{kind} {scores[kind][-1]:.2f}")
        print(f"  #{latent:<5} {len(yes) + len(no)} windows: {', '.join(line)}")
        for kind in ("LM", "N2G", "oracle"):
            print(f"         {kind:<6} {given[kind]!r}")

    print(f"LM detection ({explainer.name} explains and scores), mean [95% CI over latents]:")
    for kind, label in zip(kinds, ("its explanations", "control, N2G patterns as text",
                                   "control, oracle (most frequent firing tokens)",
                                   "control, another latent's explanation"), strict=True):  # fmt: skip
        rate = sum(yes_rate[kind]) / len(yes_rate[kind]) if yes_rate[kind] else float("nan")
        print(f"  {label:<46} {interval(scores[kind])}; says yes {rate:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sae", default=SAE)
    parser.add_argument("--corpus", default=CORPUS)
    parser.add_argument("--tokens", type=int, default=40_000)
    parser.add_argument("--sample", type=int, default=24)
    parser.add_argument("--score-windows", type=int, default=8, help="of each kind, per latent")
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
    candidates = fire.nonzero().flatten()  # latents that fire in the score split
    sample = candidates[torch.randperm(candidates.numel(), generator=g)[: args.sample]].tolist()
    keep = torch.zeros_like(live)
    keep[sample] = True
    sp, sr = scores.mean(keep)
    print(f"N2G on the {len(sample)} sampled latents: mean precision {sp:.3f}, recall {sr:.3f}")

    explanations = Explanations()
    explanations.set_n2g(patterns, scores, lm.tokenizer)
    _fit_split, score_split = codes.split()  # windows from text the N2G fit did not read
    windows = ScoringWindows(score_split, FIRE_FRACTION * catalog.max_acts, lm.tokenizer)
    explainer = LMExplainer(load_model(args.explainer), args.explainer)
    start = time.perf_counter()
    lm_benchmark(catalog, explanations, sample, windows, explainer, args.score_windows)
    print(f"  ({time.perf_counter() - start:.0f} s for {len(sample)} latents)")


if __name__ == "__main__":
    main()
