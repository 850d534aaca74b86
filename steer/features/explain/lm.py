"""Language-model explanations of features, scored by detection (Bills et al. 2023;
EleutherAI's autointerp).

Explaining: an instruct model reads a feature's top activating contexts from the catalog,
with the tokens where the feature fires strongly marked <<like this>>, and answers with a
short phrase (greedy decoding, first line kept).

Detection scoring: for held-out windows of text (16 tokens from a held-out corpus pass),
half where the feature fires (at half its max or more, on the window's 13th token) and
half where it is silent, the scorer model is asked whether the text matches the
explanation; it answers "yes" when its next-token logit for Yes beats the one for No
(one forward pass per window, batched). The score is the balanced accuracy of those calls:
0.5 is chance, 1.0 perfect. A feature without held-out firings is left unscored.

Running over many features is resumable: results are saved every few features, and
features that already have an explanation by this explainer are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from steer.lm.models import LoadedModel

from .heldout import HeldoutCodes
from .n2g import FIRE_FRACTION
from .store import Explanations, LMExplanation

EXPLAIN_PROMPT = (
    "Below are text excerpts where one feature of a language model is active. The tokens "
    "where it is most active are marked like <<this>>.\n\n{examples}\n\n"
    "In a few words, what do the marked tokens have in common? Answer with a short phrase only."
)
SCORE_PROMPT = (
    'A feature of a language model detects: "{explanation}".\n\nText: "{text}"\n\n'
    "Does this text contain what the feature detects? Answer Yes or No."
)
WINDOW = (12, 3)  # tokens before and after the firing token in a scoring window


def mark(tokens: list[str], acts: list[float], threshold: float) -> str:
    """A context with the tokens at or above `threshold` wrapped in << >>."""
    out = []
    for tok, act in zip(tokens, acts, strict=True):
        out.append(f"<<{tok}>>" if act >= threshold and act > 0 else tok)
    return "".join(out).replace("\n", " ").strip()


class LMExplainer:
    """An instruct model that writes explanations and answers detection questions."""

    def __init__(self, lm: LoadedModel, name: str, max_new_tokens: int = 24):
        self.lm, self.name, self.max_new_tokens = lm, name, max_new_tokens
        tok = lm.tokenizer
        variants = ["Yes", " Yes", "yes", " yes"], ["No", " No", "no", " no"]
        self.yes, self.no = (
            sorted({tok(v, add_special_tokens=False).input_ids[0] for v in vs}) for vs in variants
        )

    def _prompt(self, text: str) -> list[int]:
        tok = self.lm.tokenizer
        if self.lm.is_chat:
            chat = tok.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
            return tok(chat, add_special_tokens=False).input_ids
        return tok(f"Question: {text}\nAnswer:", add_special_tokens=True).input_ids

    @torch.inference_mode()
    def explain(self, examples: list[str]) -> str:
        """A short phrase from marked examples (greedy)."""
        body = "\n".join(f"{j + 1}. {e}" for j, e in enumerate(examples))
        ids = torch.tensor([self._prompt(EXPLAIN_PROMPT.format(examples=body))])
        tok = self.lm.tokenizer
        out = self.lm.model.generate(
            ids.to(self.lm.device),
            attention_mask=torch.ones_like(ids).to(self.lm.device),
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
        text = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        return (lines[0] if lines else "").strip(" .\"'")[:200]

    @torch.inference_mode()
    def says_yes(self, explanation: str, texts: list[str]) -> Tensor:
        """(m,) bool: does the scorer say the text matches the explanation?"""
        prompts = [
            self._prompt(SCORE_PROMPT.format(explanation=explanation, text=t)) for t in texts
        ]
        T = max(len(p) for p in prompts)
        pad = self.lm.tokenizer.pad_token_id or 0
        ids = torch.tensor([[pad] * (T - len(p)) + p for p in prompts])  # left-padded (m, T)
        mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
        logits = (
            self.lm.model(input_ids=ids.to(self.lm.device), attention_mask=mask.to(self.lm.device))
            .logits[:, -1]
            .float()
        )  # (m, V)
        yes = logits[:, self.yes].max(-1).values
        no = logits[:, self.no].max(-1).values
        return (yes > no).cpu()


def _plain(text: str, tokenizer) -> str:
    """Text without the tokenizer's special tokens (end-of-text marks between documents)."""
    for special in getattr(tokenizer, "all_special_tokens", []):
        text = text.replace(special, " ")
    return " ".join(text.split())


