"""N2G-style pattern explanations of SAE latents, fitted and scored for all latents at once.

What Neuron to Graph (Foote et al. 2023) does, per neuron: take its top activating
contexts; for each, find the shortest left-truncation that keeps the activation, then
replace each remaining context token by a wildcard where that keeps it (every check is a
forward pass of the model); merge the surviving token patterns into a trie that predicts
"fires" on new text, and score it by precision and recall on held-out text, a token
counting as firing above half the neuron's max activation (N2G's `activation_threshold`).

Why not that here: it costs about contexts x window forward passes per latent, ~1.5 M
passes for 9216 latents with 8 contexts of 20 tokens: days on two CPU cores.

What this module does instead: one pass of the model and SAE over held-out text (see
`heldout.py`), then tensor operations over all latents together.
- Pattern language: the token t0 the latent fires on plus up to two tokens before it,
  each fixed or a wildcard. Four shapes: `t0`, `a t0`, `b _ t0`, `b a t0`.
- Fitting (instead of N2G's truncation and wildcard experiments): on a *fit* split of the
  held-out text, plus the latent's own top contexts when a catalog gives them, count for
  every candidate pattern (each shape read around each token where the latent fires)
  `hits` (it matches and the latent fires) and `matches` (it matches). Whether a context
  token matters is thus measured on text, by whether fixing it makes the prediction more
  precise, rather than by a causal check on the model.
- Selection: a pattern is kept when the lower end of its precision's one-sided 95%
  Wilson interval (z = 1.645) is above tau = 0.5, i.e. when it is right more often than
  wrong with some confidence: 3 hits of 3 matches pass, 2 of 2 or 7 of 10 do not. With
  thousands of candidate contexts, some fire every time by chance in a small sample;
  the interval keeps most of those out. For each (latent, t0) one shape is chosen, the
  one whose kept patterns gain most (gain = hits - tau * matches; ties: the shorter), so
  a latent's patterns never overlap; its prediction "fires" is then a sum of disjoint
  counts and scoring needs no loop over latents.
- Scoring, on the *score* split (other contexts): precision = hits / matches over the
  latent's patterns, recall = hits / tokens where the latent fires.
What is lost against N2G: two tokens of context at most; a token that merely co-occurs
with the firing can enter a pattern; no activation values are predicted, only firing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

SHAPES: tuple[tuple[int, ...], ...] = ((), (1,), (2,), (1, 2))
"""Offsets before the firing token whose token a pattern fixes (the others: wildcards)."""
ANY = -1
"""A wildcard in a pattern row: any token."""
START = -2
"""In a pattern row: no token there (the position is before the text starts)."""
FIRE_FRACTION = 0.5
"""A token counts as firing above this fraction of the latent's max (as N2G does)."""


@dataclass
class Patterns:
    """A pattern explanation of every latent: rows of [latent, t0, t1, t2].

    t0 is the token the latent fires on, t1 / t2 the tokens one / two positions before it:
    a token id, ANY (a wildcard) or START (before the text starts). Rows are sorted by
    latent, then by hits on the fit split (best first). The patterns of one latent do not
    overlap: no token position matches two of them.
    """

    rows: Tensor
    """(P, 4) int64."""
    hits: Tensor
    """(P,) int64: fit-split tokens where the pattern matches and the latent fires."""
    matches: Tensor
    """(P,) int64: fit-split tokens where it matches."""
    n_latents: int

    def of(self, latent: int) -> Tensor:
        """(p, 4) the rows of one latent, best first."""
        lo, hi = torch.searchsorted(
            self.rows[:, 0].contiguous(), torch.tensor([latent, latent + 1])
        )
        return self.rows[int(lo) : int(hi)]

    def counts(self) -> Tensor:
        """(n_latents,) how many patterns each latent has."""
        return torch.bincount(self.rows[:, 0], minlength=self.n_latents)


