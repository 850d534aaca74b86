"""Stream residual-stream activations of a model at one layer, as (N, d) batches, or at
several layers from one forward pass, as (N, D, d) batches (D = number of layers).

The model runs only up to the hooked block (`LoadedModel.residual`). Contexts are
processed a chunk at a time; the tokens of a chunk are shuffled together (mixing
positions of many contexts, as SAE training wants), and the first position of every
context (BOS-like, with a huge norm) is dropped. Memory holds one chunk, whatever the
corpus size.

Batches are cut from one global token sequence (chunk after chunk), so the stream's
position is a single number, `tokens_yielded`, and resuming recomputes only the chunk
that position falls in.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from .models import LoadedModel


class ActivationStream:
    def __init__(
        self,
        lm: LoadedModel,
        layer: int | list[int],
        contexts: Iterable[Tensor],
        batch_tokens: int = 4096,
        chunk_contexts: int = 256,
        model_batch: int = 16,
        seed: int = 0,
        skip_first: int = 1,
        autocast: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        """
        layer: one block, or a list of blocks read from one forward pass (it stops after
            the deepest); a list yields (N, D, d) batches in the list's order.
        contexts: re-iterable, deterministic (e.g. steer.lm.data.TokenContexts), each (T,).
        chunk_contexts: contexts whose activations are shuffled together (memory bound:
            chunk_contexts * (T - skip_first) * d floats).
        model_batch: contexts per forward pass.
        autocast: run the model under bf16 autocast on CPU / CUDA when its weights are fp32.
        rank, world_size: this process reads chunks rank, rank + world_size, ... (data parallel).
        """
        self.lm = lm
        if isinstance(layer, int):
            self.layer: int | list[int] = lm.check_layer(layer)
        else:
            self.layer = [lm.check_layer(one) for one in layer]
        self.contexts = contexts
        self.batch_tokens = batch_tokens
        self.chunk_contexts = chunk_contexts
        self.model_batch = model_batch
        self.seed = seed
        self.skip_first = skip_first
        self.autocast = autocast
        self.rank = rank
        self.world_size = world_size
        self.tokens_yielded = 0

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        return {
            "tokens_yielded": self.tokens_yielded,
            "seed": self.seed,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        self.tokens_yielded = int(state["tokens_yielded"])

    # ------------------------------------------------------------------ activations
    def _autocast(self):
        device_type = self.lm.device.type
        if self.autocast and self.lm.dtype == torch.float32 and device_type in ("cpu", "cuda"):
            return torch.autocast(device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def activations(self, contexts: Tensor) -> Tensor:
        """(B, T) token ids -> (B * (T - skip_first), d) float32 residuals, or
        (B * (T - skip_first), D, d) for a list of layers."""
        out = []
        for start in range(0, contexts.shape[0], self.model_batch):
            ids = contexts[start : start + self.model_batch].to(self.lm.device)
            with self._autocast():
                if isinstance(self.layer, int):
                    resid = self.lm.residual(ids, self.layer)  # (b, T, d)
                else:
                    resid = self.lm.residuals(ids, self.layer)  # (b, T, D, d)
            resid = resid[:, self.skip_first :]
            out.append(resid.reshape(-1, *resid.shape[2:]).float())
        return torch.cat(out)

    def _chunks(self, first_chunk: int) -> Iterator[tuple[int, Tensor]]:
        """(global chunk index, (C, T) contexts) for this rank's chunks from first_chunk on."""
        it = iter(self.contexts)
        chunk_index = 0
        while True:
            block = list(itertools.islice(it, self.chunk_contexts))
            if not block:
                return
            mine = chunk_index % self.world_size == self.rank and chunk_index >= first_chunk
            if mine:
                yield chunk_index, torch.stack(block)
            chunk_index += 1
            if len(block) < self.chunk_contexts:
                return

    def __iter__(self) -> Iterator[Tensor]:
        """Yield (batch_tokens, d) float32 batches (the very last may be shorter)."""
        ctx_tokens = None
        leftover: Tensor | None = None
        # Which of this rank's chunks holds the resume position?
        skip_tokens = self.tokens_yielded
        for chunk_index, contexts in self._chunks(0):
            tokens_in_chunk = contexts.shape[0] * (contexts.shape[1] - self.skip_first)
            ctx_tokens = ctx_tokens or tokens_in_chunk
            if skip_tokens >= tokens_in_chunk and leftover is None:
                skip_tokens -= tokens_in_chunk  # fully consumed before the resume point
                continue
            acts = self.activations(contexts)  # (C * (T - skip), d)
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + chunk_index)
            acts = acts[torch.randperm(acts.shape[0], generator=gen)]
            if skip_tokens:
                acts, skip_tokens = acts[skip_tokens:], 0
            if leftover is not None:
                acts = torch.cat([leftover, acts])
                leftover = None
            n_full = acts.shape[0] // self.batch_tokens
            for b in range(n_full):
                batch = acts[b * self.batch_tokens : (b + 1) * self.batch_tokens]
                self.tokens_yielded += batch.shape[0]
                yield batch
            rest = acts[n_full * self.batch_tokens :]
            leftover = rest if rest.shape[0] else None
        if leftover is not None:
            self.tokens_yielded += leftover.shape[0]
            yield leftover
