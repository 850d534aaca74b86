"""Activations cached on disk: one model pass, many SAEs.

`write_cache` drains an activation stream (steer.lm.activations.ActivationStream) into
`shard-00000.safetensors, ...` (one tensor `activations` (N, d) each) and writes
`cache.json` (model, hook point, corpus, tokens, shards) last, so a folder with a
cache.json is complete. `CachedActivations` reads such a folder back as the same kind of
stream the trainer takes: (batch_tokens, d) float32 batches, with state_dict() /
load_state_dict() so a resumed run continues at the same token.

Reading order: pass e over the cache visits the shards in a permutation seeded by
(seed, e) and the rows of each shard in a permutation seeded by (seed, e, shard), so
successive passes (when a run wants more tokens than the cache holds) differ, and the
position in the stream is one number, `tokens_yielded`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

CACHE_META = "cache.json"
SHARD_TENSOR = "activations"
STORE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def write_cache(
    batches: Iterable[Tensor],
    out_dir: str | Path,
    total_tokens: int,
    shard_tokens: int = 65536,
    store_dtype: str = "bf16",
    meta: dict | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict:
    """Write the first `total_tokens` rows of `batches` ((N, d) tensors) as shards.

    Refuses a folder that already holds a cache (complete or not). Returns the metadata
    written to cache.json: `meta` plus d_in, tokens, dtype and the shard list."""
    if total_tokens < 1 or shard_tokens < 1:
        raise ValueError("the token count and --shard-tokens must be positive")
    if store_dtype not in STORE_DTYPES:
        raise ValueError(
            f"store dtype must be one of {', '.join(STORE_DTYPES)}, got {store_dtype!r}"
        )
    out = Path(out_dir)
    if out.exists() and (any(out.glob("shard-*.safetensors")) or (out / CACHE_META).exists()):
        raise ValueError(f"{out} already holds an activation cache: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    dtype = STORE_DTYPES[store_dtype]
    shards: list[dict] = []
    pending: list[Tensor] = []
    n_pending = written = 0
    d_in = None

    def flush(rows: Tensor) -> None:
        name = _shard_name(len(shards))
        save_file({SHARD_TENSOR: rows.to(dtype).contiguous()}, str(out / name))
        shards.append({"file": name, "tokens": int(rows.shape[0])})

    for batch in batches:
        if d_in is None:
            d_in = int(batch.shape[1])
        batch = batch[: total_tokens - written - n_pending]  # (n, d)
        pending.append(batch.detach().cpu())
        n_pending += batch.shape[0]
        while n_pending >= shard_tokens:
            flat = torch.cat(pending)
            flush(flat[:shard_tokens])
            written += shard_tokens
            rest = flat[shard_tokens:]
            pending, n_pending = ([rest] if len(rest) else []), len(rest)
        if on_progress is not None:
            on_progress(written + n_pending)
        if written + n_pending >= total_tokens:
            break
    if n_pending:
        flush(torch.cat(pending))
        written += n_pending
    if d_in is None or written == 0:
        raise ValueError("the activation source yielded no data")
    info = {**(meta or {}), "d_in": d_in, "tokens": written, "dtype": store_dtype, "shards": shards}
    tmp = out / (CACHE_META + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(out / CACHE_META)
    return info


def read_cache_meta(folder: str | Path) -> dict:
    """cache.json of a complete cache; ValueError with a one-line reason otherwise."""
    path = Path(folder) / CACHE_META
    if not Path(folder).is_dir():
        raise ValueError(f"no activation cache at {folder}: run steer cache --out {folder} first")
    if not path.is_file():
        raise ValueError(f"{folder} is not a complete activation cache (no {CACHE_META})")
    try:
        meta = json.loads(path.read_text())
        shards = meta["shards"]
        int(meta["d_in"]), int(meta["tokens"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    missing = [s["file"] for s in shards if not (Path(folder) / s["file"]).is_file()]
    if missing:
        raise ValueError(f"activation cache {folder} lacks {missing[0]}")
    return meta


class CachedActivations:
    """The cached activations as a resumable stream of (batch_tokens, d) float32 batches.

    repeat=True starts another (differently shuffled) pass when one ends, so a run can
    ask for more tokens than the cache holds; repeat=False stops after one pass."""

    def __init__(
        self, folder: str | Path, batch_tokens: int = 4096, seed: int = 0, repeat: bool = True
    ):
        if batch_tokens < 1:
            raise ValueError(f"batch_tokens must be positive, got {batch_tokens}")
        self.folder = Path(folder)
        self.meta = read_cache_meta(folder)
        self.d_in = int(self.meta["d_in"])
        self.tokens = int(self.meta["tokens"])
        self.batch_tokens = batch_tokens
        self.seed = seed
        self.repeat = repeat
        self.tokens_yielded = 0

    def state_dict(self) -> dict:
        return {
            "tokens_yielded": self.tokens_yielded,
            "seed": self.seed,
            "cache_tokens": self.tokens,
        }

    def load_state_dict(self, state: dict) -> None:
        if int(state.get("cache_tokens", self.tokens)) != self.tokens:
            raise ValueError(
                f"the run was trained on a cache of {state['cache_tokens']:,} tokens, "
                f"{self.folder} holds {self.tokens:,}"
            )
        self.tokens_yielded = int(state["tokens_yielded"])

    def _load_shard(self, index: int, epoch: int) -> Tensor:
        entry = self.meta["shards"][index]
        with safe_open(str(self.folder / entry["file"]), framework="pt") as f:
            rows = f.get_tensor(SHARD_TENSOR).float()  # (n, d)
        gen = torch.Generator().manual_seed(((self.seed * 1_000_003 + epoch) * 100_003) + index)
        return rows[torch.randperm(rows.shape[0], generator=gen)]

    def _sequence(self) -> Iterator[tuple[int, int, int]]:
        """(epoch, shard index, shard tokens) in reading order, forever when repeat."""
        epoch = 0
        while True:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            for index in torch.randperm(len(self.meta["shards"]), generator=gen).tolist():
                yield epoch, index, int(self.meta["shards"][index]["tokens"])
            if not self.repeat:
                return
            epoch += 1

    def __iter__(self) -> Iterator[Tensor]:
        skip = self.tokens_yielded  # resume: tokens already handed out
        leftover: Tensor | None = None
        for epoch, index, n in self._sequence():
            if skip >= n:
                skip -= n
                continue
            rows = self._load_shard(index, epoch)[skip:]  # (n - skip, d)
            skip = 0
            if leftover is not None:
                rows, leftover = torch.cat([leftover, rows]), None
            n_full = rows.shape[0] // self.batch_tokens
            for b in range(n_full):
                batch = rows[b * self.batch_tokens : (b + 1) * self.batch_tokens].clone()
                self.tokens_yielded += batch.shape[0]
                yield batch
            rest = rows[n_full * self.batch_tokens :]
            leftover = rest if rest.shape[0] else None
        if leftover is not None:
            self.tokens_yielded += leftover.shape[0]
            yield leftover