@dataclass
class Scores:
    """Precision and recall of each latent's patterns on the score split."""

    precision: Tensor
    """(n,) float; NaN where the patterns never match (or the latent has none)."""
    recall: Tensor
    """(n,) float; NaN where the latent never fires on the score split."""
    hits: Tensor
    """(n,) int64."""
    matches: Tensor
    """(n,) int64."""
    fires: Tensor
    """(n,) int64: score-split tokens where the latent fires."""

    def f1(self) -> Tensor:
        p, r = self.precision.nan_to_num(0.0), self.recall.nan_to_num(0.0)
        return torch.where(p + r > 0, 2 * p * r / (p + r).clamp(min=1e-12), torch.zeros_like(p))

    def mean(self, live: Tensor | None = None) -> tuple[float, float]:
        """Mean precision and recall over latents that fire on the score split (and are
        `live`), counting a latent without a matching pattern as precision 0."""
        keep = self.fires > 0
        if live is not None:
            keep &= live
        if not bool(keep.any()):
            return float("nan"), float("nan")
        p = self.precision.nan_to_num(0.0)[keep].mean()
        return float(p), float(self.recall[keep].mean())


# ---------------------------------------------------------------------- keys
def _base(vocab: int) -> int:
    base = vocab + 1  # token ids 0..vocab-1, and `vocab` for START
    if base**3 >= 2**63:
        raise ValueError(f"a vocabulary of {vocab} tokens is too large for pattern keys")
    return base


def shape_keys(tokens: Tensor, vocab: int) -> Tensor:
    """(S, B, T) int64: the key of the pattern of each shape read at each position of
    tokens (B, T). Tokens < 0 (padding) count as START."""
    base = _base(vocab)
    t0 = torch.where(tokens < 0, vocab, tokens).long()  # (B, T)
    start = torch.full_like(t0[:, :1], vocab)
    t1 = torch.cat([start, t0[:, :-1]], dim=1)  # token one before
    t2 = torch.cat([start, t1[:, :-1]], dim=1)  # token two before
    return torch.stack(
        [t0 + base * (t1 if 1 in s else 0) + base**2 * (t2 if 2 in s else 0) for s in SHAPES]
    )