def balanced_accuracy(said_yes: Tensor, fires: Tensor) -> float:
    """Mean of the hit rate on firing windows and the correct-rejection rate on the rest."""
    pos, neg = said_yes[fires], said_yes[~fires]
    return 0.5 * (float(pos.float().mean()) + float((~neg).float().mean()))


@dataclass
class ScoringWindows:
    """Held-out windows of text per latent: where it fires and where it is silent."""

    codes: HeldoutCodes
    thresholds: Tensor
    """(n,) a latent fires at or above this activation."""
    tokenizer: object
    seed: int = 0

    def __post_init__(self):
        lat, pos = self.codes.events(self.thresholds)
        order = torch.argsort(lat, stable=True)
        self.lat, self.pos = lat[order], pos[order]
        self.any_lat, self.any_pos = self.codes.events(torch.full_like(self.thresholds, 1e-9))

    def _text(self, b: int, t: int) -> str:
        row = self.codes.tokens[b]
        lo, hi = max(1, t - WINDOW[0]), min(row.numel(), t + WINDOW[1] + 1)
        return self.tokenizer.decode(row[lo:hi].tolist()).replace("\n", " ").strip()

    def windows(self, latent: int, n: int) -> tuple[list[str], list[str]]:
        """Up to n firing windows and n silent ones (same count), or ([], [])."""
        B, T = self.codes.tokens.shape
        lo, hi = torch.searchsorted(self.lat, torch.tensor([latent, latent + 1])).tolist()
        firing = self.pos[lo:hi]
        g = torch.Generator().manual_seed(self.seed + latent)
        firing = firing[torch.randperm(firing.numel(), generator=g)[:n]]
        if firing.numel() == 0:
            return [], []
        active = torch.zeros(B, dtype=torch.bool)  # contexts where it fires at all
        active[self.any_pos[self.any_lat == latent] // T] = True
        silent = (~active).nonzero().flatten()
        silent = silent[torch.randperm(silent.numel(), generator=g)[: firing.numel()]]
        m = min(firing.numel(), silent.numel())
        yes = [self._text(int(p) // T, int(p) % T) for p in firing[:m]]
        mid = T // 2
        no = [self._text(int(b), mid) for b in silent[:m]]
        return yes, no


def explain_latents(
    explainer: LMExplainer,
    scorer: LMExplainer | None,
    catalog,
    latents: Iterable[int],
    explanations: Explanations,
    windows: ScoringWindows | None,
    *,
    n_examples: int = 6,
    n_score: int = 5,
    save: Callable[[], None] | None = None,
    save_every: int = 4,
    progress: Callable[[int, LMExplanation], None] | None = None,
) -> int:
    """Explain (and with a scorer and windows, score) each latent that has no explanation
    by this explainer yet. save() is called every save_every latents and at the end.
    Returns how many latents were explained."""
    done = 0
    for latent in latents:
        if any(e.explainer == explainer.name for e in explanations.lm.get(latent, [])):
            continue
        entry = catalog.entry(latent)
        if not entry.contexts:
            continue
        threshold = FIRE_FRACTION * entry.max_act
        shown = [
            _plain(mark(c.tokens, c.acts, threshold), explainer.lm.tokenizer)
            for c in entry.contexts[:n_examples]
        ]
        result = LMExplanation(explainer.name, explainer.explain(shown))
        if scorer is not None and windows is not None and result.text:
            yes, no = windows.windows(latent, n_score)
            if yes:
                said = scorer.says_yes(result.text, yes + no)
                fires = torch.tensor([True] * len(yes) + [False] * len(no))
                result.score = balanced_accuracy(said, fires)
                result.n_scored = len(yes) + len(no)
        explanations.add_lm(latent, result)
        done += 1
        if progress is not None:
            progress(latent, result)
        if save is not None and done % save_every == 0:
            save()
    if save is not None:
        save()
    return done
