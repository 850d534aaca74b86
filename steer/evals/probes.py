"""Probe loss (Gao et al. 2024, §4.2): do single latents capture features we expect?

For each binary task, every example (a window of `window` tokens) becomes one feature
vector: the mean over its positions (the first, attention-sink position left out) of the
SAE's latents, or of the raw residual coordinates for the baseline. A 1-D logistic
regression is fitted on every single feature (Newton's method, all features at once) on
half the examples; the task's probe loss is the lowest cross-entropy any one feature gets
on the other half. Lower is better; log 2 ≈ 0.693 is chance on these balanced tasks.

The paper used 61 public classification datasets; offline we build tasks from corpus text
and the tokenizer alone (`TASKS`): ten properties of a text window, each balanced
(`n_per_class` positives and negatives).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

_YEAR = re.compile(r"\b(1[0-9]|20)\d\d\b")
_SHE = re.compile(r"\b(she|her|hers|herself)\b", re.I)
_HE = re.compile(r"\b(he|his|him|himself)\b", re.I)
_SPORT = re.compile(
    r"\b(football|league|season|team|player|players|match|cup|championship)\b", re.I
)
_MUSIC = re.compile(r"\b(album|song|songs|band|music|singer|guitar|single|chart)\b", re.I)
_PLACE = re.compile(r"\b(village|town|city|county|district|river|population|municipality)\b", re.I)

# name -> (description, predicate on the window's text or None for the built tasks)
TASKS: dict[str, str] = {
    "year": "the window mentions a year (1000-2099)",
    "quote": "the window holds a double quotation mark",
    "parenthesis": "the window holds an opening parenthesis",
    "gender": "she/her pronouns (positive) vs he/his pronouns (negative), never both",
    "sport": "a sports word (football, league, season, team, ...)",
    "music": "a music word (album, song, band, singer, ...)",
    "place": "a geography word (village, town, river, population, ...)",
    "article_start": "the first window of an article (positive) vs a later window",
    "shuffled": "the window's tokens in random order (positive) vs as written",
    "uppercase": "the window's text upper-cased and re-tokenized (positive) vs as written",
}


def _label_of(name: str) -> Callable[[str], int | None] | None:
    """1, 0, or None (the window is not used) for the text-predicate tasks."""
    simple = {
        "year": _YEAR.search,
        "sport": _SPORT.search,
        "music": _MUSIC.search,
        "place": _PLACE.search,
        "quote": lambda t: '"' in t or "“" in t or "”" in t,
        "parenthesis": lambda t: "(" in t,
    }
    if name in simple:
        test = simple[name]
        return lambda text: int(bool(test(text)))
    if name == "gender":
        return lambda t: (
            None if bool(_SHE.search(t)) == bool(_HE.search(t)) else int(bool(_SHE.search(t)))
        )
    return None


@dataclass
class ProbeTask:
    name: str
    description: str
    ids: Tensor  # (N, window) int64 token ids
    labels: Tensor  # (N,) float 0/1


def build_tasks(
    texts: Iterable[str],
    tokenizer,
    n_per_class: int = 128,
    window: int = 32,
    seed: int = 0,
    max_documents: int = 5000,
    names: list[str] | None = None,
) -> dict[str, ProbeTask]:
    """Balanced binary tasks from documents (held-out text). A task with too few
    positives or negatives in the text given is left out (see the returned keys)."""
    names = list(TASKS) if names is None else names
    unknown = set(names) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown probe task(s) {sorted(unknown)}: choose from {', '.join(TASKS)}")
    rng = random.Random(seed)
    starts: list[list[int]] = []  # the first window of each document
    windows: list[list[int]] = []  # later windows
    for i, text in enumerate(texts):
        if i >= max_documents:
            break
        ids = tokenizer(text, add_special_tokens=False).input_ids
        for j in range(0, len(ids) - window + 1, window):
            (starts if j == 0 else windows).append(ids[j : j + window])
    if not windows:
        raise ValueError(f"no text long enough for probe windows of {window} tokens")
    rng.shuffle(windows)
    texts_of = [tokenizer.decode(w) for w in windows]
    tasks = {}
    for name in names:
        pos, neg = _examples(name, windows, texts_of, starts, tokenizer, window, rng, n_per_class)
        n = min(len(pos), len(neg), n_per_class)
        if n < 8:
            continue  # not enough examples in this text
        ids = torch.tensor(pos[:n] + neg[:n], dtype=torch.long)
        labels = torch.cat([torch.ones(n), torch.zeros(n)])
        tasks[name] = ProbeTask(name, TASKS[name], ids, labels)
    if not tasks:
        raise ValueError("the text given is too short to build any probe task")
    return tasks


def _examples(name, windows, texts_of, starts, tokenizer, window, rng, n):
    """(positives, negatives), lists of token-id lists of length `window`."""
    label_of = _label_of(name)
    if label_of is not None:
        pos, neg = [], []
        for ids, text in zip(windows, texts_of, strict=True):
            label = label_of(text)
            if label == 1 and len(pos) < n:
                pos.append(ids)
            elif label == 0 and len(neg) < n:
                neg.append(ids)
        return pos, neg
    if name == "article_start":
        return rng.sample(starts, min(n, len(starts))), windows[:n]
    # Transformations: positives are altered copies of windows the negatives do not use.
    source, neg = windows[n : 2 * n], windows[:n]
    if name == "shuffled":
        return [rng.sample(w, len(w)) for w in source], neg
    pos = []  # uppercase
    for text in texts_of[n : 2 * n]:
        upper = tokenizer(text.upper(), add_special_tokens=False).input_ids[:window]
        if len(upper) == window:
            pos.append(upper)
    return pos, neg


# ---------------------------------------------------------------------- 1-D logistic probes
def fit_1d_probes(
    features: Tensor, labels: Tensor, steps: int = 30, l2: float = 1e-3
) -> tuple[Tensor, Tensor]:
    """Fit p(y=1) = sigmoid(w·f + b) on every column f of features (N, F) at once.

    Newton's method on the (w, b) of each column, features standardised; a small L2
    penalty on w keeps separable columns finite. Returns (w, b), each (F,), in the
    standardised units of `standardize`."""
    x = features.double()  # (N, F)
    y = labels.double()[:, None]  # (N, 1)
    n, f = x.shape
    w = torch.zeros(f, dtype=torch.float64)
    prior = float(y.mean().clamp(1e-6, 1 - 1e-6))
    b = torch.full((f,), math.log(prior / (1 - prior)), dtype=torch.float64)
    for _ in range(steps):
        p = torch.sigmoid(x * w + b)  # (N, F)
        r = p - y
        g_w = (r * x).mean(0) + l2 * w
        g_b = r.mean(0)
        s = p * (1 - p)
        h_ww = (s * x * x).mean(0) + l2
        h_wb = (s * x).mean(0)
        h_bb = s.mean(0) + 1e-9
        det = h_ww * h_bb - h_wb**2
        step_w = (h_bb * g_w - h_wb * g_b) / det
        step_b = (h_ww * g_b - h_wb * g_w) / det
        w, b = w - step_w.clamp(-10, 10), b - step_b.clamp(-10, 10)
    return w, b


def probe_losses(w: Tensor, b: Tensor, features: Tensor, labels: Tensor) -> Tensor:
    """Mean binary cross-entropy (nats) of every column's probe, (F,)."""
    logits = features.double() * w + b  # (N, F)
    y = labels.double()[:, None]
    return torch.nn.functional.binary_cross_entropy_with_logits(
        logits, y.expand_as(logits), reduction="none"
    ).mean(0)


