"""Steer toward a concept: which features, pulled together, make the model talk about TEXT.

Single latents rarely do it on a small model. On the shipped block-12 SAE, brute force
over 13-15 candidates per concept (the best by measured rise and by first-order effect,
each added alone at four strengths, 40 greedy tokens on the benchmark's three prompts)
found a single latent that steers for only 4 of 9 everyday concepts (dog, mountain,
forest, music; none for cat, horse, bird, ocean, rain): the latents that make the model
*say* " ocean" next (an output feature, Arad et al. 2025, GUIDE.md §7) turn the talk to
"naval"/"marine" things without the word, or into loops one step stronger. What steers
is the *topic* of the conversation, and a topic is spread over many latents. So
`toward`

1. builds the concept's direction: the difference of mean residuals at the SAE's layer
   between templates about TEXT ("Tell me about TEXT.", ...) and the same templates about
   neutral fillers ("Tell me about something.", ...), so the template cancels out
   (vectors.build_vector; CAA / representation engineering);
2. writes it as SAE features by orthogonal matching pursuit (decompose.py) and keeps the
   first MAX_SET (16) that enter with positive weight: the lever set, at weights that
   rebuild the concept's side of the direction;
3. calibrates the set's joint strength by batched greedy generations on neutral chat
   prompts (not the benchmark's) over a ladder of strengths: the recommendation is the
   smallest strength with the best hit rate at which every reply still passes the
   coherence meter (coherence.py);
4. ranks the features of the set by a measured effect, one batched forward: each alone,
   at its share of the joint strength, steers the unsteered replies (teacher-forced), and
   its score is the rise of log P(a concept token somewhere in the reply) minus the mean
   rise for unrelated reference words (so a latent that flattens the distribution scores
   near zero).

The features are meant to be pulled together, at the strengths given (the playground's
ctrl+r adds them all); each strength is in the units `steer generate --feature
ID=STRENGTH:add` takes (multiples of the latent's max activation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from sae import TopKSAE
from steer.lm.kv import cache_kwargs, output_cache
from steer.lm.models import LoadedModel

from .coherence import Coherence, continuation_ce, expand_cache, repetition
from .decompose import decompose
from .generate import GenerationSettings, build_prompt_ids, generate_rows
from .hook import SteeringHook
from .intervention import Intervention
from .plan import strength_scales
from .vectors import build_vector

NEUTRAL_PROMPTS = (
    "How should I plan my week?",
    "How do I save more time?",
    "What do you do for fun?",
)
"""Calibration prompts: everyday requests with a topic of their own, as a user's are
(open ones, "What is on your mind?", are steered by less than a real request needs, so a
strength calibrated on them fell short); the benchmark uses others, so calibration cannot
overfit them. Of one token length in SmolLM2's chat template, so they share one batch."""

TEMPLATES = (
    "Tell me about {}.",
    "I want to talk about {}.",
    "Here is a story about {}.",
    "Everything you need to know about {}.",
    "My favourite topic is {}.",
)
"""Prompts about the concept; the same prompts about FILLERS are the contrast."""

FILLERS = ("something", "my day", "the weekend", "anything", "this")

REFERENCE_WORDS = (
    "car tree money king river computer doctor window city flower gold war book "
    "church horse planet bread school train island coffee paint moon police ship "
    "garden phone stone baby fire snow bank bird cloud salt iron glass milk rain"
).split()
"""Unrelated words whose mean rise is subtracted from a concept's rise (specificity)."""

STOPWORDS = set(
    "a an the and or of to in on at for with about from by as is are was were be been it "
    "its this that these those i you he she we they me my your our their his her them "
    "not no yes do does did can could will would should may might very more most some any "
    "all into over under than then so such what which who whom how why when where there "
    "here talk talking write writing things thing something".split()
)

LADDER = (2.0, 3.0, 4.0, 5.0)
"""Joint strengths tried, in the concept direction's units (1 moves the fillers' mean
residual onto the concept's). Measured on the shipped block-12 SAE (the first five
positive parts, 40 tokens, the benchmark's prompts): sets rarely name the concept below 2
and mostly steer at 3-4; some ("snow") only at 5 on requests with a topic of their own."""

