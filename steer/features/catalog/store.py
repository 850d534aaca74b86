"""The feature catalog: what each SAE latent does, measured on a corpus sample.

Per latent: firing frequency, mean activation (over the tokens where it fires), max
activation, the top activating contexts (a token window around each context's max, with
the latent's activation on every token), logit-lens tokens, and a short label.

Logit lens. A latent adds dir_i = W_dec[i] to a residual whose norm is much larger, so
what it changes in the logits is the linear part of the final norm applied to dir_i:
    logits_i = W_U (g ⊙ center(dir_i))
with g the norm's weight (1 + weight for Gemma), center() the mean subtraction of a
LayerNorm (identity for RMSNorm). The norm's bias and its division by the residual's
RMS are left out: the bias does not depend on the latent, and the RMS is a positive
scalar that does not change which tokens rank first.

Indexing is one pass over the corpus: a batch of contexts runs up to the SAE's block
(bf16 autocast), is encoded, and per-latent statistics and the running top contexts are
updated with tensor operations (scatter-max per context, one topk over (n, C + B)), never
a Python loop over latents.

Storage, in `<sae folder>/catalog/`: `catalog.safetensors` (statistics, context token ids
and activations, logit-lens token ids) and `catalog.json` (metadata, labels, and the
strings of the token ids used). ~18 MB for 18k latents, loads in well under a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sae import TopKSAE, atomic_write
from steer.lm.models import LoadedModel
from steer.steering import sae_layer, strength_scales
from steer.steering.readouts import latent_codes, max_over_tokens

CATALOG_DIR = "catalog"
TENSORS_FILE = "catalog.safetensors"
META_FILE = "catalog.json"
FORMAT_VERSION = 2
F16_MAX = 65504.0
BYTE_TOKEN_RE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


# ---------------------------------------------------------------------- token strings
# Catalog token strings are stored as each token's UTF-8 *bytes* (held in a str through
# latin-1), because byte-level tokenizers split characters: "–" is three tokens, each
# undecodable alone. A window is decoded token by token, a character showing on the
# token that completes it.
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (byte-level BPE token spelling)."""
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def token_bytes(tokenizer, ids: list[int]) -> list[bytes]:
    """The bytes each token stands for (special tokens: their text)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    byte_level = type(decoder).__name__ == "ByteLevel"
    inverse = {c: b for b, c in _byte_to_unicode().items()} if byte_level else {}
    special = set(getattr(tokenizer, "all_special_ids", [])) | set(
        getattr(tokenizer, "added_tokens_decoder", {})
    )
    out = []
    for i, spelled in zip(ids, tokenizer.convert_ids_to_tokens(list(ids)), strict=True):
        spelled = spelled or ""
        if i in special:
            out.append(spelled.encode())
        elif byte_level and all(c in inverse for c in spelled):
            out.append(bytes(inverse[c] for c in spelled))
        elif (m := BYTE_TOKEN_RE.match(spelled)) is not None:  # SentencePiece byte fallback
            out.append(bytes([int(m.group(1), 16)]))
        elif "\u2581" in spelled:  # SentencePiece word start
            out.append(spelled.replace("\u2581", " ").encode())
        else:
            out.append(tokenizer.decode([i]).encode())
    return out


def decode_pieces(pieces: list[bytes]) -> list[str]:
    """Per-token text of a token window: a split character shows on its last token."""
    out, pending = [], b""
    for piece in pieces:
        pending += piece
        try:
            out.append(pending.decode("utf-8"))
            pending = b""
        except UnicodeDecodeError as err:
            if err.reason == "unexpected end of data" and len(pending) < 4:
                out.append("")  # wait for the rest of the character
            else:  # a window starting mid-character, or bad bytes
                out.append(pending.decode("utf-8", "replace"))
                pending = b""
    return out


@dataclass
class ContextExample:
    tokens: list[str]
    """The token strings of the window."""
    acts: list[float]
    """The latent's activation on each token."""
    max_pos: int
    """Index in `tokens` of the context's maximum activation."""

    @property
    def max_act(self) -> float:
        return self.acts[self.max_pos]

    @property
    def text(self) -> str:
        return "".join(self.tokens)


@dataclass
class FeatureEntry:
    index: int
    label: str
    frequency: float
    """Fraction of corpus tokens on which the latent is active (in the TopK, > 0)."""
    mean_act: float
    """Mean activation over the tokens where it is active."""
    max_act: float
    top_tokens: list[str]
    """Logit lens: tokens whose logits its decoder direction raises most."""
    bottom_tokens: list[str]
    """Logit lens: tokens whose logits it lowers most."""
    contexts: list[ContextExample] = field(default_factory=list)
    """Top activating contexts, strongest first."""