def standardize(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    mean, std = train.mean(0), train.std(0)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))  # constant columns stay constant
    return (train - mean) / std, (test - mean) / std


def heldout_losses(features: Tensor, labels: Tensor, seed: int = 0):
    """Fit every column's probe on a stratified half, score it on the other half.

    Returns (losses (F,) held-out CE per column, held-out accuracy of each column (F,))."""
    gen = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for value in (0.0, 1.0):
        idx = torch.nonzero(labels == value).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        train_idx.append(idx[: len(idx) // 2])
        test_idx.append(idx[len(idx) // 2 :])
    tr, te = torch.cat(train_idx), torch.cat(test_idx)
    x_tr, x_te = standardize(features[tr].double(), features[te].double())
    w, b = fit_1d_probes(x_tr, labels[tr])
    losses = probe_losses(w, b, x_te, labels[te])  # (F,)
    pred = (x_te * w + b) > 0  # (N_te, F)
    accuracy = (pred.double() == labels[te].double()[:, None]).double().mean(0)
    return losses, accuracy


def best_probe(features: Tensor, labels: Tensor, seed: int = 0) -> dict:
    """Best single-feature probe: {"loss": held-out CE of the best feature, "feature": its
    index, "accuracy": its held-out accuracy}."""
    losses, accuracy = heldout_losses(features, labels, seed)
    best = int(losses.argmin())
    return {"loss": float(losses[best]), "feature": best, "accuracy": float(accuracy[best])}


@torch.inference_mode()
def window_features(lm, saes: dict, layer: int, ids: Tensor, batch: int = 16, autocast=True):
    """Mean over positions 1.. of each window: {"residual": (N, d), name: (N, n_latents)}."""
    import contextlib

    out: dict[str, list[Tensor]] = {"residual": [], **{name: [] for name in saes}}
    use_autocast = autocast and lm.dtype == torch.float32 and lm.device.type in ("cpu", "cuda")
    for start in range(0, ids.shape[0], batch):
        chunk = ids[start : start + batch].to(lm.device)
        ctx = (
            torch.autocast(lm.device.type, dtype=torch.bfloat16)
            if use_autocast
            else contextlib.nullcontext()
        )
        with ctx:
            resid = lm.residual(chunk, layer)  # (b, T, d)
        x = resid[:, 1:].float()  # (b, T-1, d): the attention-sink position left out
        out["residual"].append(x.mean(1).cpu())
        flat = x.reshape(-1, x.shape[-1])
        for name, sae in saes.items():
            z = sae.encode_dense(flat.to(sae.device, sae.dtype))  # (b*(T-1), n)
            out[name].append(z.reshape(x.shape[0], x.shape[1], -1).mean(1).float().cpu())
    return {name: torch.cat(parts) for name, parts in out.items()}


def probe_eval(lm, saes: dict, layer: int, tasks: dict[str, ProbeTask], seed: int = 0, **kw):
    """{"residual" and each SAE name: {"tasks": {task: best_probe(...)}, "mean_loss": ...}}.

    "residual" probes the raw residual coordinates (the standard basis), the paper's
    baseline for what a single direction of the model already separates."""
    results: dict[str, dict] = {}
    for task in tasks.values():
        feats = window_features(lm, saes, layer, task.ids, **kw)
        for name, f in feats.items():
            entry = results.setdefault(name, {"tasks": {}})
            entry["tasks"][task.name] = best_probe(f, task.labels, seed=seed)
    for entry in results.values():
        losses = [t["loss"] for t in entry["tasks"].values()]
        entry["mean_loss"] = sum(losses) / len(losses)
    return results
