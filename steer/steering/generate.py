"""Streaming, side-by-side generation with steering.

`generate_rows` runs one batch with one row per variant (rows[0] = [] is the unsteered
baseline) and yields, at every step, one `TokenEvent` per row still running. Each row
samples with its own torch.Generator seeded identically, so with the same settings two
rows differ only through their interventions.

The loop (no `model.generate`, so that tokens stream and the hook knows positions):
    1. prompt tokens 0 .. P-2 are run once per distinct prompt-time steering (one row
       for all when positions="generated"), and their KV cache is copied to every row;
    2. the last prompt token is run for all rows: its logits give the first new tokens;
    3. each new token is fed back with the KV cache, one forward per step, until every
       row has hit EOS or max_new_tokens, or `cancel()` says stop (checked between tokens).
Finished rows leave the batch.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields

import torch
from torch import Tensor

from sae import TopKSAE
from steer.lm.kv import cache_kwargs, output_cache
from steer.lm.models import LoadedModel

from .hook import SteeringHook
from .intervention import POSITIONS, Intervention, Positions
from .readouts import feature_activations, top_features  # noqa: F401  (re-exported)


@dataclass
class GenerationSettings:
    max_new_tokens: int = 64
    """Tokens to generate per row (fewer when the row hits EOS)."""

    temperature: float = 0.0
    """Sampling temperature; 0 = greedy (argmax)."""

    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p."""

    seed: int = 0
    """Seed of every row's generator (identical across rows)."""

    positions: Positions = "all"
    """Where interventions apply: all, prompt (the prompt tokens) or generated (the
    positions that produce new tokens: the last prompt token onwards)."""

    chat: bool | None = None
    """Wrap a text prompt in the tokenizer's chat template; None: when it has one."""

    stop_on_eos: bool = True
    """End a row at the end-of-sequence token (benchmarks turn this off)."""

    def __post_init__(self) -> None:
        for name, kinds, what in _SETTING_TYPES:
            value = getattr(self, name)
            # bool is an int subclass: `true` is not a token count
            if isinstance(value, bool) and bool not in kinds:
                raise ValueError(f"setting {name} must be {what}, got {value!r}")
            if not isinstance(value, kinds):
                raise ValueError(f"setting {name} must be {what}, got {value!r}")
        if not 0 <= self.seed < 2**63:  # torch seeds are signed 64-bit integers
            raise ValueError(f"seed must be in 0..2**63-1, got {self.seed}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max tokens must be at least 1, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.positions not in POSITIONS:
            raise ValueError(f"unknown positions {self.positions!r}: use {', '.join(POSITIONS)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GenerationSettings:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown generation settings {sorted(unknown)}: use {sorted(known)}")
        return cls(**d)


# (field, accepted types, in words): preset files give any JSON value
_SETTING_TYPES = [
    ("max_new_tokens", (int,), "a whole number"),
    ("temperature", (int, float), "a number"),
    ("top_p", (int, float), "a number"),
    ("seed", (int,), "a whole number"),
    ("positions", (str,), "a string"),
    ("chat", (bool, type(None)), "true, false or null"),
    ("stop_on_eos", (bool,), "true or false"),
]


@dataclass
class TokenEvent:
    row: int
    """Index of the row in `rows` (0 = the first variant, usually the baseline)."""
    step: int
    """0 for the first generated token."""
    token_id: int
    text: str
    """The new text this token completes ("" while a multi-byte character is split
    across tokens, and for the EOS token)."""
    done: bool
    """The row's last event (EOS or max_new_tokens)."""


# ---------------------------------------------------------------------- prompts
def build_prompt_ids(lm: LoadedModel, prompt: str | list[dict], chat: bool | None = None) -> Tensor:
    """Token ids (T,) of a prompt: a text, or a chat history [{"role", "content"}, ...].

    With the chat template (chat=True, or None and the tokenizer has one) the history ends
    with the assistant's turn opened; a last message from the assistant is continued.
    """
    tok = lm.tokenizer
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = list(prompt)
        for m in messages:
            if not (
                isinstance(m, dict)
                and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)
            ):
                raise ValueError(f"a chat message needs string 'role' and 'content', got {m!r}")
    if not any(m["content"].strip() for m in messages):
        raise ValueError("the prompt is empty")
    use_chat = lm.is_chat if chat is None else chat
    if use_chat:
        if not lm.is_chat:
            raise ValueError(f"{lm.name} has no chat template: generate without one (--no-chat)")
        continue_last = messages[-1]["role"] == "assistant"
        text = tok.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=not continue_last,
            continue_final_message=continue_last,
        )
        ids = tok(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tok("\n\n".join(m["content"] for m in messages))["input_ids"]
    if not ids:
        raise ValueError("the prompt is empty")
    return torch.tensor(ids, dtype=torch.long)


def eos_ids(lm: LoadedModel) -> set[int]:
    """Tokens that end a row: the tokenizer's EOS and the generation config's."""
    ids = set()
    if lm.tokenizer.eos_token_id is not None:
        ids.add(int(lm.tokenizer.eos_token_id))
    cfg_eos = getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)
    if isinstance(cfg_eos, int):
        ids.add(cfg_eos)
    elif isinstance(cfg_eos, (list, tuple)):
        ids.update(int(i) for i in cfg_eos)
    return ids