# ---------------------------------------------------------------------- the catalog
def catalog_dir(sae_dir: str | Path) -> Path:
    return Path(sae_dir) / CATALOG_DIR


def _resolve(folder: str | Path) -> Path:
    """A catalog folder, or an SAE folder holding one in catalog/."""
    folder = Path(folder)
    if not (folder / META_FILE).is_file() and (folder / CATALOG_DIR / META_FILE).is_file():
        return folder / CATALOG_DIR
    return folder


def sae_fingerprint(sae: TopKSAE) -> str:
    """A short hash of the first decoder rows: tells a catalog built for another SAE."""
    rows = sae.W_dec.detach()[:8].float().cpu().contiguous()
    return hashlib.sha1(rows.numpy().tobytes()).hexdigest()[:16]


class FeatureCatalog:
    def __init__(
        self, tensors: dict[str, Tensor], labels: list[str], pieces: list[str], meta: dict
    ):
        """pieces: the bytes of each catalog token id, as latin-1 strings (see token_bytes)."""
        self.tensors = tensors
        self.labels = labels
        self.pieces = pieces
        self.meta = meta
        self._search_text: list[str] | None = None

    # ------------------------------------------------------------------ access
    @property
    def n_latents(self) -> int:
        return self.tensors["max_act"].shape[0]

    @property
    def max_acts(self) -> Tensor:
        return self.tensors["max_act"]

    @property
    def frequency(self) -> Tensor:
        return self.tensors["frequency"]

    @property
    def mean_acts(self) -> Tensor:
        return self.tensors["mean_act"]

    @property
    def window_before(self) -> int:
        return int(self.meta.get("window", [16, 4])[0])

    def label(self, i: int) -> str:
        self._check(i)
        return self.labels[i]

    def matches(self, sae: TopKSAE) -> bool:
        """Was this catalog built for this SAE?"""
        return self.n_latents == sae.n_latents and self.meta.get("sae_fingerprint") in (
            None,
            sae_fingerprint(sae),
        )

    def _check(self, i: int) -> None:
        if not 0 <= i < self.n_latents:
            raise ValueError(
                f"feature {i} is out of range: the SAE has {self.n_latents} latents (0..{self.n_latents - 1})"
            )

    def _strings(self, ids: Tensor) -> list[str]:
        """Each token's own text (a partial character shows as U+FFFD)."""
        return [
            self.pieces[j].encode("latin-1").decode("utf-8", "replace")
            for j in ids.tolist()
            if j >= 0
        ]

    def _window(self, ids: Tensor) -> list[str]:
        """A window's per-token texts, characters split across tokens kept whole."""
        return decode_pieces([self.pieces[j].encode("latin-1") for j in ids.tolist() if j >= 0])

    def entry(self, i: int) -> FeatureEntry:
        self._check(i)
        t = self.tensors
        contexts = []
        for c in range(t["ctx_values"].shape[1]):
            if float(t["ctx_values"][i, c]) <= 0:
                continue
            toks = t["ctx_tokens"][i, c]  # (W,) -1 = outside the context
            valid = toks >= 0
            left_pad = int((~valid[: self.window_before]).sum())
            contexts.append(
                ContextExample(
                    tokens=self._window(toks),
                    acts=[round(a, 4) for a in t["ctx_acts"][i, c][valid].float().tolist()],
                    max_pos=self.window_before - left_pad,
                )
            )
        return FeatureEntry(
            index=i,
            label=self.labels[i],
            frequency=float(t["frequency"][i]),
            mean_act=float(t["mean_act"][i]),
            max_act=float(t["max_act"][i]),
            top_tokens=self._strings(t["lens_top"][i]),
            bottom_tokens=self._strings(t["lens_bottom"][i]),
            contexts=contexts,
        )

    # ------------------------------------------------------------------ search
    def _build_search_text(self) -> list[str]:
        """One lowercase string per latent: its contexts, then its max tokens, tab-separated."""
        import numpy as np

        table = np.array([*self.pieces, ""], dtype=object)  # index -1 -> ""
        toks = self.tensors["ctx_tokens"].numpy()
        n, C, _ = toks.shape
        words = table[toks]  # (n, C, W) latin-1 byte strings
        peak = table[toks[:, :, self.window_before]]  # (n, C) the max tokens
        texts = []
        for i in range(n):
            contexts = "\n".join("".join(words[i, c]) for c in range(C))
            raw = contexts + "\t" + "\n".join(peak[i])
            texts.append(raw.encode("latin-1").decode("utf-8", "replace").lower())
        return texts

    def search(self, query: str, limit: int = 20) -> list[FeatureEntry]:
        """Latents whose label, logit-lens tokens or top contexts contain `query`
        (case-insensitive), best first: label > the activating tokens > logit-lens
        tokens > contexts; ties by max activation."""
        q = query.strip().lower()
        if not q:
            return []
        if self._search_text is None:
            self._search_text = self._build_search_text()
        n_ctx = max(1, self.tensors["ctx_values"].shape[1])
        scored = []
        for i in range(self.n_latents):
            text = self._search_text[i]
            if q not in text and q not in self.labels[i].lower():
                lens = "".join(self._strings(self.tensors["lens_top"][i])).lower()
                if q not in lens:
                    continue
            contexts, _, peaks = text.partition("\t")
            lens = " ".join(self._strings(self.tensors["lens_top"][i])).lower()
            score = (
                4.0 * (q in self.labels[i].lower())
                + 2.0 * sum(q in p for p in peaks.split("\n")) / n_ctx
                + 1.0 * (q in lens)
                + 1.0 * sum(q in c for c in contexts.split("\n")) / n_ctx
            )
            scored.append((score, float(self.max_acts[i]), i))
        scored.sort(reverse=True)
        return [self.entry(i) for _, _, i in scored[:limit]]

    # ------------------------------------------------------------------ files
    @staticmethod
    def exists(folder: str | Path) -> bool:
        folder = _resolve(folder)
        return (folder / META_FILE).is_file() and (folder / TENSORS_FILE).is_file()

    def save(self, folder: str | Path) -> Path:
        """Write into `folder` (an SAE folder: into its catalog/). Returns the folder."""
        folder = Path(folder)
        if (folder / "cfg.json").is_file() and (folder / "sae.safetensors").is_file():
            folder = folder / CATALOG_DIR
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous().cpu() for k, v in self.tensors.items()}
        meta = {
            **self.meta,
            "version": FORMAT_VERSION,
            "labels": self.labels,
            "pieces": self.pieces,
        }
        atomic_write(folder / TENSORS_FILE, lambda tmp: save_file(tensors, tmp))
        atomic_write(
            folder / META_FILE,
            lambda tmp: Path(tmp).write_text(json.dumps(meta, ensure_ascii=False)),
        )
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> FeatureCatalog:
        """Load a catalog folder, or the catalog/ of an SAE folder. ValueError if absent or bad."""
        folder = _resolve(folder)
        if not cls.exists(folder):
            raise ValueError(f"no feature catalog in {folder}: build one with `steer index`")
        try:
            meta = json.loads((folder / META_FILE).read_text())
            tensors = load_file(str(folder / TENSORS_FILE))
            labels, pieces = meta.pop("labels"), meta.pop("pieces")
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"corrupt feature catalog in {folder}: {err}") from None
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"feature catalog in {folder} has format {meta.get('version')}, expected {FORMAT_VERSION}: rebuild it"
            )
        return cls(tensors, labels, pieces, meta)


