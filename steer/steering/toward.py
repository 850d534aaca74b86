"""Steer toward a concept: which latents make the model *say* TEXT, and how hard to pull.

Latents that fire on a concept are often not the ones whose direction makes the model
produce it (Arad, Mueller & Belinkov 2025; GUIDE.md §7). `toward` therefore

1. names the concept's tokens: the word-initial tokens of TEXT's content words
   (" dog", " Dog", "dog"...), pieces shorter than three letters left out;
2. gathers candidates cheaply: the gradient of the specific concept mass (below) with
   respect to a vector added at the SAE's layer, one backward per prompt, dotted with
   every latent's unit direction (the first-order effect of each lever through all the
   layers above it), plus the latents that fire most on TEXT;
3. ranks them by a measured effect, one batched forward for all candidates: each steers
   the baseline replies to a few neutral prompts (teacher-forced), and its score is the
   rise of log P(a concept token somewhere in the reply) *minus* the mean rise for a set
   of unrelated reference words, so latents that merely flatten the distribution or push
   sub-word pieces (the failure GUIDE.md §7 records) score near zero;
4. calibrates the best few by short batched greedy generations over a ladder of
   strengths: the recommended strength is the smallest at which the concept appears in
   the replies while the coherence meter (coherence.py) still passes; the final order is
   by that validation, then by the measured rise.

Strengths are set on a residual-norm scale (the added vector's norm as a fraction of the
typical residual norm at the SAE's layer) and reported in the units `steer generate
--feature ID=STRENGTH:add` takes (multiples of the latent's max activation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from sae import TopKSAE
from steer.lm.kv import cache_kwargs, output_cache
from steer.lm.models import LoadedModel, block_output

from .coherence import Coherence, continuation_ce, expand_cache, repetition
from .generate import GenerationSettings, build_prompt_ids, generate_rows
from .hook import SteeringHook
from .intervention import Intervention, sae_layer
from .plan import strength_scales
from .readouts import latent_codes, max_over_tokens

NEUTRAL_PROMPTS = (
    "Tell me something interesting.",
    "What should I write about today?",
    "Say a few sentences about anything you like.",
)
"""Calibration prompts (the benchmark uses others, so calibration cannot overfit them)."""

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

LADDER = (0.4, 0.65, 1.0)
"""Strengths tried in calibration, as the added vector's norm / the typical residual norm."""


@dataclass
class Lever:
    feature: int
    mode: str
    strength: float
    """In the units of `steer generate --feature ID=STRENGTH:MODE`."""
    score: float
    """Higher steers better: validation hit rate + the measured specific rise (nats)/10."""
    rise: float = 0.0
    """Specific rise of log P(concept token in the reply), nats."""
    hits: float = 0.0
    """Fraction of calibration replies that named the concept at `strength`."""
    coherent: bool = True
    replies: list[str] = field(default_factory=list)


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


# ---------------------------------------------------------------------- cheap candidates
def _add_vector_hook(delta: Tensor):
    def hook(_module, _args, output):
        x = block_output(output)
        x = x + delta.to(x.dtype)
        return (x, *output[1:]) if isinstance(output, tuple) else x

    return hook


def gradient_scores(
    lm: LoadedModel,
    sae: TopKSAE,
    prompts: list[Tensor],
    replies: list[list[int]],
    targets: list[int],
    references: list[list[int]],
) -> Tensor:
    """(n_latents,): first-order effect of adding one unit-norm step along each latent's
    direction at every position on the specific concept mass (see `measure_rise`): the
    gradient of that objective with respect to a vector added to block L's output, dotted
    with each unit direction. One forward and backward per prompt, through all the
    layers above L (the logit lens of a middle layer skips them and says little:
    on the shipped SAE, " dog"'s best lens z-score is 3.6, chance level over 49k tokens)."""
    layer = sae_layer(lm, sae)
    delta = torch.zeros(lm.d_model, device=lm.device, requires_grad=True)
    handle = lm.block(layer).register_forward_hook(_add_vector_hook(delta))
    try:
        with torch.enable_grad():
            for prompt, reply in zip(prompts, replies, strict=True):
                ids = torch.cat([prompt, torch.tensor(reply[:-1], dtype=torch.long)])[None]
                logits = lm.model(input_ids=ids.to(lm.device)).logits[:, prompt.numel() - 1 :]
                mass = _log_mass(F.log_softmax(logits.float(), dim=-1), [targets, *references])
                (mass[0, 0] - mass[0, 1:].mean()).backward()
    finally:
        handle.remove()
    dirs = sae.decoder_directions(torch.arange(sae.n_latents, device=sae.device)).detach()
    units = dirs / dirs.norm(dim=-1, keepdim=True).clamp(min=1e-12)  # (n, d)
    return (units @ delta.grad.to(units.dtype)).cpu()  # (n,)