def max_positions(lm: LoadedModel) -> int | None:
    cfg = lm.model.config
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


class IncrementalDecoder:
    """Text of a growing token sequence, piece by piece, without splitting characters.

    Decodes a short window (the tokens since the last emitted piece, plus the one before,
    for tokenizers whose decoding depends on the left neighbour) and holds text back
    while it ends in a partial UTF-8 character (U+FFFD).
    """

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # start of the decoding window
        self.read = 0  # tokens already emitted

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def push(self, token_id: int, final: bool = False) -> str:
        self.ids.append(int(token_id))
        before = self._decode(self.ids[self.prefix : self.read])
        text = self._decode(self.ids[self.prefix :])
        if final or (len(text) > len(before) and not text.endswith("\ufffd")):
            self.prefix, self.read = self.read, len(self.ids)
            return text[len(before) :]
        return ""

    def flush(self) -> str:
        """Whatever is held back (a split character shows as U+FFFD)."""
        if self.read == len(self.ids):
            return ""
        before = self._decode(self.ids[self.prefix : self.read])
        text = self._decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return text[len(before) :]


# ---------------------------------------------------------------------- sampling
def sample_next(
    logits: Tensor, settings: GenerationSettings, generators: list[torch.Generator]
) -> Tensor:
    """Next token per row (R,) from logits (R, V); row r draws from generators[r]."""
    if settings.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / settings.temperature, dim=-1)  # (R, V)
    if settings.top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # Drop a token when the tokens before it already reach top_p (the first stays).
        drop = sorted_p.cumsum(dim=-1) - sorted_p >= settings.top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return torch.cat(
        [torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators, strict=True)]
    )


def _forward(
    lm: LoadedModel, ids: Tensor, cache, hook: SteeringHook | None, offset: int, rows: list[int]
):
    """One forward of ids (B, t) at absolute `offset`, batch rows = rows; -> (logits (B, V), cache).

    Position bookkeeping: the hook learns the absolute position of ids[:, 0] and which
    rows of the plan the batch holds, so prompt-only / generated-only steering and the
    per-row levers stay right as rows leave the batch."""
    kwargs = {"input_ids": ids, "use_cache": True, **cache_kwargs(lm.model, cache)}
    if _keeps_logits(type(lm.model)):
        kwargs["logits_to_keep"] = 1  # the LM head for the last position only
    if hook is not None:
        hook.reset(offset, rows)
    with hook if hook is not None else contextlib.nullcontext():
        out = lm.model(**kwargs)
    return out.logits[:, -1].float(), output_cache(out)


@functools.cache
def _keeps_logits(model_class: type) -> bool:
    """Does this model's forward take `logits_to_keep` (older transformers: no)?"""
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


