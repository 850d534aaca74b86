"""How often does a lever make the model talk about a concept? (issue 11)

run: `python benchmarks/steering_success.py [--sae DIR] [--concepts N] [--json out.json]`

For each concept (one word, e.g. "dog") and three neutral chat prompts, 40 greedy tokens:
success = the concept word (at a word start, any ending) appears in the reply to at least
2 of the 3 prompts whose unsteered reply lacks it, and those replies pass the coherence
bound (steer/steering/coherence.py: the unsteered model's cross-entropy on the reply at
most MARGIN_NATS above its cross-entropy on the baseline reply). Columns, side by side:

  old picker  the top 2 features `steer features "SENTENCE"` lists for a sentence about
              the concept, each clamped at 2x, 4x and 8x its max activation: success when
              any of those 6 settings succeeds (the user's tries in issue 11)
  toward@1    the first lever of `steer features --toward WORD`, at its recommended mode
              and strength (one setting)
  toward@3    any of its first three levers, each at its recommendation
  prompting   no steering: the prompt prefixed with "Talk about WORD." (AxBench's baseline)

and the seconds `--toward` took per concept (model already loaded).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

CONCEPTS = {
    # word: a sentence describing it (for the old picker)
    "dog": "My dog loves to fetch the ball in the park.",
    "cat": "The cat curled up and purred on the sofa.",
    "horse": "She rode her horse across the field.",
    "bird": "A small bird sang in the tree outside the window.",
    "ocean": "The waves of the ocean crashed on the shore.",
    "mountain": "We climbed the mountain to see the snowy peak.",
    "forest": "The forest was full of tall pine trees.",
    "rain": "Heavy rain fell all afternoon and soaked the streets.",
    "snow": "Fresh snow covered the ground this morning.",
    "coffee": "I drink a cup of hot coffee every morning.",
    "pizza": "We ordered a large pizza with cheese and pepperoni.",
    "chocolate": "She ate a bar of dark chocolate after dinner.",
    "football": "The football team scored a goal in the last minute.",
    "music": "The band played loud music at the concert.",
    "computer": "He turned on his computer and opened the program.",
    "robot": "The robot moved its metal arm to pick up the box.",
    "space": "The astronauts travelled into outer space on a rocket.",
    "moon": "The full moon shone brightly in the night sky.",
    "city": "The city was busy with traffic and tall buildings.",
    "school": "The children went to school and sat in their classroom.",
    "doctor": "The doctor examined the patient at the hospital.",
    "money": "He saved his money in a bank account.",
    "war": "The war lasted for years and many soldiers died.",
    "car": "She drove her car down the highway.",
}
PROMPTS = (
    "Tell me about your weekend.",
    "What is a good way to start the morning?",
    "Give me some advice for a new job.",
)
N_TOKENS = 40
OLD_STRENGTHS = (2.0, 4.0, 8.0)


def succeeded(base: list[str], steered: list[str], coherent: list[bool], word: str) -> bool:
    from steer.steering.toward import names_concept

    wins = sum(
        names_concept(s, [word]) and ok and not names_concept(b, [word])
        for b, s, ok in zip(base, steered, coherent, strict=True)
    )
    return wins >= 2


def run_rows(lm, sae, max_acts, prompt_ids, rows):
    """Greedy replies of every row (rows[0] = baseline) and their coherence."""
    from steer.steering.coherence import continuation_ce
    from steer.steering.generate import GenerationSettings, generate_rows

    settings = GenerationSettings(max_new_tokens=N_TOKENS, stop_on_eos=True)
    ids: list[list[int]] = [[] for _ in rows]
    for events in generate_rows(lm, sae, prompt_ids, rows, settings, max_acts=max_acts):
        for e in events:
            ids[e.row].append(e.token_id)
    ce = continuation_ce(lm, prompt_ids, ids)
    texts = [lm.tokenizer.decode(i, skip_special_tokens=True) for i in ids]
    return texts, ce


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sae", default="checkpoints/smollm2-135m/resid_post.12/9216-k32")
    parser.add_argument("--concepts", type=int, default=len(CONCEPTS))
    parser.add_argument("--only", default="", help="comma-separated concepts to run")
    parser.add_argument("--json", default="", help="write per-concept results here")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from steer.features.catalog import FeatureCatalog, latents_for_text
    from steer.steering import Intervention, open_sae
    from steer.steering.coherence import MARGIN_NATS
    from steer.steering.generate import build_prompt_ids
    from steer.steering.toward import toward

    lm, sae = open_sae(args.sae)
    catalog = FeatureCatalog.load(args.sae)
    max_acts = catalog.max_acts
    words = [w.strip() for w in args.only.split(",") if w.strip()] or list(CONCEPTS)
    words = words[: args.concepts]
    prompt_ids = [build_prompt_ids(lm, p) for p in PROMPTS]
    base = [run_rows(lm, sae, max_acts, p, [[]]) for p in prompt_ids]
    base_text = [t[0] for t, _ in base]
    base_ce = [c[0] for _, c in base]

    cols = ("old", "toward@1", "toward@3", "prompting")
    wins = dict.fromkeys(cols, 0)
    seconds, results = [], []
    for word in words:
        t0 = time.perf_counter()
        levers = toward(lm, sae, word, max_acts=max_acts, top=3)
        seconds.append(time.perf_counter() - t0)
        old = [lat for lat, _ in latents_for_text(lm, sae, CONCEPTS[word], n=2, catalog=catalog)]
        settings = [[Intervention(lat, s, "clamp")] for lat in old for s in OLD_STRENGTHS]
        settings += [[Intervention(lv.feature, lv.strength, lv.mode)] for lv in levers]
        replies = [[] for _ in settings]
        coherent = [[] for _ in settings]
        for p, ids in enumerate(prompt_ids):
            texts, ce = run_rows(lm, sae, max_acts, ids, settings)
            for r in range(len(settings)):
                replies[r].append(texts[r])
                coherent[r].append(ce[r] <= base_ce[p] + MARGIN_NATS)
        ok = [succeeded(base_text, replies[r], coherent[r], word) for r in range(len(settings))]
        n_old = len(old) * len(OLD_STRENGTHS)
        asked = [build_prompt_ids(lm, f"Talk about {word}. {p}") for p in PROMPTS]
        prompted = [run_rows(lm, None, None, ids, [[]]) for ids in asked]
        p_text = [t[0] for t, _ in prompted]
        p_ok = [c[0] <= base_ce[p] + MARGIN_NATS for p, (_, c) in enumerate(prompted)]
        row = {
            "concept": word,
            "old": any(ok[:n_old]),
            "toward@1": bool(ok[n_old]) if len(ok) > n_old else False,
            "toward@3": any(ok[n_old:]),
            "prompting": succeeded(base_text, p_text, p_ok, word),
            "seconds": round(seconds[-1], 2),
            "levers": [(lv.feature, lv.mode, lv.strength, lv.score) for lv in levers],
            "toward_replies": replies[n_old] if len(ok) > n_old else [],
        }
        for c in cols:
            wins[c] += row[c]
        results.append(row)
        marks = " ".join(f"{c}={'Y' if row[c] else '.'}" for c in cols)
        print(f"{word:10s} {marks}  {row['seconds']:.1f}s  {row['levers'][:1]}", flush=True)
    n = len(results)
    print(f"\n{n} concepts x {len(PROMPTS)} prompts, {N_TOKENS} greedy tokens, SAE {args.sae}")
    for c in cols:
        print(f"  {c:10s} {wins[c]}/{n} = {wins[c] / max(n, 1):.0%}")
    print(
        f"  --toward seconds per concept: mean {sum(seconds) / max(n, 1):.1f}, max {max(seconds):.1f}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "wins": wins, "n": n}, f, indent=1)


if __name__ == "__main__":
    main()
