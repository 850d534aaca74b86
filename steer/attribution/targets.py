"""What is being explained: a token at a position of a context, as a metric on the logits.

A context is a token sequence (a prompt, or a prompt followed by a completion). The target
is the token at position q; the logits that predict it are read at position q - 1. When
the target is the token that would come *after* the context, q = len(context) and the
logits of the last position are read.

The metric is the target's logit, or logit(target) - logit(contrast): the difference
asks "why this token rather than that one" and cancels what raises every token at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Target:
    read_at: int
    """Position whose logits are read (the target is predicted from here)."""
    token: int
    """Token id whose logit is the metric."""
    contrast: int | None = None
    """Token id whose logit is subtracted, or None."""

    def metric(self, logits: Tensor) -> Tensor:
        """logits (..., V) -> metric (...)."""
        m = logits[..., self.token]
        if self.contrast is not None:
            m = m - logits[..., self.contrast]
        return m

    def texts(self, tokenizer) -> tuple[str, str | None]:
        """(the target token's text, the contrast token's or None)."""
        contrast = None if self.contrast is None else tokenizer.decode([self.contrast])
        return tokenizer.decode([self.token]), contrast

    def to_dict(self, text: str, contrast_text: str | None) -> dict:
        """The target as JSON, with its texts (from `texts`); position is 1-based."""
        return {
            "position": self.read_at + 1,
            "read_at": self.read_at,
            "token": self.token,
            "text": text,
            "contrast": self.contrast,
            "contrast_text": contrast_text,
        }


def single_token(tokenizer, text: str, option: str = "--target") -> int:
    """The id of a text that is exactly one token, else a one-line ValueError."""
    if text.startswith("#") and text[1:].isdigit():  # "#1234": a token id
        token = int(text[1:])
        if not 0 <= token < len(tokenizer):
            raise ValueError(f"{option} {text}: token ids run 0..{len(tokenizer) - 1}")
        return token
    if not text:
        raise ValueError(f"{option} is empty: give one token, e.g. ' Paris'")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = ", ".join(repr(tokenizer.decode([i])) for i in ids)
        raise ValueError(
            f"{option} {text!r} is {len(ids)} tokens ({pieces}): give one token "
            "(mind the leading space, e.g. ' Paris'), or a token id as #1234"
        )
    return int(ids[0])


def resolve_target(
    tokenizer,
    ids: Tensor | list[int],
    *,
    position: int | None = None,
    target: str | int | None = None,
    contrast: str | int | None = None,
) -> Target:
    """The Target for a context of T tokens.

    position: the index q of the token to explain (1 <= q <= T, negative counts from the
        end; T means the token after the context). Default T.
    target: the token whose logit is explained (text of one token, "#id", or an id);
        default the token at q (so at q = T a target must be given).
    """
    T = len(ids)
    q = T if position is None else int(position)
    if q < 0:
        q += T
    if not 1 <= q <= T:
        raise ValueError(
            f"position {position} is out of range: the context has {T} tokens; "
            f"explain a token at 1..{T - 1}, or {T} for the next one"
        )
    if target is None:
        if q == T:
            raise ValueError("give a target token: the context ends where the position points")
        token = int(ids[q])
    else:
        token = target if isinstance(target, int) else single_token(tokenizer, target)
    other = None
    if contrast is not None:
        other = (
            contrast
            if isinstance(contrast, int)
            else single_token(tokenizer, contrast, "--contrast")
        )
        if other == token:
            raise ValueError("the contrast token is the target itself: pick another")
    return Target(read_at=q - 1, token=token, contrast=other)


def context_position(
    tokenizer,
    ids: Tensor,
    start: int,
    position: int | None,
    target: str | None,
    with_completion: bool,
) -> int:
    """The absolute index of the token to explain in a prompt (+ completion from `start`),
    as `steer attribute` and `steer circuit` read --position and --target: a position
    counts in the completion when there is one; without one, the target's first occurrence
    in the completion, or (no completion) the token after the prompt (len(ids))."""
    T = len(ids)
    if position is not None:
        base, n = (start, T - start) if with_completion else (0, T)
        if not -n <= position < n:
            where = "completion" if with_completion else "prompt"
            raise ValueError(f"--position {position} is out of range: the {where} has {n} tokens")
        q = base + (position % n)
        if q == 0:
            raise ValueError("--position 0 of the prompt has nothing before it to explain it")
        return q
    if target is None:
        raise ValueError("give --target TOKEN (the token to explain) or --position N")
    if not with_completion:
        return T
    token = single_token(tokenizer, target)
    hits = [i for i in range(start, T) if int(ids[i]) == token]
    if not hits:
        raise ValueError(f"--target {target!r} is not in the completion: give --position N")
    return hits[0]


def as_ids(ids: Tensor | list[int]) -> Tensor:
    out = torch.as_tensor(ids, dtype=torch.long).flatten()
    if out.numel() == 0:
        raise ValueError("no tokens: the text is empty")
    return out