# ---------------------------------------------------------------------- logit lens
def logit_lens(
    lm: LoadedModel, directions: Tensor, n: int = 10, chunk: int = 1024, fast: bool = True
) -> tuple[Tensor, Tensor]:
    """Top and bottom n token ids (m, n) of each direction (m, d), see the module docstring."""
    norm = lm.final_norm
    weight = getattr(norm, "weight", None)
    w_u = lm.unembed.weight.detach()  # (V, d)
    dtype = torch.bfloat16 if fast and w_u.dtype == torch.float32 else w_u.dtype
    w_u = w_u.to(dtype)
    gain = None
    if weight is not None:
        gain = weight.detach().float() + (1.0 if "gemma" in type(norm).__name__.lower() else 0.0)
    centered = isinstance(norm, nn.LayerNorm) or getattr(norm, "bias", None) is not None
    tops, bottoms = [], []
    for start in range(0, directions.shape[0], chunk):
        v = directions[start : start + chunk].detach().float().to(w_u.device)  # (c, d)
        if centered:
            v = v - v.mean(dim=-1, keepdim=True)
        if gain is not None:
            v = v * gain.to(v.device)
        logits = v.to(dtype) @ w_u.T  # (c, V)
        tops.append(logits.topk(n, dim=-1).indices.cpu())
        bottoms.append(logits.topk(n, dim=-1, largest=False).indices.cpu())
    return torch.cat(tops), torch.cat(bottoms)