def candidates(
    lm: LoadedModel,
    sae: TopKSAE,
    text: str,
    grad: Tensor,
    max_acts: Tensor | None,
    n_grad: int = 24,
    n_fire: int = 4,
    output: tuple[Tensor, Tensor] | None = None,
    targets: list[int] = (),
    n_output: int = 4,
) -> list[int]:
    """Latents worth measuring: the best first-order effects, those firing on TEXT, and
    (with the catalog's output table, steer.features.catalog.output) those whose measured
    output tokens include the concept's."""
    picked = grad.topk(n_grad).indices.tolist()
    if output is not None and targets:
        ids, rise = output  # (n, K) vocabulary ids, their probability rise
        said = (rise * torch.isin(ids, torch.tensor(list(targets), dtype=ids.dtype))).sum(-1)
        best = said.topk(min(n_output, said.numel()))
        picked += [int(i) for v, i in zip(best.values, best.indices, strict=True) if v > 0]
    ids = lm.tokenizer(text)["input_ids"]
    fire = max_over_tokens(sae, latent_codes(lm, sae, ids)).cpu()  # (n,)
    if max_acts is not None:
        fire = fire / strength_scales(list(range(sae.n_latents)), max_acts)
    picked += [i for i in fire.topk(n_fire).indices.tolist() if float(fire[i]) > 0]
    return list(dict.fromkeys(picked))


# ---------------------------------------------------------------------- measured effect
@torch.inference_mode()
def residual_norm(lm: LoadedModel, sae: TopKSAE, prompts: list[Tensor]) -> float:
    """Median residual norm at the SAE's layer over the prompts' tokens (first skipped)."""
    layer = sae_layer(lm, sae)
    norms = [lm.residual(p[None].to(lm.device), layer)[0, 1:].norm(dim=-1) for p in prompts]
    return float(torch.cat(norms).median().detach())


_REPLIES: dict[tuple, list[int]] = {}
"""Unsteered greedy replies to the calibration prompts, kept per model: they do not depend
on the concept, so a session asking for several concepts computes them once."""


def _greedy(lm: LoadedModel, prompt_ids: Tensor, n: int) -> list[int]:
    key = (id(lm.model), tuple(prompt_ids.tolist()), n)
    if key not in _REPLIES:
        settings = GenerationSettings(max_new_tokens=n, stop_on_eos=False)
        out: list[int] = []
        for events in generate_rows(lm, None, prompt_ids, [[]], settings):
            out += [e.token_id for e in events]
        if len(_REPLIES) > 64:
            _REPLIES.clear()
        _REPLIES[key] = out
    return list(_REPLIES[key])


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
    raw[j] units of its direction to the teacher-forced baseline reply; one forward per
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


# ---------------------------------------------------------------------- calibration
def names_concept(text: str, words: list[str]) -> bool:
    """Does `text` contain one of the concept words (at a word start, any ending)?"""
    return any(re.search(r"\b" + re.escape(w), text, re.IGNORECASE) for w in words)


