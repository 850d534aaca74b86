"""What the engine says about a feature: its label, caption and explanation, where to find
one (by the text it fires on, by search, toward a concept), its neighbours in wider SAEs,
its catalog entry and logit lens. A mixin of PlaygroundEngine (steer.app.engine)."""

from __future__ import annotations

import torch

from .query import feature_number
from .views import FeatureHit, FeatureInfo, LeverHit


class FeatureLookupMixin:
    """Feature descriptions and searches; needs the engine's lm, sae, catalog, sae_path,
    _lock, max_acts, check_latent and _require_sae."""

    def feature_web(self):
        """The loaded SAE's family web (`steer web`) as a steer.app.web.WebView, or None."""
        from .web import WebView

        self._require_sae()
        key = (str(self.sae_path), self.sae.n_latents)
        if getattr(self, "_web", (None, None))[0] != key:
            self._web = (key, WebView.for_sae(self.sae_path, self.sae.n_latents))
        return self._web[1]

    def label(self, latent: int | str) -> str:
        if isinstance(latent, str):  # a saved vector (the row shows v:NAME)
            return "saved vector"
        if self.catalog is None:
            return ""
        try:
            return self.catalog.entry(latent).label or ""
        except (IndexError, KeyError, ValueError):
            return ""

    def _shown(self, latent: int):
        ex = getattr(self.catalog, "explanations", None) if self.catalog is not None else None
        if ex is None or isinstance(latent, str) or not 0 <= latent < self.catalog.n_latents:
            return None
        return ex.explanation(latent)

    def explanation(self, latent: int) -> str:
        """The best explanation with what made it and its score, or ""."""
        shown = self._shown(latent)
        return f"{shown.text} ({shown.source} · {shown.score})" if shown else ""

    def caption(self, latent: int) -> str:
        """The label and, in a few characters, its explanation's score: `... P.92 R.41`."""
        shown = self._shown(latent)
        label = self.label(latent)
        return f"{label}  {shown.short}" if shown and shown.short else label

    def _hit(self, latent: int, score: float | None, label: str | None = None) -> FeatureHit:
        return FeatureHit(
            latent, score, self.label(latent) if label is None else label, self.explanation(latent)
        )

    # ------------------------------------------------------------ finding features
    def find_by_text(self, text: str, n: int = 20) -> list[FeatureHit]:
        """The latents that fire most on `text`, strongest first."""
        from steer.features.catalog import latents_for_text

        self._require_sae()
        if not text.strip():
            raise ValueError("type some text to see which features fire on it")
        with self._lock, torch.inference_mode():
            found = latents_for_text(self.lm, self.sae, text, n=n, catalog=self.catalog)
        return [self._hit(int(i), float(score)) for i, score in found]

    def search(self, query: str, limit: int = 20) -> list[FeatureHit]:
        """Ranked search (BM25) over labels, explanations, activating tokens, logit lens
        and top contexts; `#123` or `123` jumps to latent 123."""
        self._require_sae()
        query = query.strip()
        number = feature_number(query)
        if number is not None:
            latent = self.check_latent(number)
            return [self._hit(latent, None)]
        if not query:
            raise ValueError("type a word to search feature labels, or #N for feature N")
        if self.catalog is None:
            raise ValueError(
                "this SAE has no feature catalog, so labels cannot be searched "
                "(run `steer index`); search by text works without it"
            )
        return [
            self._hit(int(e.index), None, e.label or "")
            for e in self.catalog.search(query, limit=limit)
        ]

    def toward(self, text: str, top: int | None = None) -> list[LeverHit]:
        """Features that, pulled together, make the model talk about `text`, each with a
        recommended mode and strength (in this engine's strength units), best first."""
        from steer.steering.toward import toward

        self._require_sae()
        if not text.strip():
            raise ValueError("type a word or phrase to steer toward")
        with self._lock:
            levers = toward(self.lm, self.sae, text, max_acts=self.max_acts, top=top)
        return [
            LeverHit(
                lv.feature, lv.score, self.label(lv.feature), mode=lv.mode, strength=lv.strength
            )
            for lv in levers
        ]

    def related_features(self, latent: int, n: int = 3) -> list[FeatureHit]:
        """Feature splitting: the nearest features (decoder cosine) of `latent` in every
        wider SAE of the same family (sibling folders at the same hook point)."""
        if self.sae_path is None:
            return []
        from steer.features.family import family_neighbours

        try:
            neighbours = family_neighbours(self.sae_path, latent, n=n)
        except (ValueError, OSError):
            return []
        return [
            FeatureHit(nb.latent, nb.cosine, f"[{member}] cos {nb.cosine:.2f}  {nb.label}".rstrip())
            for member, hits in neighbours.items()
            for nb in hits
        ]

    def inspect(self, latent: int) -> FeatureInfo:
        """Catalog entry of a latent; the logit lens is computed when there is no catalog."""
        latent = self.check_latent(latent)
        related = self.related_features(latent)
        if self.catalog is not None:
            entry = self.catalog.entry(latent)
            return FeatureInfo(**vars(entry), related=related)
        top, bottom = self.logit_lens(latent)
        return FeatureInfo(latent, "", None, None, None, top, bottom, [], related=related)

    def logit_lens(self, latent: int, n: int = 10) -> tuple[list[str], list[str]]:
        """Tokens the decoder direction promotes / suppresses (see steer.features.catalog.logit_lens)."""
        from steer.features.catalog import logit_lens

        latent = self.check_latent(latent)
        with self._lock, torch.inference_mode():
            top, bottom = logit_lens(
                self.lm, self.sae.decoder_directions([latent]), n=n, fast=False
            )
        return [self.token_text(t) for t in top[0].tolist()], [
            self.token_text(t) for t in bottom[0].tolist()
        ]

    def token_text(self, token_id: int) -> str:
        return self.lm.tokenizer.decode([int(token_id)])
