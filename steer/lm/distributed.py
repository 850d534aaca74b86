"""Run `steer train` data-parallel under torchrun: process group, device, data shards.

torchrun (or any launcher that sets the same variables) starts one process per GPU and
gives each RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. `init_distributed`
reads them, picks the device (cuda:LOCAL_RANK, or the CPU) and the backend (NCCL on GPUs,
gloo on CPU), and joins the process group. Without WORLD_SIZE > 1 it does nothing, so the
same command runs as one process.

`ShardedStream` wraps this rank's ActivationStream (which reads chunks rank, rank + W,
... of the corpus) so that a run can resume with a different number of processes: it
remembers how many contexts were skipped before its chunks start (`context_offset`), and
on a resize it skips every chunk any old rank had touched and starts a fresh sharding of
the rest. No data is repeated; the unread remainder of the chunks the old ranks were in
the middle of (at most one chunk each) is never trained on.
"""

from __future__ import annotations

import atexit
import gc
import itertools
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .activations import ActivationStream

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    """Global rank of this process (0 ... world_size - 1)."""

    world_size: int = 1
    """Number of processes training together."""

    local_rank: int = 0
    """Rank on this machine: picks the GPU (cuda:local_rank)."""

    device: str = "cpu"
    """Device this process computes on."""

    backend: str | None = None
    """nccl (GPUs), gloo (CPU), or None when running as one process."""

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints, logs and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    """WORLD_SIZE from the environment (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the torchrun process group when WORLD_SIZE > 1; else a one-process DistEnv.

    device: auto (cuda when available), cpu or cuda. Under torchrun each process takes
    cuda:LOCAL_RANK (an explicit cuda:N is replaced: one GPU per process) with NCCL, or
    the CPU with gloo."""
    import torch.distributed as dist

    world = env_world_size()
    wanted = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if world <= 1:
        return DistEnv(device=wanted)
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch with torchrun "
            "(e.g. torchrun --nproc_per_node 2 -m steer train ...)"
        )
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if wanted.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA device is available (use --device cpu)")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) visible: "
                "use --nproc_per_node <= the number of GPUs"
            )
        dev, backend = f"cuda:{local_rank}", "nccl"
        torch.cuda.set_device(dev)
    elif wanted == "cpu":
        dev, backend = "cpu", "gloo"
    else:
        raise ValueError(f"--device {device} cannot train data-parallel (use cuda or cpu)")
    if not dist.is_initialized():
        kwargs = {"device_id": torch.device(dev)} if backend == "nccl" else {}
        dist.init_process_group(
            backend=backend, init_method="env://", rank=rank, world_size=world, **kwargs
        )
        atexit.register(shutdown_distributed, wait=False)
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=dev, backend=backend)


def shutdown_distributed(wait: bool = True) -> None:
    """Leave the process group (idempotent).

    wait: first a barrier, so no rank tears its connections down while a peer still uses
    them (gloo can then abort the peer: "terminate called without an active exception").
    The atexit fallback, reached after an error when peers may be gone, does not wait."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gc.collect()  # free tensors of finished collectives while the interpreter is whole
        if wait:
            dist.barrier()
        dist.destroy_process_group()


class SkipContexts:
    """Re-iterable view of `contexts` without its first `n` items."""

    def __init__(self, contexts: Iterable[Tensor], n: int):
        self.contexts, self.n = contexts, n

    def __iter__(self) -> Iterator[Tensor]:
        return itertools.islice(iter(self.contexts), self.n, None)


class ShardedStream:
    """This rank's ActivationStream, resumable after a run with another number of ranks.

    State: the stream's own (tokens_yielded, seed, world_size) plus `context_offset`,
    the number of contexts skipped before this sharding starts."""

    def __init__(self, stream: ActivationStream, ctx_len: int):
        self.stream = stream
        self.base_contexts = stream.contexts
        self.tokens_per_chunk = stream.chunk_contexts * (ctx_len - stream.skip_first)
        self.context_offset = 0
        # After resuming a run of another size: {"from": W_old, "skipped_contexts": n}.
        self.resharded: dict | None = None

    @property
    def rank(self) -> int:
        return self.stream.rank

    @property
    def world_size(self) -> int:
        return self.stream.world_size

    def __iter__(self) -> Iterator[Tensor]:
        return iter(self.stream)

    def _set_offset(self, offset: int) -> None:
        self.context_offset = offset
        self.stream.contexts = (
            SkipContexts(self.base_contexts, offset) if offset else self.base_contexts
        )

    def state_dict(self) -> dict:
        return {
            **self.stream.state_dict(),
            "context_offset": self.context_offset,
            "rank": self.rank,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume: this rank's own state, or (a state of another world size, e.g. a
        multi-rank run resumed by one process) a re-sharding."""
        from sae.train.shards import is_sharded_state, rank_states

        if is_sharded_state(state) or int(state.get("world_size", 1)) != self.world_size:
            states = rank_states(state)
            if len(states) == self.world_size:  # a sharded state of this very size
                state = states[self.rank]
            else:
                return self.load_sharded_state_dict(states)
        self._set_offset(int(state.get("context_offset", 0)))
        self.stream.load_state_dict(state)

    def load_sharded_state_dict(self, states: list[dict]) -> None:
        """Continue a run made by len(states) ranks with this run's world size: skip every
        chunk any old rank touched, then shard the rest afresh."""
        old_world = len(states)
        offset = int(states[0].get("context_offset", 0))
        chunks_done = 0  # chunks (after offset) that some old rank has started
        for old_rank, state in enumerate(states):
            started = math.ceil(int(state["tokens_yielded"]) / self.tokens_per_chunk)
            if started:
                chunks_done = max(chunks_done, old_rank + old_world * (started - 1) + 1)
        skipped = chunks_done * self.stream.chunk_contexts
        self._set_offset(offset + skipped)
        self.stream.tokens_yielded = 0
        self.resharded = {"from": old_world, "skipped_contexts": skipped}