@torch.inference_mode()
def calibrate(
    lm: LoadedModel,
    sae: TopKSAE,
    latents: list[int],
    raw_per_alpha: Tensor,
    prompts: list[Tensor],
    words: list[str],
    n_tokens: int = 16,
) -> list[tuple[int, float, bool, list[str]]]:
    """For each latent: (ladder index, hit rate, coherent, replies) at the recommended rung.

    raw_per_alpha (len(latents),) is the raw strength of one unit of the ladder. All
    latents x rungs generate in one batch per prompt (greedy, `add` at all positions, the
    way `steer generate` applies the recommendation); the unsteered model's cross-entropy
    on each reply is checked against the baseline reply's (coherence.py)."""
    rows: list[list[Intervention]] = [[]]
    for j, latent in enumerate(latents):
        for a in LADDER:
            rows.append([Intervention(latent, float(raw_per_alpha[j]) * a, "add")])
    settings = GenerationSettings(max_new_tokens=n_tokens, stop_on_eos=False)
    hits = torch.zeros(len(rows), len(prompts))
    bad = torch.zeros(len(rows), len(prompts), dtype=torch.bool)
    texts: list[list[str]] = [[] for _ in rows]
    for p, prompt in enumerate(prompts):
        ids: list[list[int]] = [[] for _ in rows]
        for events in generate_rows(lm, sae, prompt, rows, settings):
            for e in events:
                ids[e.row].append(e.token_id)
        ce = continuation_ce(lm, prompt, ids)
        for r, reply in enumerate(ids):
            text = lm.tokenizer.decode(reply, skip_special_tokens=True)
            texts[r].append(text)
            hits[r, p] = float(names_concept(text, words))
            bad[r, p] = not Coherence(ce[r], ce[0], repetition(reply)).ok
    out = []
    for j in range(len(latents)):
        best = None
        for a in range(len(LADDER)):
            r = 1 + j * len(LADDER) + a
            rate, ok = float(hits[r].mean()), not bool(bad[r].any())
            if ok and (best is None or rate > best[1]):
                best = (a, rate, ok, texts[r])
            if ok and rate == 1.0:
                break
        out.append(
            best or (0, float(hits[1 + j * len(LADDER)].mean()), False, texts[1 + j * len(LADDER)])
        )
    return out


# ---------------------------------------------------------------------- the whole search
def toward(
    lm: LoadedModel,
    sae: TopKSAE,
    text: str,
    *,
    max_acts: Tensor | None = None,
    top: int = 5,
    n_calibrate: int = 3,
    prompts: tuple[str, ...] = NEUTRAL_PROMPTS[:2],
    reply_tokens: int = 12,
    output: tuple[Tensor, Tensor] | None = None,
) -> list[Lever]:
    """Levers that steer toward `text`, best first (see the module docstring). output:
    the catalog's output table (FeatureCatalog.output_table()), more candidates."""
    if not text or not text.strip():
        raise ValueError("the concept text is empty")
    if top < 1:
        raise ValueError(f"top must be positive, got {top}")
    tok = lm.tokenizer
    targets = concept_tokens(tok, text)
    words = concept_words(text)
    refs = [word_tokens(tok, w)[:1] for w in REFERENCE_WORDS if w not in words]
    refs = [r for r in refs if r and r[0] not in targets]
    prompt_ids = [build_prompt_ids(lm, p) for p in prompts]
    replies = [_greedy(lm, p, reply_tokens) for p in prompt_ids]
    norm = residual_norm(lm, sae, prompt_ids)

    grad = gradient_scores(lm, sae, prompt_ids, replies, targets, refs)
    cands = candidates(lm, sae, text, grad, max_acts, output=output, targets=targets)
    dir_norm = sae.decoder_directions(torch.tensor(cands)).detach().norm(dim=-1).cpu()  # (c,)
    raw_unit = norm / dir_norm.clamp(min=1e-12)  # raw strength per unit of the ladder
    rise = measure_rise(lm, sae, cands, raw_unit * LADDER[1], prompt_ids, replies, targets, refs)

    scales = strength_scales(cands, max_acts)  # raw units per unit of reported strength
    order = rise.argsort(descending=True).tolist()
    # Calibrate the best by measured rise and the best by first-order effect: on the
    # shipped SAE either list alone missed levers the other found (e.g. "dog").
    by_grad = grad[torch.tensor(cands)].argsort(descending=True).tolist()
    best = list(dict.fromkeys(order[:n_calibrate] + by_grad[:n_calibrate]))
    calib = calibrate(lm, sae, [cands[j] for j in best], raw_unit[best], prompt_ids, words)
    levers = []
    for j in list(dict.fromkeys(best + order))[: max(top, len(best))]:
        rung, rate, ok, texts = (1, 0.0, True, [])
        if j in best:
            rung, rate, ok, texts = calib[best.index(j)]
        strength = float(raw_unit[j]) * LADDER[rung] / float(scales[j])
        levers.append(
            Lever(
                feature=cands[j],
                mode="add",
                strength=round(strength, 3),
                score=round((rate if ok else 0.0) + float(rise[j]) / 100, 4),
                rise=float(rise[j]),
                hits=rate,
                coherent=ok,
                replies=texts,
            )
        )
    levers.sort(key=lambda lv: lv.score, reverse=True)
    return levers[:top]