MAX_SET = 16
"""Features in a set unless `top` asks for another number. More features rebuild more of
the concept's direction and steer more often, up to a point: on the shipped block-12 SAE
the 24-concept benchmark steered 12 concepts with sets of 5, 16 with 10, 18 with 16; sets
of 24 and 32 did no better than 16 on the first 18-19 concepts (10/19 and 11/18, where 16
had 14/19)."""


RISE_TOKENS = 12
"""Reply tokens the per-feature ranking reads (see `toward`)."""


@dataclass
class Lever:
    feature: int
    mode: str
    strength: float
    """In the units of `steer generate --feature ID=STRENGTH:MODE`."""
    score: float
    """Higher steers better: this feature's measured specific rise (nats), alone, at its
    strength; the set is meant to be pulled together."""
    rise: float = 0.0
    """Specific rise of log P(concept token in the reply), nats (= score, unrounded)."""
    hits: float = 0.0
    """Fraction of calibration replies the whole set made name the concept coherently."""
    coherent: bool = True
    """Whether the set's calibration replies at the recommended strength passed the meter."""
    replies: list[str] = field(default_factory=list)
    """The set's calibration replies at the recommended strength."""


# ---------------------------------------------------------------------- concept tokens
def concept_words(text: str) -> list[str]:
    """TEXT's content words, lowercase, in order (a single word is kept even if common)."""
    words = [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z'-]*", text)]
    content = [w for w in words if w not in STOPWORDS and len(w) > 2]
    return list(dict.fromkeys(content or words))


def word_tokens(tokenizer, word: str) -> list[int]:
    """Word-initial token ids that start `word` (" dog", " Dog", "dog", "Dog"), keeping
    only tokens that carry at least three letters of it (not " d" or " s")."""
    out = []
    for form in {word, word.capitalize(), word.lower()}:
        for variant in (" " + form, form):
            ids = tokenizer(variant, add_special_tokens=False)["input_ids"]
            if not ids:
                continue
            piece = tokenizer.decode(ids[:1]).strip().lower()
            if len(piece) >= min(3, len(word)) and word.lower().startswith(piece):
                out.append(int(ids[0]))
    return list(dict.fromkeys(out))


def concept_tokens(tokenizer, text: str) -> list[int]:
    ids = [t for w in concept_words(text) for t in word_tokens(tokenizer, w)]
    if not ids:
        raise ValueError(f"no concept words in {text!r}: give a word or a phrase")
    return list(dict.fromkeys(ids))


def names_concept(text: str, words: list[str]) -> bool:
    """Does `text` contain one of the concept words (at a word start, any ending)?"""
    return any(re.search(r"\b" + re.escape(w), text, re.IGNORECASE) for w in words)


def reference_tokens(tokenizer, words: list[str], targets: list[int]) -> list[list[int]]:
    """One word-initial token per REFERENCE_WORDS entry that is neither a concept word nor
    one of its tokens: the sets whose mean rise is subtracted (specificity)."""
    refs = [word_tokens(tokenizer, w)[:1] for w in REFERENCE_WORDS if w not in words]
    return [r for r in refs if r and r[0] not in targets]


# ---------------------------------------------------------------------- the lever set
def concept_vector(lm: LoadedModel, sae: TopKSAE, text: str, name: str = "toward"):
    """The concept's contrastive direction at the SAE's layer: TEMPLATES about `text`
    against the same templates about FILLERS (step 1 of the module docstring)."""
    return build_vector(
        lm,
        sae,
        name,
        [t.format(text) for t in TEMPLATES],
        [t.format(f) for t in TEMPLATES for f in FILLERS],
    )


def lever_set(lm: LoadedModel, sae: TopKSAE, text: str, n: int) -> list[tuple[int, float]]:
    """Up to n (latent, raw weight) whose weighted directions rebuild the concept's
    direction (steps 1-2 of the module docstring), in OMP's order."""
    vector = concept_vector(lm, sae, text)
    # OMP gives about 2 positive parts for every negative one (the fillers' side): half
    # again as many steps as features wanted.
    parts = decompose(sae, vector.direction, n=max(8, (3 * n + 1) // 2)).parts
    kept = [(p.latent, p.weight) for p in parts if p.weight > 0][:n]
    if not kept:
        raise ValueError(f"no feature of this SAE points toward {text!r}")
    return kept


@torch.inference_mode()
def generate_grid(
    lm: LoadedModel,
    sae: TopKSAE,
    settings_rows: list[list[Intervention]],
    prompts: list[Tensor],
    n_tokens: int,
) -> list[list[list[int]]]:
    """Greedy replies [setting][prompt] (token ids), every setting steering every prompt.

    Prompts of one token length share one batch (a prompt per row), so three
    equal-length prompts cost one generation."""
    settings = GenerationSettings(max_new_tokens=n_tokens, stop_on_eos=False)
    S = len(settings_rows)
    out: list[list[list[int]]] = [[[] for _ in prompts] for _ in range(S)]
    by_length: dict[int, list[int]] = {}
    for p, prompt in enumerate(prompts):
        by_length.setdefault(prompt.numel(), []).append(p)
    for group in by_length.values():
        stacked = torch.stack([prompts[p] for p in group for _ in range(S)])  # (G*S, P)
        rows = [settings_rows[r] for _ in group for r in range(S)]
        for events in generate_rows(lm, sae, stacked, rows, settings):
            for e in events:
                out[e.row % S][group[e.row // S]].append(e.token_id)
    return out


@torch.inference_mode()
def calibrate(
    lm: LoadedModel,
    sae: TopKSAE,
    levers: list[tuple[int, float]],
    prompts: list[Tensor],
    words: list[str],
    n_tokens: int,
) -> tuple[int, float, bool, list[str], list[list[int]]]:
    """(ladder index, win rate, all coherent, replies) at the recommended joint strength,
    and the unsteered replies (token ids) to the prompts.

    Every prompt is answered unsteered and at every rung of LADDER (greedy, `add` at all
    positions, the way `steer generate` applies the recommendation). A reply *wins* when
    it names the concept and the coherence meter passes it (the unsteered model's
    cross-entropy on it against that on the unsteered reply to the same prompt; the
    benchmark's criterion); the recommendation is the smallest rung with the most wins.
    The meter runs only on replies that name the concept (the others cannot win), and on
    the chosen rung's others for the `all coherent` flag."""
    rows = [[]] + [[Intervention(i, w * a, "add") for i, w in levers] for a in LADDER]
    ids = generate_grid(lm, sae, rows, prompts, n_tokens)  # [setting][prompt] -> token ids
    texts = [[lm.tokenizer.decode(r, skip_special_tokens=True) for r in row] for row in ids]
    hits = torch.tensor([[names_concept(t, words) for t in row] for row in texts[1:]])
    ok = torch.zeros_like(hits)  # (rungs, prompts): coherent, where measured

    def meter(cells: list[tuple[int, int]]) -> None:
        for p in {p for _, p in cells}:
            rungs = [a for a, q in cells if q == p]
            ce = continuation_ce(lm, prompts[p], [ids[0][p]] + [ids[1 + a][p] for a in rungs])
            for a, c in zip(rungs, ce[1:], strict=True):
                ok[a, p] = Coherence(c, ce[0], repetition(ids[1 + a][p])).ok

    meter([(a, p) for a, p in torch.nonzero(hits).tolist()])
    wins = (hits & ok).float().mean(dim=1)  # (rungs,)
    rung = int(torch.nonzero(wins == wins.max())[0])
    meter([(rung, p) for p in range(len(prompts)) if not hits[rung, p]])
    return rung, float(wins[rung]), bool(ok[rung].all()), texts[1 + rung], ids[0]


def _log_mass(logp: Tensor, sets: list[list[int]]) -> Tensor:
    """(R, len(sets)): log of the expected number of a set's tokens over the reply,
    log Σ_positions Σ_{t in set} p_t, from log-probs (R, L, V)."""
    cols = []
    for ids in sets:
        per_pos = logp[..., ids].logsumexp(dim=-1)  # (R, L)
        cols.append(per_pos.logsumexp(dim=-1))  # (R,)
    return torch.stack(cols, dim=-1)


@torch.inference_mode()
def measure_rise(
    lm: LoadedModel,
    sae: TopKSAE,
    latents: list[int],
    raw: Tensor,
    prompts: list[Tensor],
    replies: list[list[int]],
    targets: list[int],
    references: list[list[int]],
) -> Tensor:
    """Specific rise (len(latents),) in nats, averaged over prompts: each latent adds
    raw[j] units of its direction to the teacher-forced unsteered reply; one forward per
    prompt for all latents (plus an unsteered row), the prompt's prefix computed once."""
    rows = [[Intervention(i, float(s), "add")] for i, s in zip(latents, raw.tolist(), strict=True)]
    rows.append([])  # the unsteered row
    R = len(rows)
    total = torch.zeros(len(latents))
    for prompt, reply in zip(prompts, replies, strict=True):
        ids = prompt.to(lm.device)
        P = ids.numel()
        prefix = expand_cache(output_cache(lm.model(input_ids=ids[None, :-1], use_cache=True)), R)
        fed = torch.tensor([int(ids[-1]), *reply[:-1]], device=lm.device)[None].expand(R, -1)
        hook = SteeringHook(lm, sae, rows, prompt_len=P).reset(P - 1)
        with hook:
            logits = lm.model(
                input_ids=fed, **cache_kwargs(lm.model, prefix), use_cache=True
            ).logits
        logp = F.log_softmax(logits.float(), dim=-1)  # (R, L, V)
        mass = _log_mass(logp, [targets, *references])  # (R, 1 + W)
        rise = mass[:-1] - mass[-1:]  # (R-1, 1 + W)
        total += (rise[:, 0] - rise[:, 1:].mean(dim=-1)).cpu()
    return total / len(prompts)


# ---------------------------------------------------------------------- the whole search
def toward(
    lm: LoadedModel,
    sae: TopKSAE,
    text: str,
    *,
    max_acts: Tensor | None = None,
    top: int | None = None,
    prompts: tuple[str, ...] = NEUTRAL_PROMPTS,
    reply_tokens: int = 24,
) -> list[Lever]:
    """The features that, pulled together at the strengths given, steer toward `text`,
    best first (see the module docstring)."""
    if not text or not text.strip():
        raise ValueError("the concept text is empty")
    top = MAX_SET if top is None else top
    if top < 1:
        raise ValueError(f"top must be positive, got {top}")
    tok = lm.tokenizer
    targets = concept_tokens(tok, text)
    words = concept_words(text)
    refs = reference_tokens(tok, words, targets)
    levers = lever_set(lm, sae, text.strip(), top)
    prompt_ids = [build_prompt_ids(lm, p) for p in prompts]
    rung, rate, ok, texts, unsteered = calibrate(lm, sae, levers, prompt_ids, words, reply_tokens)

    latents = [i for i, _ in levers]
    raw = torch.tensor([w * LADDER[rung] for _, w in levers])  # (n,) raw latent units
    # The ranking's forward has a row per feature; on the first RISE_TOKENS tokens of two
    # unsteered replies it stays cheaper than the calibration. It orders the set only:
    # the set and its strengths do not depend on it.
    short = [reply[:RISE_TOKENS] for reply in unsteered[:2]]
    rise = measure_rise(lm, sae, latents, raw, prompt_ids[:2], short, targets, refs)
    strengths = (raw / strength_scales(latents, max_acts)).tolist()  # --feature units
    out = [
        Lever(
            feature=i,
            mode="add",
            strength=round(s, 3),
            score=round(float(r), 4),
            rise=float(r),
            hits=rate,
            coherent=ok,
            replies=texts,
        )
        for i, s, r in zip(latents, strengths, rise, strict=True)
    ]
    out.sort(key=lambda lv: lv.score, reverse=True)
    return out
