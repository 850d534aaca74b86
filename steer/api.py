"""steer from Python (a notebook): load a model and its SAE, steer inside a `with` block,
read feature activations. The same engine the playground uses (steer.app.engine), the same
generation and hook the CLI uses (steer.steering), the same expressions (README: Steering
expressions).

    import steer.api as steer

    lm = steer.load()                         # the embedded SmolLM2-135M + its shipped SAE
    lm.generate("Tell me about your weekend.")                  # unsteered
    with lm.steer("2.5 #2374 + 0.4 #55:add @generated"):
        print(lm.generate("Tell me about your weekend."))       # steered
    with steer.steered("#88:ablate"):         # the same, on the last model loaded
        ...
    lm.generate("Hi", steer="3 #100 @when:#55>0.4")             # one call
    base, steered = lm.compare("Hi", "2.5 #2374")              # what `steer generate` prints
    lm.features("The Golden Gate Bridge")     # [FeatureHit(latent, score, label, ...)]
    lm.activations("The Golden Gate Bridge", [2374])           # (T, 1) tensor, per token

Strengths are multiples of each feature's max activation when the SAE has a catalog (as
in the playground and `--feature ID=STRENGTH`), raw SAE units otherwise (`lm.units`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

from steer.app.engine import PlaygroundEngine
from steer.steering.generate import GenerationSettings, build_prompt_ids, generate_text

_last: SteeredModel | None = None


class SteeredModel:
    """A model, its SAE and a set of levers (the engine's active set)."""

    def __init__(self, engine: PlaygroundEngine):
        self.engine = engine

    # ------------------------------------------------------------ what it holds
    @property
    def lm(self):
        return self.engine.lm

    @property
    def sae(self):
        return self.engine.sae

    @property
    def units(self) -> str:
        """`×max` (strengths are multiples of a feature's max activation) or `raw`."""
        return self.engine.strength_unit

    @property
    def expression(self) -> str:
        """The levers in force, as an expression ("" when none)."""
        return self.engine.expression

    def __repr__(self) -> str:
        steering = self.expression or "no steering"
        return f"SteeredModel({self.engine.model_name} · {self.engine.sae_name} · {steering})"

    # ------------------------------------------------------------ steering
    @contextlib.contextmanager
    def steer(self, expression: str) -> Iterator[SteeredModel]:
        """Generation inside the block is steered by `expression`; the levers before it
        come back after it (blocks nest: the inner expression replaces the outer one)."""
        before = [dataclasses.replace(f) for f in self.engine.features]
        self.engine.set_expression(expression)
        try:
            yield self
        finally:
            self.engine.features = before

    def _levers(self, steer: str | None):
        if steer is None:
            return self.engine.active_interventions()
        from steer.steering.expr import parse_steering

        levers = self.engine.resolve_levers(parse_steering(steer).interventions())
        return [lever for lever in levers if lever.enabled]

    def _settings(self, max_tokens, temperature, seed, chat) -> GenerationSettings:
        changes = {"max_new_tokens": max_tokens, "temperature": temperature, "seed": seed}
        changes["chat"] = chat
        return dataclasses.replace(self.engine.settings, **changes)

    # ------------------------------------------------------------ generation
    def generate(
        self,
        prompt: str | list[dict],
        max_tokens: int = 64,
        *,
        steer: str | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        chat: bool | None = None,
    ) -> str:
        """The completion of `prompt` (a text, or chat messages [{"role", "content"}]),
        steered by `steer` or else by the levers in force (none: the plain model)."""
        settings = self._settings(max_tokens, temperature, seed, chat)
        levers = self._levers(steer)
        with self.engine._lock:
            (out,) = generate_text(
                self.lm, self.sae, prompt, [levers], settings, max_acts=self.engine.max_acts
            )
        return out["text"]

    def compare(
        self,
        prompt: str | list[dict],
        steer: str | None = None,
        max_tokens: int = 64,
        *,
        temperature: float = 0.0,
        seed: int = 0,
        chat: bool | None = None,
    ) -> tuple[str, str]:
        """(baseline, steered) in one batch with identical samplers, as `steer generate`
        and the playground run them."""
        settings = self._settings(max_tokens, temperature, seed, chat)
        rows = [[], self._levers(steer)]
        with self.engine._lock:
            base, steered = generate_text(
                self.lm, self.sae, prompt, rows, settings, max_acts=self.engine.max_acts
            )
        return base["text"], steered["text"]

    # ------------------------------------------------------------ reading features
    def features(self, text: str, top: int = 20) -> list:
        """The features firing most on `text`, strongest first (FeatureHit: latent, score
        relative to its max activation when there is a catalog, label, explanation)."""
        return self.engine.find_by_text(text, n=top)

    def activations(self, text: str, features: list[int] | None = None, chat: bool = False):
        """(T, m) activations of `features` (every latent when None: (T, n_latents)) at
        each token of `text`, in raw SAE units, read by the unsteered model."""
        import torch

        from steer.steering.generate import feature_activations

        self.engine._require_sae()
        ids = build_prompt_ids(self.lm, text, chat=chat).to(self.lm.device)
        latents = list(range(self.sae.n_latents)) if features is None else list(features)
        with self.engine._lock, torch.inference_mode():
            return feature_activations(self.lm, self.sae, ids, latents)

    def tokens(self, text: str, chat: bool = False) -> list[str]:
        """The tokens `activations` has rows for."""
        ids = build_prompt_ids(self.lm, text, chat=chat).tolist()
        return [self.engine.token_text(t) for t in ids]


def load(
    model: str | None = None,
    sae: str | Path | None = None,
    device: str = "cpu",
) -> SteeredModel:
    """Load a model and an SAE. Defaults: the embedded SmolLM2-135M and the SAE shipped
    for it (what `steer chat` opens); another model needs `sae`. Bad input: ValueError."""
    from steer.app.checkpoints import find_default_sae
    from steer.lm.models import DEFAULT_MODEL

    if sae is None and model in (None, DEFAULT_MODEL):
        sae = find_default_sae()
    if sae is None:
        raise ValueError("give the SAE folder: steer.api.load(model, sae=DIR)")
    if model is None:  # the model the SAE was trained on
        from sae import load_sae

        model = load_sae(sae).cfg.model_name or DEFAULT_MODEL
    engine = PlaygroundEngine(device=device)
    engine.load(model, sae)
    return wrap(engine)


def wrap(engine: PlaygroundEngine) -> SteeredModel:
    """A SteeredModel over an engine already loaded (tests, the playground's own)."""
    global _last
    _last = SteeredModel(engine)
    return _last


@contextlib.contextmanager
def steered(expression: str, model: SteeredModel | None = None) -> Iterator[SteeredModel]:
    """`with steered("2.5 #2374"):` steers the last model loaded (or `model`)."""
    target = model or _last
    if target is None:
        raise ValueError("no model loaded: call steer.api.load() first")
    with target.steer(expression) as lm:
        yield lm