# ---------------------------------------------------------------------- labels
def _show(piece: str) -> str:
    s = piece.strip()
    if s:
        return s[:20]
    return "⏎" if "\n" in piece else "␣" if piece else "∅"


def make_label(
    peak_pieces: list[str], peak_weights: list[float], lens_pieces: list[str], fired: bool
) -> str:
    """`Bridge/bridge → Francisco`: the tokens it fires on most (by summed activation over
    its top contexts), then its top logit-lens tokens."""
    if not fired:
        return "dead (never fired)"
    weights: dict[str, float] = {}
    shown: dict[str, str] = {}
    for piece, w in zip(peak_pieces, peak_weights, strict=True):
        key = _show(piece).lower()
        weights[key] = weights.get(key, 0.0) + w
        shown.setdefault(key, _show(piece))
    fires = [shown[k] for k, _ in sorted(weights.items(), key=lambda kv: -kv[1])[:2]]
    lens = [s for s in (_show(p) for p in lens_pieces) if s not in "⏎␣∅" and "\ufffd" not in s][:2]
    label = "/".join(fires) if fires else "?"
    return f"{label} → {', '.join(lens)}" if lens else label


# ---------------------------------------------------------------------- building
def _pack_texts(texts: Iterable[str], tokenizer, ctx_len: int) -> Iterator[Tensor]:
    """Tokenize documents, join them with EOS and cut contexts of ctx_len tokens."""
    eos = tokenizer.eos_token_id
    buffer: list[int] = []
    for text in texts:
        if not text:
            continue
        buffer.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            buffer.append(eos)
        while len(buffer) >= ctx_len:
            yield torch.tensor(buffer[:ctx_len], dtype=torch.long)
            del buffer[:ctx_len]


def _contexts(
    source, tokenizer, ctx_len: int, seed: int, text_field: str = "text"
) -> Iterator[Tensor]:
    if isinstance(source, (str, Path)):
        from steer.lm.data import TokenContexts

        return iter(
            TokenContexts(source, tokenizer, ctx_len=ctx_len, text_field=text_field, seed=seed)
        )
    if isinstance(source, Tensor):
        return iter(source if source.dim() == 2 else source[None])
    it = iter(source)
    first = next(it, None)
    if first is None:
        raise ValueError("the corpus is empty")
    rest = itertools.chain([first], it)
    if isinstance(first, str):
        return _pack_texts(rest, tokenizer, ctx_len)
    return (torch.as_tensor(c, dtype=torch.long) for c in rest)