# ---------------------------------------------------------------------- generation
@torch.inference_mode()
def generate_rows(
    lm: LoadedModel,
    sae: TopKSAE | None,
    prompt_ids: Tensor,
    rows: list[list[Intervention]],
    settings: GenerationSettings | None = None,
    *,
    max_acts: Tensor | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Iterator[list[TokenEvent]]:
    """Generate all rows in one batch; yield each step's events (one per running row).

    sae may be None only when no row has an enabled intervention. max_acts (n_latents,)
    makes strengths relative (see `Intervention.strength`). prompt_ids: one prompt (P,)
    for every row, or one prompt per row (R, P), all of one length (no padding), so that
    a search can try several prompts and settings in one batch.
    """
    settings = settings or GenerationSettings()
    rows = [list(r) for r in rows]
    ids = _check_prompt(lm, prompt_ids, rows, settings)  # (P,) or (R, P)
    P = ids.shape[-1]
    hook = _steering_hook(lm, sae, rows, settings, max_acts, P)
    generators = [torch.Generator(device=lm.device).manual_seed(settings.seed) for _ in rows]
    stop = eos_ids(lm) if settings.stop_on_eos else set()
    decoders = [IncrementalDecoder(lm.tokenizer) for _ in rows]
    logits, cache = _prefill(lm, ids, hook, len(rows))
    alive = list(range(len(rows)))  # the rows still in the batch, in batch order
    for step in range(settings.max_new_tokens):
        nxt = sample_next(logits, settings, [generators[r] for r in alive])  # (len(alive),)
        last = step == settings.max_new_tokens - 1
        events = [
            _event(r, step, int(nxt[j]), last, stop, decoders[r]) for j, r in enumerate(alive)
        ]
        yield events
        keep = [j for j, e in enumerate(events) if not e.done]
        if not keep or (cancel is not None and cancel()):
            return
        if len(keep) < len(alive):  # finished rows leave the batch (and the cache)
            cache.batch_select_indices(torch.tensor(keep, device=lm.device))
            alive, nxt = [alive[j] for j in keep], nxt[keep]
        # 3. Feed the new tokens back; the token of step s sits at position P + s.
        logits, cache = _forward(lm, nxt[:, None], cache, hook, P + step, alive)


def _check_prompt(
    lm: LoadedModel, prompt_ids: Tensor, rows: list, settings: GenerationSettings
) -> Tensor:
    """The prompt as (P,) ids (or (R, P), a prompt per row) on the model's device, after
    checking that it fits."""
    if not rows:
        raise ValueError("nothing to generate: no rows")
    ids = torch.as_tensor(prompt_ids, dtype=torch.long)
    if ids.dim() == 2 and ids.shape[0] != len(rows):
        raise ValueError(f"{ids.shape[0]} prompts for {len(rows)} rows: give one per row")
    ids = ids.flatten().to(lm.device) if ids.dim() != 2 else ids.to(lm.device)
    P = ids.shape[-1]
    if P == 0:
        raise ValueError("the prompt is empty")
    limit = max_positions(lm)
    if limit is not None and P + settings.max_new_tokens > limit:
        raise ValueError(
            f"the prompt ({P} tokens) plus {settings.max_new_tokens} new tokens exceeds "
            f"{lm.name}'s context of {limit} tokens"
        )
    return ids


def _steering_hook(lm, sae, rows, settings, max_acts, prompt_len: int) -> SteeringHook | None:
    """The hook for these rows, or None when no row edits anything."""
    if not any(iv.enabled for row in rows for iv in row):
        return None
    if sae is None:
        raise ValueError("steering needs an SAE")
    hook = SteeringHook(
        lm, sae, rows, max_acts=max_acts, positions=settings.positions, prompt_len=prompt_len
    )
    return None if hook.is_noop else hook


def _prefill(lm: LoadedModel, ids: Tensor, hook: SteeringHook | None, n_rows: int):
    """Run the prompt (P,) for n_rows rows -> (logits (R, V) of the last position, cache).

    1. Prompt tokens 0 .. P-2 run once per distinct prompt-time steering (rows with equal
       `row_key` share them), and each row gets a copy of its group's KV cache;
    2. the last prompt token runs for every row: its logits give the first new tokens.
    A prompt per row (R, P) shares nothing: every row runs its own prompt.
    """
    rows = list(range(n_rows))
    if ids.dim() == 2:
        cache = None
        if ids.shape[1] > 1:
            _, cache = _forward(lm, ids[:, :-1], None, hook, 0, rows)
        return _forward(lm, ids[:, -1:], cache, hook, ids.shape[1] - 1, rows)
    P, cache = ids.numel(), None
    if P > 1:
        keys = [hook.row_key(r) if hook else () for r in range(n_rows)]
        distinct = list(dict.fromkeys(keys))
        first_row = [keys.index(k) for k in distinct]
        _, cache = _forward(lm, ids[None, :-1].expand(len(distinct), -1), None, hook, 0, first_row)
        if n_rows > 1:  # one copy of its group's cache per row
            cache.reorder_cache(torch.tensor([distinct.index(k) for k in keys], device=lm.device))
    return _forward(lm, ids[None, -1:].expand(n_rows, 1), cache, hook, P - 1, rows)


def _event(
    row: int, step: int, token: int, last: bool, stop: set[int], decoder: IncrementalDecoder
) -> TokenEvent:
    """Row `row`'s event for its sampled token: the text it completes, and whether it ends."""
    is_eos = token in stop
    done = is_eos or last
    text = "" if is_eos else decoder.push(token)
    if done:
        text += decoder.flush()
    return TokenEvent(row, step, token, text, done)


def generate_text(
    lm: LoadedModel,
    sae: TopKSAE | None,
    prompt: str | list[dict],
    rows: list[list[Intervention]],
    settings: GenerationSettings | None = None,
    *,
    max_acts: Tensor | None = None,
    on_step: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """[{"text", "token_ids", "stopped": "eos"|"length"|None}] per row, when all are done.

    on_step(rows so far) after every step: `steer generate` prints the texts as they grow
    ("stopped" is None while a row still runs)."""
    settings = settings or GenerationSettings()
    prompt_ids = build_prompt_ids(lm, prompt, settings.chat)
    out = [{"text": "", "token_ids": [], "stopped": None} for _ in rows]
    stop = eos_ids(lm) if settings.stop_on_eos else set()
    for events in generate_rows(lm, sae, prompt_ids, rows, settings, max_acts=max_acts):
        for e in events:
            out[e.row]["text"] += e.text
            out[e.row]["token_ids"].append(e.token_id)
            if e.done:
                out[e.row]["stopped"] = "eos" if e.token_id in stop else "length"
        if on_step is not None:
            on_step(out)
    return out
