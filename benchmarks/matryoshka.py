"""Matryoshka SAE vs an independent family trained on the same tokens (issue 16).

For every level of each: FVU and dead fraction on held-out tokens (wiki-07 is never trained
on), and the feature web's share of features added at each level that have a parent by
decoder cosine, by co-activation, and by both (steer.features.web, on the same tokens).
With --absorption, a small first-letter probe (after Chanin et al. 2024): on held-out
word-start tokens (" s…"), the widest level's best latent for "starts with L" (by F1) and
how often it stays silent on words starting with L (its misses: absorbed by a more
specific latent, or dropped), averaged over letters with >= 40 such tokens.

    python benchmarks/matryoshka.py --matryoshka runs/web/matryoshka/9216-k32 \
        --independent runs/web/independent --tokens 16k
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sae import TopKSAE
from steer.features.web import Level, build_web, family_levels
from steer.lm.activations import ActivationStream
from steer.lm.data import TokenContexts
from steer.lm.models import load_model, parse_hookpoint

HELDOUT = "/work/shared/corpus/wikipedia-en/wiki-07.jsonl.xz"


def heldout_activations(sae: TopKSAE, corpus: str, n_tokens: int) -> torch.Tensor:
    lm = load_model(sae.cfg.model_name)
    contexts = TokenContexts(corpus, lm.tokenizer, ctx_len=128, split="train")
    stream = ActivationStream(lm, parse_hookpoint(sae.cfg.hookpoint), contexts, batch_tokens=2048)
    got, total = [], 0
    for batch in stream:
        got.append(batch)
        total += len(batch)
        if total >= n_tokens:
            break
    return torch.cat(got)[:n_tokens]  # (N, d)


@torch.no_grad()
def level_metrics(sae: TopKSAE, x: torch.Tensor) -> dict:
    fired = torch.zeros(sae.n_latents, dtype=torch.bool)
    err = var = 0.0
    mean = x.mean(0)
    for chunk in x.split(2048):
        acts, idx = sae.encode(chunk)
        fired[idx[acts > 0]] = True
        err += float((chunk - sae.decode(acts, idx)).pow(2).sum())
        var += float((chunk - mean).pow(2).sum())
    return {"fvu": err / var, "dead": float((~fired).float().mean())}


def family(levels: list[Level], x: torch.Tensor) -> list[dict]:
    saes = [TopKSAE.load(lv.path) for lv in levels]
    rows = [{"level": lv.name, **level_metrics(s, x)} for lv, s in zip(levels, saes, strict=True)]
    web = build_web(levels, saes, x.split(2048))
    for row, summary in zip(rows, web.summary(), strict=True):
        row |= {k: v for k, v in summary.items() if k.startswith("parent_by")}
    return rows


@torch.no_grad()
def first_letter_tokens(lm, layer: int, corpus: str, n_tokens: int):
    """Residuals (N, d) of word-start tokens and their first letters (N,) as 0..25."""
    contexts = TokenContexts(corpus, lm.tokenizer, ctx_len=128, split="train")
    xs, letters, seen, batch = [], [], 0, []
    for ctx in contexts:
        batch.append(ctx)
        if len(batch) < 8:
            continue
        ids = torch.stack(batch)[:, 1:]  # position 0 skipped, as everywhere
        resid = lm.residual(torch.stack(batch), layer)[:, 1:]  # (B, T-1, d)
        pieces = lm.tokenizer.convert_ids_to_tokens(ids.reshape(-1).tolist())
        first = [
            p[1].lower() if len(p) > 2 and p[0] == "Ġ" and p[1].isascii() and p[1].isalpha() else ""
            for p in pieces
        ]
        keep = torch.tensor([bool(f) for f in first])
        xs.append(resid.reshape(-1, resid.shape[-1])[keep].float())
        letters += [ord(f) - 97 for f in first if f]
        seen += ids.numel()
        batch = []
        if seen >= n_tokens:
            break
    return torch.cat(xs), torch.tensor(letters)


@torch.no_grad()
def letter_probe(sae: TopKSAE, x: torch.Tensor, letters: torch.Tensor) -> dict:
    fires = sae.encode_dense(x) > 0  # (N, n)
    f1s, misses = [], []
    for letter in range(26):
        y = letters == letter
        if int(y.sum()) < 40:
            continue
        tp = (fires & y[:, None]).sum(0).float()  # (n,)
        f1 = 2 * tp / (fires.sum(0) + y.sum()).clamp_min(1)
        best = int(f1.argmax())
        f1s.append(float(f1[best]))
        misses.append(1 - float(tp[best]) / int(y.sum()))
    return {"letters": len(f1s), "f1": sum(f1s) / len(f1s), "missed": sum(misses) / len(misses)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matryoshka", required=True, help="the Matryoshka SAE folder")
    parser.add_argument("--independent", required=True, help="the run folder of the family")
    parser.add_argument("--tokens", default="16k")
    parser.add_argument("--corpus", default=HELDOUT)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--absorption", default=None, help="tokens for the first-letter probe")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = (
        int(float(args.tokens.lower().rstrip("k")) * 1000)
        if "k" in args.tokens
        else int(args.tokens)
    )
    m_levels = family_levels(args.matryoshka)
    members = sorted(Path(args.independent).glob("*/cfg.json"))
    i_levels = family_levels(members[-1].parent)
    x = (
        None
        if args.absorption
        else heldout_activations(TopKSAE.load(m_levels[-1].path), args.corpus, n)
    )
    if args.absorption:
        widest = TopKSAE.load(m_levels[-1].path)
        lm = load_model(widest.cfg.model_name)
        layer = parse_hookpoint(widest.cfg.hookpoint)
        xl, letters = first_letter_tokens(lm, layer, args.corpus, _count(args.absorption))
        print(f"first-letter probe: {len(xl):,} word-start tokens")
        for name, lv in (("matryoshka", m_levels[-1]), ("independent", i_levels[-1])):
            print(name, lv.name, json.dumps(letter_probe(TopKSAE.load(lv.path), xl, letters)))
        return
    out = {"tokens": len(x), "matryoshka": family(m_levels, x), "independent": family(i_levels, x)}
    print(json.dumps(out, indent=1))
    print("\n| family | level | FVU | dead | parent by cos | by P | by both |")
    print("|---|---|---|---|---|---|---|")
    for name in ("matryoshka", "independent"):
        for row in out[name]:
            shares = [
                f"{row[k]:.1%}" if k in row else "–"
                for k in ("parent_by_cos", "parent_by_coact", "parent_by_both")
            ]
            print(
                f"| {name} | {row['level']} | {row['fvu']:.3f} | {row['dead']:.1%} | "
                + " | ".join(shares)
                + " |"
            )


def _count(text: str) -> int:
    text = text.lower()
    return int(float(text[:-1]) * 1000) if text.endswith("k") else int(text)


if __name__ == "__main__":
    main()