class _TopContexts:
    """Running top-C contexts per latent, kept on tensors.

    For each latent: values (n, C) of the best contexts' max activations, and for each a
    window of token ids (n, C, W) around that max (-1 outside the context) with the
    latent's activations on it (n, C, W).
    """

    def __init__(self, n: int, C: int, before: int, after: int):
        self.C, self.before, self.after, self.W = C, before, after, before + 1 + after
        self.values = torch.full((n, C), -1.0)
        self.tokens = torch.full((n, C, self.W), -1, dtype=torch.int32)
        self.acts = torch.zeros(n, C, self.W)

    def update(self, ids: Tensor, acts: Tensor, idx: Tensor, skip: int) -> None:
        """ids (B, T) tokens; acts, idx (B, T - skip, k) TopK codes of positions skip..T-1."""
        B, T = ids.shape
        n, C, W = *self.values.shape, self.W
        k = acts.shape[-1]
        # Per (context, latent): max activation and the first position reaching it.
        key = (torch.arange(B)[:, None, None] * n + idx).flatten()  # (B*Tm*k,)
        flat = acts.flatten()
        dense = torch.zeros(B * n).scatter_reduce(0, key, flat, "amax")  # (B*n,)
        pos_of = (torch.arange(skip, T)[None, :, None]).expand_as(idx).flatten()
        at_max = (flat == dense[key]) & (flat > 0)
        pos = torch.full((B * n,), T).scatter_reduce(0, key[at_max], pos_of[at_max], "amin")
        cand = dense.view(B, n).T  # (n, B)
        cand = torch.where(cand > 0, cand, torch.full_like(cand, -1.0))
        top_vals, sel = torch.cat([self.values, cand], dim=1).topk(C, dim=1)  # (n, C)
        keep = sel.clamp(max=C - 1)[..., None].expand(-1, -1, W)
        tokens, new_acts = self.tokens.gather(1, keep), self.acts.gather(1, keep)
        lat, slot = ((sel >= C) & (top_vals > 0)).nonzero(as_tuple=True)  # entries from this batch
        # Dense (B, T, k) codes with the skipped positions empty, to read windows from.
        full_idx = torch.full((B, T, k), -1, dtype=idx.dtype)
        full_acts = torch.zeros(B, T, k)
        full_idx[:, skip:], full_acts[:, skip:] = idx, acts
        offsets = torch.arange(-self.before, self.after + 1)  # (W,)
        for s in range(0, lat.numel(), 8192):  # bounded memory: (chunk, W, k)
            la, sl = lat[s : s + 8192], slot[s : s + 8192]
            b = sel[la, sl] - C
            wpos = pos.view(B, n)[b, la][:, None] + offsets  # (E, W)
            valid = (wpos >= 0) & (wpos < T)
            wpos = wpos.clamp(0, T - 1)
            tok = ids[b[:, None], wpos].to(torch.int32).masked_fill(~valid, -1)
            hit = full_idx[b[:, None], wpos] == la[:, None, None]  # (E, W, k)
            win = (full_acts[b[:, None], wpos] * hit).sum(-1) * valid  # (E, W)
            tokens[la, sl], new_acts[la, sl] = tok, win
        self.values, self.tokens, self.acts = top_vals, tokens, new_acts