def _decode(keys: Tensor, shape: int, vocab: int) -> Tensor:
    """(m, 3) [t0, t1, t2] of keys of one shape; ANY where the shape has a wildcard."""
    base = _base(vocab)
    parts = [keys % base, (keys // base) % base, keys // base**2]
    out = torch.stack(parts, dim=1)
    out = torch.where(out == vocab, START, out)
    for offset in (1, 2):
        if offset not in SHAPES[shape]:
            out[:, offset] = ANY
    return out


def _encode(rows: Tensor, vocab: int) -> tuple[Tensor, Tensor]:
    """Pattern rows (P, 4) -> (shape index (P,), key (P,))."""
    base = _base(vocab)
    t = torch.where(rows[:, 1:] == START, vocab, rows[:, 1:])  # (P, 3)
    fixed1, fixed2 = rows[:, 2] != ANY, rows[:, 3] != ANY
    shape = fixed1.long() + 2 * fixed2.long()  # () -> 0, (1,) -> 1, (2,) -> 2, (1, 2) -> 3
    key = t[:, 0] + base * t[:, 1] * fixed1 + base**2 * t[:, 2] * fixed2
    return shape, key


# ---------------------------------------------------------------------- events
def firing_events(
    top_acts: Tensor, top_idx: Tensor, thresholds: Tensor, valid: Tensor
) -> tuple[Tensor, Tensor]:
    """(latent, flat position) of every token where a latent fires: its TopK activation
    is positive and at least its threshold. top_acts, top_idx (B, T, k); thresholds (n,);
    valid (B, T) the positions that count."""
    B, T, k = top_idx.shape
    idx = top_idx.long()
    acts = top_acts.float()
    fire = (acts > 0) & (acts >= thresholds.float()[idx]) & valid[..., None]
    pos = torch.arange(B * T).view(B, T, 1).expand(B, T, k)
    return idx[fire], pos[fire]


@dataclass
class Examples:
    """Labelled windows of single latents (a catalog's top contexts): extra fit data."""

    latent: Tensor
    """(E,) the latent each window belongs to."""
    tokens: Tensor
    """(E, W) token ids, -1 outside the text."""
    fires: Tensor
    """(E, W) bool: the latent fires there."""
    valid: Tensor | None = None
    """(E, W) bool: positions that count (default: tokens >= 0). A window cut out of a
    longer text should leave out its first two positions, whose context is unknown."""


# ---------------------------------------------------------------------- fitting
def wilson_lower(hits: Tensor, n: Tensor, z: float) -> Tensor:
    """Lower end of the Wilson score interval of a proportion hits / n."""
    n = n.double().clamp(min=1)
    p = hits.double() / n
    centre = p + z * z / (2 * n)
    spread = z * torch.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def _candidates(keys, valid, ev_lat, ev_pos, examples, ex_keys):
    """For one shape: (latent, key, hits, matches) of every pattern read at a firing."""
    flat = keys.flatten()
    fit_keys = flat[valid.flatten()]
    lat_parts, key_parts, fire_parts = (
        [ev_lat],
        [flat[ev_pos]],
        [torch.ones_like(ev_lat, dtype=torch.bool)],
    )
    if examples is not None:
        E, W = examples.tokens.shape
        inside = examples.tokens >= 0
        if examples.valid is not None:
            inside &= examples.valid
        inside = inside.flatten()
        lat_parts.append(examples.latent[:, None].expand(E, W).flatten()[inside])
        key_parts.append(ex_keys.flatten()[inside])
        fire_parts.append(examples.fires.flatten()[inside])
    lat, key, fire = torch.cat(lat_parts), torch.cat(key_parts), torch.cat(fire_parts)
    universe = torch.unique(torch.cat([fit_keys, key]))  # dense key ids
    U = universe.numel()
    kid = torch.searchsorted(universe, key)
    pair = lat * U + kid
    cand, hits = torch.unique(pair[fire], return_counts=True)  # (m,) (latent, key) pairs that fire
    # matches = occurrences in the fit split (any latent) + in the latent's own windows
    fit_ids, fit_counts = torch.unique(torch.searchsorted(universe, fit_keys), return_counts=True)
    global_count = torch.zeros(U, dtype=torch.long).index_put_((fit_ids,), fit_counts)
    matches = global_count[cand % U]
    n_ev = len(ev_lat)
    if examples is not None and pair.numel() > n_ev:
        ex_pair, ex_count = torch.unique(pair[n_ev:], return_counts=True)
        at = torch.searchsorted(ex_pair, cand).clamp(max=max(ex_pair.numel() - 1, 0))
        matches = matches + torch.where(ex_pair[at] == cand, ex_count[at], 0)
    return cand // U, universe[cand % U], hits, matches


def fit_patterns(
    tokens: Tensor,
    valid: Tensor,
    events: tuple[Tensor, Tensor],
    n_latents: int,
    vocab: int,
    *,
    examples: Examples | None = None,
    tau: float = 0.5,
    z: float = 1.645,
    max_patterns: int = 24,
) -> Patterns:
    """Fit the patterns of every latent (see the module docstring).

    tokens (B, T) the fit split; valid (B, T) positions that count; events (latent, flat
    position) where latents fire (`firing_events`); examples: windows where one latent's
    firing is known (optional). tau, z: see the module docstring. At most max_patterns
    per latent, those with most hits.
    """
    if not 0 < tau < 1:
        raise ValueError(f"tau must be between 0 and 1, got {tau}")
    ev_lat, ev_pos = (e.long() for e in events)
    keys = shape_keys(tokens, vocab)  # (S, B, T)
    ex_keys = shape_keys(examples.tokens, vocab) if examples is not None else None
    base = _base(vocab)
    tables, gains = [], []
    for s in range(len(SHAPES)):
        lat, key, hits, matches = _candidates(
            keys[s], valid, ev_lat, ev_pos, examples, None if ex_keys is None else ex_keys[s]
        )
        keep = wilson_lower(hits, matches, z) > tau
        gain = hits.double() - tau * matches.double()
        cols = [lat, key % base, torch.full_like(lat, s), key, hits, matches]
        tables.append(torch.stack([c[keep] for c in cols], dim=1).numpy())  # (m, 6)
        gains.append(gain[keep].numpy())
    table, gain = np.concatenate(tables), np.concatenate(gains)
    table, gain = _one_shape_per_token(table, gain)
    return _to_patterns(table, n_latents, vocab, max_patterns)


def _one_shape_per_token(table: np.ndarray, gain: np.ndarray):
    """Keep, for each (latent, t0), only the patterns of the shape with the largest total
    gain (ties: the shorter shape), so that a latent's patterns are disjoint."""
    if len(table) == 0:
        return table, gain
    lat, t0, shape = table[:, 0], table[:, 1], table[:, 2]
    groups, inverse = np.unique(np.stack([lat, t0, shape], 1), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    total = np.bincount(inverse, weights=gain)  # (G,) gain of each (latent, t0, shape)
    # best shape per (latent, t0): sort by latent, t0, -total, shape; first of each run
    order = np.lexsort((groups[:, 2], -total, groups[:, 1], groups[:, 0]))
    g = groups[order]
    first = np.ones(len(g), dtype=bool)
    first[1:] = (g[1:, 0] != g[:-1, 0]) | (g[1:, 1] != g[:-1, 1])
    chosen = np.zeros(len(groups), dtype=bool)
    chosen[order[first]] = True
    keep = chosen[inverse]
    return table[keep], gain[keep]


def _to_patterns(table: np.ndarray, n_latents: int, vocab: int, max_patterns: int) -> Patterns:
    if len(table):
        order = np.lexsort((-table[:, 4], table[:, 0]))  # by latent, then hits descending
        table = table[order]
        rank = np.arange(len(table)) - np.searchsorted(table[:, 0], table[:, 0])
        table = table[rank < max_patterns]
    t = torch.from_numpy(table)
    rows = torch.zeros(len(table), 4, dtype=torch.long)
    if len(table):
        rows[:, 0] = t[:, 0]
        for s in range(len(SHAPES)):
            at = t[:, 2] == s
            rows[at, 1:] = _decode(t[at, 3], s, vocab)
    t = t.reshape(-1, 6)
    return Patterns(rows, t[:, 4].clone(), t[:, 5].clone(), n_latents)


# ---------------------------------------------------------------------- scoring
def check_disjoint(patterns: Patterns, vocab: int) -> None:
    """ValueError unless each (latent, t0) uses one shape and no row repeats."""
    shape, key = _encode(patterns.rows, vocab)
    lt = patterns.rows[:, :2]
    uniq_lt = torch.unique(lt, dim=0).shape[0] if len(lt) else 0
    uniq_lts = torch.unique(torch.cat([lt, shape[:, None]], 1), dim=0).shape[0] if len(lt) else 0
    uniq_rows = (
        torch.unique(torch.stack([patterns.rows[:, 0], key], 1), dim=0).shape[0] if len(lt) else 0
    )
    if uniq_lt != uniq_lts or uniq_rows != len(lt):
        raise ValueError("a latent's patterns overlap: give each (latent, token) one shape")


def score_patterns(
    patterns: Patterns,
    tokens: Tensor,
    valid: Tensor,
    events: tuple[Tensor, Tensor],
    vocab: int,
) -> Scores:
    """Precision and recall of every latent's patterns on tokens (B, T) where latents fire
    at `events` (latent, flat position); only `valid` positions count."""
    check_disjoint(patterns, vocab)
    n = patterns.n_latents
    ev_lat, ev_pos = (e.long() for e in events)
    keys = shape_keys(tokens, vocab).flatten(1)  # (S, N)
    shape, pkey = _encode(patterns.rows, vocab)
    plat = patterns.rows[:, 0]
    hits = torch.zeros(n, dtype=torch.long)
    matches = torch.zeros(n, dtype=torch.long)
    for s in range(len(SHAPES)):
        at = shape == s
        if not bool(at.any()):
            continue
        universe, pid = torch.unique(pkey[at], return_inverse=True)
        U = universe.numel()
        # matches: occurrences of each pattern's key among the valid positions
        seen = keys[s][valid.flatten()]
        j = torch.searchsorted(universe, seen).clamp(max=U - 1)
        found = universe[j] == seen
        key_count = torch.bincount(j[found], minlength=U)
        matches.index_add_(0, plat[at], key_count[pid])
        # hits: firing events whose (latent, key) is a pattern
        ek = keys[s][ev_pos]
        j = torch.searchsorted(universe, ek).clamp(max=U - 1)
        known = universe[j] == ek
        ev_pair = ev_lat[known] * U + j[known]
        pat_pair = plat[at] * U + pid
        hit = torch.isin(ev_pair, pat_pair)
        hits += torch.bincount(ev_lat[known][hit], minlength=n)
    fires = torch.bincount(ev_lat, minlength=n)
    nan = torch.tensor(float("nan"))
    precision = torch.where(matches > 0, hits / matches.clamp(min=1), nan)
    recall = torch.where(fires > 0, hits / fires.clamp(min=1), nan)
    return Scores(precision.float(), recall.float(), hits, matches, fires)
