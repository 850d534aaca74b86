"""How often does a lever make the model talk about a concept? (issue 11)

run: `python benchmarks/steering_success.py [--sae DIR] [--concepts N] [--only a,b]
      [--json out.json] [--plot out.png]`

For each concept (one word, e.g. "dog") and three neutral chat prompts, 40 greedy tokens:
success = the concept word (at a word start, any ending) appears in the reply to at least
2 of the 3 prompts whose unsteered reply lacks it, and those replies pass the coherence
meter (steer/steering/coherence.py: the unsteered model's cross-entropy on the reply at
most MARGIN_NATS above its cross-entropy on the baseline reply, and at most half of its
token trigrams repeats, so "dog dog dog ..." fails; steer/steering/success.py holds these
meters, which `steer sweep` shares). Columns, side by side:

  old picker     the top 2 features `steer features "SENTENCE"` lists for a sentence about
                 the concept, each clamped at 2x, 4x and 8x its max activation: success
                 when any of those 6 settings succeeds (the user's tries in issue 11)
  toward         the set of features `steer features --toward WORD` recommends (at most
                 5), pulled together at their recommended modes and strengths (one setting)
  toward@1       the first of them alone, at its recommendation (one setting)
  vector         the contrastive vector `--toward` starts from (`steer vector`): positive
                 prompts are five templates about the word ("Tell me about dog.", ...),
                 negative prompts the same templates about neutral fillers ("Tell me
                 about something.", 25 prompts); added at strength 1, 2 and 4 (its units:
                 1 = the difference of means), any of the 3 settings
  prompting      no steering: the prompt prefixed with "Talk about WORD." (AxBench's baseline)

and the seconds `--toward` took per concept (model already loaded), wall clock and the
process's CPU time (with --threads 1, what a quiet machine's wall clock shows).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from steer.steering.success import EVAL_PROMPTS

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
PROMPTS = EVAL_PROMPTS  # three neutral chat prompts ("Tell me about your weekend.", ...)
N_TOKENS = 40
OLD_STRENGTHS = (2.0, 4.0, 8.0)
VECTOR_STRENGTHS = (1.0, 2.0, 4.0)
"""In the vector's units (strength 1 adds the difference of means), as the old picker's
ladder doubles; any of the three counts, like the old picker's settings."""
COLUMNS = ("old", "toward", "toward@1", "vector", "prompting")


def concept_settings(lm, sae, catalog, word, toward_args=None):
    """Every steered setting tried for one concept, and where each column's settings are."""
    from steer.features.catalog import latents_for_text
    from steer.steering import Intervention
    from steer.steering.toward import concept_vector, toward

    max_acts = catalog.max_acts
    t0, c0 = time.perf_counter(), time.process_time()
    levers = toward(lm, sae, word, max_acts=max_acts, **(toward_args or {}))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    sentence = CONCEPTS.get(word, f"This is all about {word}.")  # words not in the list too
    old = [lat for lat, _ in latents_for_text(lm, sae, sentence, n=2, catalog=catalog)]
    settings = [[Intervention(lat, s, "clamp")] for lat in old for s in OLD_STRENGTHS]
    spans = {"old": range(0, len(settings))}
    spans["toward"] = range(len(settings), len(settings) + 1)
    settings.append([Intervention(lv.feature, lv.strength, lv.mode) for lv in levers])
    spans["toward@1"] = range(len(settings), len(settings) + 1)
    settings.append([Intervention(levers[0].feature, levers[0].strength, levers[0].mode)])
    vec = concept_vector(lm, sae, word, name=f"concept_{word}")  # the one --toward splits
    spans["vector"] = range(len(settings), len(settings) + len(VECTOR_STRENGTHS))
    settings += [
        [Intervention(vec.name, s, "add", direction=vec.direction)] for s in VECTOR_STRENGTHS
    ]
    info = {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "levers": [(lv.feature, lv.mode, lv.strength, lv.score) for lv in levers],
        "vector_scale": round(vec.scale, 3),
    }
    return settings, spans, info


def keep_columns(settings: list, spans: dict, columns: tuple) -> tuple[list, dict]:
    """Only the settings of `columns` (a cheaper run, e.g. comparing depths)."""
    kept, out = [], {}
    for c in columns:
        if c in spans:
            out[c] = range(len(kept), len(kept) + len(spans[c]))
            kept += [settings[i] for i in spans[c]]
    return kept, out