@torch.inference_mode()
def build_catalog(
    lm: LoadedModel,
    sae: TopKSAE,
    source,
    n_tokens: int = 200_000,
    *,
    ctx_len: int = 128,
    batch_size: int = 16,
    n_contexts: int = 8,
    window: tuple[int, int] = (16, 4),
    n_logit: int = 10,
    skip_first: int = 1,
    autocast: bool = True,
    seed: int = 0,
    text_field: str = "text",
    progress: Callable[[int, int], None] | None = None,
) -> FeatureCatalog:
    """Index `n_tokens` tokens of `source` (a corpus path / hf: spec for steer.lm.data, an
    iterable of texts, or of token contexts (T,)) and return the catalog.

    progress(tokens_done, n_tokens) is called after every batch.
    """
    layer = sae_layer(lm, sae)
    if n_tokens < 1:
        raise ValueError(f"--tokens must be positive, got {n_tokens}")
    n, d, dev = sae.n_latents, sae.d_in, lm.device
    use_autocast = autocast and lm.dtype == torch.float32 and dev.type in ("cpu", "cuda")
    amp = (
        (lambda: torch.autocast(dev.type, dtype=torch.bfloat16))
        if use_autocast
        else contextlib.nullcontext
    )
    count = torch.zeros(n, dtype=torch.float64)
    total = torch.zeros(n, dtype=torch.float64)
    max_act = torch.zeros(n)
    top = _TopContexts(n, n_contexts, *window)
    seen = 0  # tokens counted in the statistics
    done = 0  # tokens read
    contexts = _contexts(source, lm.tokenizer, ctx_len, seed, text_field)
    while done < n_tokens:
        wanted = min(batch_size, -(-(n_tokens - done) // ctx_len))  # do not overshoot n_tokens
        batch = list(itertools.islice(contexts, wanted))
        if not batch:
            break
        ids = torch.stack(batch)  # (B, T)
        B, T = ids.shape
        if T <= skip_first:
            raise ValueError(
                f"contexts of {T} tokens are too short (the first {skip_first} are skipped)"
            )
        with amp():
            resid = lm.residual(ids.to(dev), layer)[:, skip_first:]  # (B, Tm, d)
            acts, idx = sae.encode(resid.reshape(-1, d).to(sae.device))  # (B*Tm, k)
        acts, idx = acts.float().cpu(), idx.cpu()
        fired = acts > 0
        count += torch.bincount(idx[fired], minlength=n)
        total += torch.bincount(idx[fired], weights=acts[fired].double(), minlength=n)
        max_act = max_act.scatter_reduce(0, idx.flatten(), acts.flatten(), "amax")
        top.update(
            ids, acts.view(B, T - skip_first, -1), idx.view(B, T - skip_first, -1), skip_first
        )
        seen += B * (T - skip_first)
        done += B * T
        if progress is not None:
            progress(min(done, n_tokens), n_tokens)
    if seen == 0:
        raise ValueError("the corpus gave no tokens to index")

    lens_top, lens_bottom = logit_lens(
        lm, sae.decoder_directions(torch.arange(n)), n_logit, fast=use_autocast
    )
    # Compact vocabulary: only the token strings the catalog uses are stored.
    used = torch.unique(
        torch.cat([top.tokens[top.tokens >= 0].long(), lens_top.flatten(), lens_bottom.flatten()])
    )
    remap = torch.full((int(used.max()) + 1 if used.numel() else 1,), -1, dtype=torch.int32)
    remap[used] = torch.arange(used.numel(), dtype=torch.int32)
    pieces = [b.decode("latin-1") for b in token_bytes(lm.tokenizer, used.tolist())]
    texts = [b.encode("latin-1").decode("utf-8", "replace") for b in pieces]

    def compact(t: Tensor) -> Tensor:
        return torch.where(
            t >= 0, remap[t.long().clamp(min=0)], torch.full_like(t, -1, dtype=torch.int32)
        )

    ctx_tokens, lens_top_c, lens_bottom_c = (
        compact(top.tokens),
        compact(lens_top),
        compact(lens_bottom),
    )
    labels = []
    before = window[0]
    peak_ids = ctx_tokens[:, :, before].tolist()
    values = top.values.tolist()
    lens_ids = lens_top_c[:, :3].tolist()
    fired_any = (count > 0).tolist()
    for i in range(n):
        peaks = [
            (texts[t], v) for t, v in zip(peak_ids[i], values[i], strict=True) if v > 0 and t >= 0
        ]
        labels.append(
            make_label(
                [p for p, _ in peaks],
                [v for _, v in peaks],
                [texts[t] for t in lens_ids[i]],
                fired_any[i],
            )
        )

    tensors = {
        "frequency": (count / seen).float(),
        "mean_act": (total / count.clamp(min=1)).float(),
        "max_act": max_act,
        "ctx_values": top.values.clamp(min=0),
        "ctx_tokens": ctx_tokens,
        "ctx_acts": top.acts.clamp(-F16_MAX, F16_MAX).half(),
        "lens_top": lens_top_c,
        "lens_bottom": lens_bottom_c,
    }
    meta = {
        "model": lm.name,
        "hookpoint": sae.cfg.hookpoint,
        "n_latents": n,
        "n_tokens": seen,
        "ctx_len": T,
        "window": list(window),
        "skip_first": skip_first,
        "sae_fingerprint": sae_fingerprint(sae),
        "logit_lens": "W_U (norm weight ⊙ centered(W_dec[i])): no norm bias, no RMS division",
        "corpus": str(source) if isinstance(source, (str, Path)) else type(source).__name__,
    }
    return FeatureCatalog(tensors, labels, pieces, meta)


# ---------------------------------------------------------------------- search by text
def latents_for_text(
    lm: LoadedModel, sae: TopKSAE, text: str, n: int = 20, catalog: FeatureCatalog | None = None
) -> list[tuple[int, float]]:
    """The latents that fire most on `text` (max over its tokens, the first skipped).

    Without a catalog: (latent, activation), by activation. With one: (latent, relative
    activation), i.e. activation / the latent's max on the corpus (the unit of steering
    strengths), ranked by relative activation x log(1 + 1/frequency): like tf-idf, this
    favours latents specific to the text over dense ones that fire near their max on
    every text.
    """
    if not text or not text.strip():
        raise ValueError("the text is empty")
    ids = lm.tokenizer(text)["input_ids"]
    dense = max_over_tokens(sae, latent_codes(lm, sae, ids)).cpu()  # (n_latents,)
    value, key = dense, dense
    if catalog is not None:
        if catalog.n_latents != sae.n_latents:
            raise ValueError(
                f"the catalog has {catalog.n_latents} latents but the SAE has {sae.n_latents}: rebuild it with `steer index`"
            )
        value = dense / strength_scales(list(range(sae.n_latents)), catalog.max_acts)
        floor = 1.0 / max(int(catalog.meta.get("n_tokens", 0)), 1)
        key = value * torch.log1p(1.0 / catalog.frequency.float().clamp(min=floor))
    order = key.topk(min(n, key.numel())).indices
    return [
        (int(i), float(value[i]))
        for i in order
        if float(key[i]) > 0 and math.isfinite(float(value[i]))
    ]
