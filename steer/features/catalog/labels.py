"""Short feature labels: the tokens a latent fires on most, then its logit-lens tokens."""

from __future__ import annotations


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