def run_concept(lm, sae, catalog, word, prompt_ids, base, columns=COLUMNS, toward_args=None):
    """One concept: every column's success, and what the run saw."""
    from steer.steering.generate import build_prompt_ids
    from steer.steering.success import coherence, greedy_replies, succeeded

    settings, spans, info = concept_settings(lm, sae, catalog, word, toward_args)
    settings, spans = keep_columns(settings, spans, columns)
    replies = [[] for _ in settings]
    coherent = [[] for _ in settings]
    for p, ids in enumerate(prompt_ids):
        got = greedy_replies(lm, sae, ids, settings, N_TOKENS, catalog.max_acts)
        for r, reply in enumerate(got):
            replies[r].append(reply.text)
            coherent[r].append(coherence(reply, base[p]).ok)
    base_text = [b.text for b in base]
    ok = [succeeded(base_text, replies[r], coherent[r], [word]) for r in range(len(settings))]
    row = {"concept": word}
    row |= {c: any(ok[i] for i in spans[c]) for c in spans}
    if "prompting" in columns:
        asked = [build_prompt_ids(lm, f"Talk about {word}. {p}") for p in PROMPTS]
        prompted = [greedy_replies(lm, None, ids, [[]], N_TOKENS)[0] for ids in asked]
        p_ok = [coherence(r, b).ok for r, b in zip(prompted, base, strict=True)]
        row["prompting"] = succeeded(base_text, [r.text for r in prompted], p_ok, [word])
    row |= info
    for c in ("toward", "vector"):
        if c in spans:
            row[f"{c}_replies"] = [replies[i] for i in spans[c]]
    return row


def plot(wins: dict, n: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 2.8), dpi=80)
    names = list(wins)
    ax.barh(names[::-1], [wins[c] / n for c in names[::-1]], color="C0")
    for i, c in enumerate(names[::-1]):
        ax.text(wins[c] / n + 0.01, i, f"{wins[c]}/{n}", va="center", fontsize=8)
    ax.set(xlim=(0, 1.15), xlabel=f"concepts steered (of {n}; >= 2 of 3 prompts, coherent)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summary(results: list[dict], sae: str, plot_path: str = "") -> None:
    """Print the columns' totals (and draw the bar chart) from per-concept results."""
    n = len(results)
    wins = {c: sum(bool(r[c]) for r in results) for c in COLUMNS if results and c in results[0]}
    seconds = [r["seconds"] for r in results]
    print(f"\n{n} concepts x {len(PROMPTS)} prompts, {N_TOKENS} greedy tokens, SAE {sae}")
    for c in wins:
        print(f"  {c:14s} {wins[c]}/{n} = {wins[c] / max(n, 1):.0%}")
    print(
        f"  --toward seconds per concept: mean {sum(seconds) / max(n, 1):.1f}, max {max(seconds):.1f}"
    )
    cpu = [r["cpu_seconds"] for r in results if "cpu_seconds" in r]
    if cpu:  # CPU time of the process: what a quiet machine's wall clock would show
        print(
            f"  --toward CPU seconds per concept: mean {sum(cpu) / len(cpu):.1f}, max {max(cpu):.1f}"
        )
    if plot_path:
        plot(wins, n, plot_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sae", default="checkpoints/smollm2-135m/resid_post.12/9216-k32")
    parser.add_argument("--concepts", type=int, default=len(CONCEPTS))
    parser.add_argument("--only", default="", help="comma-separated concepts to run")
    parser.add_argument("--json", default="", help="write per-concept results here")
    parser.add_argument("--plot", default="", help="write the side-by-side bar chart (PNG) here")
    parser.add_argument(
        "--from-json", default="", help="print the totals (and --plot) of a saved --json run"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--set-size", type=int, default=None, help="--toward's --top (default: its whole set)"
    )
    parser.add_argument(
        "--calibration-tokens", type=int, default=24, help="reply tokens --toward calibrates on"
    )
    parser.add_argument(
        "--columns", default=",".join(COLUMNS), help=f"a subset of {','.join(COLUMNS)}"
    )
    args = parser.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            summary(json.load(f)["results"][: args.concepts], args.sae, args.plot)
        return
    torch.set_num_threads(args.threads)
    columns = tuple(c.strip() for c in args.columns.split(",") if c.strip())
    toward_args = {"top": args.set_size, "reply_tokens": args.calibration_tokens}
    if unknown := set(columns) - set(COLUMNS):
        parser.error(f"unknown columns {sorted(unknown)}: choose from {', '.join(COLUMNS)}")

    from steer.features.catalog import FeatureCatalog
    from steer.steering import open_sae
    from steer.steering.generate import build_prompt_ids
    from steer.steering.success import greedy_replies

    lm, sae = open_sae(args.sae)
    catalog = FeatureCatalog.load(args.sae)
    words = [w.strip() for w in args.only.split(",") if w.strip()] or list(CONCEPTS)
    words = words[: args.concepts]
    prompt_ids = [build_prompt_ids(lm, p) for p in PROMPTS]
    base = [greedy_replies(lm, sae, p, [[]], N_TOKENS)[0] for p in prompt_ids]

    results = []
    for word in words:
        row = run_concept(lm, sae, catalog, word, prompt_ids, base, columns, toward_args)
        results.append(row)
        marks = " ".join(f"{c}={'Y' if row[c] else '.'}" for c in COLUMNS if c in row)
        print(f"{word:10s} {marks}  {row['seconds']:.1f}s  {row['levers'][:1]}", flush=True)
        if args.json:  # after every concept, so a long run stopped early keeps what it did
            with open(args.json, "w") as f:
                json.dump({"results": results, "n": len(results)}, f, indent=1)
    summary(results, args.sae, args.plot)


if __name__ == "__main__":
    main()
