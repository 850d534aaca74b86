"""Batches of a fixed number of tokens from a stream of activation batches of any size,
for the trainer (sae/train/trainer.py)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


class Batcher:
    """Re-chunks a stream of (N_i, *shape) batches into (size, *shape) batches (the last may
    be short); shape is (d,), or (D, d) for D depths at once.

    Tokens taken from the source but not yet trained on stay in `pending`, which is saved
    in the training state so that a resumed run sees exactly the same batches."""

    def __init__(
        self, it: Iterator, size: int, shape: tuple, device: torch.device, pending: Tensor | None
    ):
        self.it, self.size, self.shape, self.device = it, size, tuple(shape), device
        self.pending: list[Tensor] = (
            [pending.to(device)] if pending is not None and len(pending) else []
        )
        self.n_pending = sum(len(p) for p in self.pending)
        self.exhausted = False

    def next(self) -> Tensor | None:
        while self.n_pending < self.size and not self.exhausted:
            try:
                batch = next(self.it)
            except StopIteration:
                self.exhausted = True
                break
            if not isinstance(batch, Tensor) or tuple(batch.shape[1:]) != self.shape:
                shape = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
                want = ", ".join(["N", *map(str, self.shape)])
                raise ValueError(f"activation batches must be ({want}) tensors, got {shape}")
            if len(batch) == 0:
                continue
            batch = batch.to(self.device, non_blocking=True)
            if not self.pending and len(batch) == self.size:
                return batch  # the usual case: the source already yields full batches
            self.pending.append(batch)
            self.n_pending += len(batch)
        if self.n_pending == 0:
            return None
        flat = torch.cat(self.pending) if len(self.pending) > 1 else self.pending[0]
        out, rest = flat[: self.size], flat[self.size :]
        self.pending = [rest] if len(rest) else []
        self.n_pending = len(rest)
        return out
