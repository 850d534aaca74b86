"""How a data-parallel run (sae/train/distributed.py) shares out each global batch and
records its ranks' data positions in the training state, for whoever resumes it (the
trainer, steer's activation stream).
"""

from __future__ import annotations

from pathlib import Path

from sae.state import load_state

from .checkpoints import STATE_DIR

SHARDED_FORMAT = "sae-data-parallel"


def rank_batch_tokens(batch_tokens: int, rank: int, world_size: int) -> int:
    """Tokens rank `rank` trains on per step when the global batch is `batch_tokens`."""
    return batch_tokens // world_size + (1 if rank < batch_tokens % world_size else 0)


def is_sharded_state(state) -> bool:
    """True for a data-source state written by a DistributedTrainer (one entry per rank)."""
    return isinstance(state, dict) and state.get("format") == SHARDED_FORMAT


def rank_states(state) -> list[dict]:
    """Per-rank data-source states of a saved run (a one-process run: a list of one)."""
    if is_sharded_state(state):
        return [part["source"] for part in state["ranks"]]
    return [state]


def saved_world_size(out_dir: str | Path) -> int | None:
    """Number of ranks that wrote out_dir/train_state (None: no state there)."""
    try:
        meta, _ = load_state(Path(out_dir) / STATE_DIR)
    except ValueError:
        return None
    source = meta.get("source")
    return int(source["world_size"]) if is_sharded_state(source) else 1
