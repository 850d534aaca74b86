"""The KV cache across transformers versions.

transformers 5.2x names it `cache` (the forward's argument and the output's field) and
warns on every use of the old name `past_key_values`, which goes away in 5.40; older
versions (pyproject allows >= 4.45) know only `past_key_values`. Every forward that reuses
a prefix goes through these two helpers, so steer works on both and prints no warning."""

from __future__ import annotations

import functools
import inspect


@functools.cache
def _cache_argument(model_class: type) -> str:
    params = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(model, cache) -> dict:
    """{name: cache} for model(...), under the name this transformers version takes."""
    return {_cache_argument(type(model)): cache}


def output_cache(out):
    """The KV cache a forward returned (use_cache=True), whatever its field is called."""
    return out["cache"] if "cache" in out else out["past_key_values"]
