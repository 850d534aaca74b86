"""Steered generation as a service: one model and SAE, requests queued on one model thread.

The HTTP layer (api.py) turns each OpenAI request into a `Job` (`prepare`: the prompt's
tokens, the levers of its steering expression, the sampling settings, all checked before
any model work) and hands it to `submit`. Jobs run one at a time on a single worker
thread, in arrival order: the levers are forward hooks on the shared model, so two
generations at once would see each other's hooks (the playground's engine holds a lock
for the same reason). Generation is `steer.steering.generate.generate_rows`, the loop
`steer generate` and the playground use, with one row: the request's levers.

No HTTP here: everything can be driven and tested without a server.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from steer.lm.models import LoadedModel
from steer.steering import Intervention
from steer.steering.generate import (
    GenerationSettings,
    build_prompt_ids,
    eos_ids,
    generate_rows,
    max_positions,
)

from .steering import read_steering

DEFAULT_MAX_TOKENS = 256
"""Tokens per reply when a request names no max_tokens (fewer when the context is short)."""


@dataclass
class Job:
    """One generation, checked and ready to run."""

    prompt_ids: Tensor  # (P,) token ids, chat template applied when asked
    levers: list[Intervention]
    settings: GenerationSettings
    stop: list[str] = field(default_factory=list)
    steer: str = ""
    """The steering expression applied, as the printer writes it ("" = the baseline)."""

    @property
    def prompt_tokens(self) -> int:
        return int(self.prompt_ids.numel())


@dataclass
class Piece:
    """New text of a running generation; the last piece carries the finish reason."""

    text: str
    finish_reason: str | None = None  # "stop" (EOS or a stop string) | "length"
    completion_tokens: int = 0  # tokens generated so far


class StopScanner:
    """Cuts a text stream at the first stop string, holding back a tail that might be
    the start of one (so a streamed stop string never reaches the client)."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def push(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, whether a stop string was hit)."""
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        keep = max((self._overlap(s) for s in self.stops), default=0)
        cut = len(self.pending) - keep
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def _overlap(self, stop: str) -> int:
        """Length of the longest tail of `pending` that is a proper prefix of `stop`."""
        for n in range(min(len(stop) - 1, len(self.pending)), 0, -1):
            if self.pending.endswith(stop[:n]):
                return n
        return 0

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class SteeringService:
    """A model and (optionally) an SAE behind a one-thread queue of generation jobs.

    sae_dir: the SAE's folder, where saved vectors (`v:NAME` in expressions) live.
    default_steer: the expression used when a request names none ("" = the baseline).
    max_acts (n_latents,): strengths are multiples of each latent's max activation (the
    SAE's catalog), as in `steer generate`; None: raw SAE units.
    """

    def __init__(
        self,
        lm: LoadedModel,
        sae=None,
        *,
        sae_dir: str | Path | None = None,
        max_acts: Tensor | None = None,
        default_steer: str = "",
        max_tokens: int = DEFAULT_MAX_TOKENS,
        model_id: str | None = None,
    ):
        self.lm, self.sae, self.max_acts = lm, sae, max_acts
        self.sae_dir = sae_dir
        self.model_id = model_id or lm.name
        self.max_tokens = max_tokens
        # a bad default fails here, before the server starts; kept as the printer writes it
        self.default_steer = read_steering(default_steer, sae, sae_dir)[1]
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="steer-model")
        self._pending = 0
        self._count_lock = threading.Lock()

    # ------------------------------------------------------------ requests -> jobs
    def prepare(
        self,
        prompt: str | list[dict],
        *,
        chat: bool | None,
        steer: str,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: list[str] | None = None,
    ) -> Job:
        """Check a request and turn it into a Job. ValueError (one line) on bad input.

        prompt: a text (completions: no chat template when chat=False) or chat messages;
        chat=None: the template when the tokenizer has one, as `steer generate` does.
        Unset sampling fields take `steer generate`'s defaults (greedy, seed 0)."""
        levers, steer = read_steering(steer, self.sae, self.sae_dir)  # SteeringError
        ids = build_prompt_ids(self.lm, prompt, chat)  # (P,)
        limit = max_positions(self.lm)
        room = None if limit is None else limit - ids.numel()
        if room is not None and room < 1:
            raise ValueError(
                f"the prompt ({ids.numel()} tokens) fills the model's {limit} positions"
            )
        if max_tokens is None:
            max_tokens = self.max_tokens if room is None else min(self.max_tokens, room)
        elif room is not None and max_tokens > room:
            raise ValueError(
                f"max_tokens {max_tokens} is too many: the prompt ({ids.numel()} tokens) "
                f"leaves {room} of the model's {limit} positions"
            )
        given = {"temperature": temperature, "top_p": top_p, "seed": seed}
        settings = GenerationSettings(
            max_new_tokens=max_tokens, **{k: v for k, v in given.items() if v is not None}
        )
        return Job(ids, levers, settings, list(stop or []), steer)

    # ------------------------------------------------------------ running jobs
    def submit(
        self,
        job: Job,
        emit: Callable[[Piece], None],
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Future:
        """Queue a job; `emit` gets its pieces on the model thread. The future ends with
        the job (its exception: what went wrong). A job whose `cancelled()` turns true
        stops between tokens, or is skipped if it has not started."""
        with self._count_lock:
            self._pending += 1
        return self._executor.submit(self._run_counted, job, emit, cancelled)

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        return self._pending

    def _run_counted(self, job: Job, emit, cancelled) -> None:
        try:
            if not cancelled():
                self.run(job, emit, cancelled)
        finally:
            with self._count_lock:
                self._pending -= 1

    def run(self, job: Job, emit: Callable[[Piece], None], cancelled=lambda: False) -> None:
        """Generate on the calling thread (callers other than `submit` must not overlap)."""
        scanner = StopScanner(job.stop)
        stop_ids = eos_ids(self.lm) if job.settings.stop_on_eos else set()
        rows = generate_rows(
            self.lm, self.sae, job.prompt_ids, [job.levers], job.settings, max_acts=self.max_acts
        )
        with contextlib.closing(rows):
            for n, (event,) in enumerate(rows, start=1):
                text, hit = scanner.push(event.text)
                if hit or event.done:
                    end = "stop" if hit or event.token_id in stop_ids else "length"
                    emit(Piece(text + ("" if hit else scanner.flush()), end, n))
                    return
                if text:
                    emit(Piece(text, None, n))
                if cancelled():
                    return

    def complete(self, job: Job) -> Piece:
        """The whole reply (blocking, through the queue): its text and finish reason."""
        pieces: list[Piece] = []
        self.submit(job, pieces.append).result()
        return Piece(
            "".join(p.text for p in pieces),
            pieces[-1].finish_reason if pieces else "length",
            pieces[-1].completion_tokens if pieces else 0,
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
