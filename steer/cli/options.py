"""What the CLI commands share: one-line errors, devices, counts, option help, loading an SAE.

Commands import from here, never from each other (`make lint` checks it).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
import re
import sys
from pathlib import Path

import typer


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `error: message` on stderr and return an Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def friendly_errors(command):
    """Turn the library's ValueError/OSError into one line on stderr and exit code 1.

    Library code signals bad input by raising ValueError (or a subclass) with a message
    written for the user; a traceback would only hide that message.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise fail(message) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def resolve_device(device: str) -> str:
    """`auto` -> cuda when available, else cpu."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


# ---------------------------------------------------------------------- counts
COUNT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMbBgG]?)\s*$")
SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}
DTYPES = ("auto", "bf16", "fp32", "fp16")


def parse_count(value: str | int, option: str = "count") -> int:
    """`10M` -> 10_000_000, `500k` -> 500_000, `4096` -> 4096."""
    if isinstance(value, int):
        return value
    match = COUNT_RE.match(str(value))
    if not match:
        raise ValueError(f"{option}: cannot read {value!r} as a count (e.g. 4096, 500k, 10M)")
    count = float(match.group(1)) * SUFFIX[match.group(2).lower()]
    if count < 1 or count != int(count):
        raise ValueError(f"{option}: {value!r} is not a positive whole number")
    return int(count)


TOKENS_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_tokens(value: str, option: str = "--tokens") -> int:
    """`300k` -> 300_000, `1M`, `4096`."""
    match = TOKENS_RE.match(str(value))
    if not match:
        raise ValueError(f"{option}: cannot read {value!r} as a count (e.g. 4096, 300k, 1M)")
    count = float(match.group(1)) * {"": 1, "k": 10**3, "m": 10**6}[match.group(2).lower()]
    if count < 1:
        raise ValueError(f"{option} must be positive, got {value!r}")
    return int(count)


# ---------------------------------------------------------------------- devices and dtypes
def model_dtype(name: str):
    """--dtype -> torch dtype of the model weights (`auto`: fp32 weights, bf16 autocast)."""
    import torch

    table = {
        "auto": torch.float32,
        "fp32": torch.float32,
        "bf16": torch.bfloat16,
        "fp16": torch.float16,
    }
    if name not in table:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return table[name]


def quiet_model_loading() -> None:
    """transformers draws a "Loading weights" bar on stderr; a command's stderr is for
    its own progress and one-line errors."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def check_device(device: str) -> str:
    """A device torch can use here, or a one-line ValueError naming what is wrong."""
    import torch

    match = re.fullmatch(r"(cpu|mps|cuda)(?::(\d+))?", device)
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise ValueError(f"--device must be auto, cpu, cuda[:N] or mps, got {device!r}")
    kind, index = match.group(1), match.group(2)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA device is available (use --device cpu)")
        if index is not None and int(index) >= torch.cuda.device_count():
            raise ValueError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: the MPS backend is not available here (use --device cpu)")
    return device


SEED_MAX = 2**63 - 1  # torch.manual_seed takes a signed 64-bit integer


def check_seed(seed: int | None, option: str = "--seed") -> int | None:
    if seed is not None and not 0 <= seed <= SEED_MAX:
        raise ValueError(f"{option} must be in 0..2**63-1, got {seed}")
    return seed


def check_positive(**options) -> None:
    """check_positive(batch_size=0) -> ValueError '--batch-size must be at least 1, got 0'."""
    for name, value in options.items():
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def check_out_folder(path: Path | None, option: str = "--out") -> None:
    """An output folder: absent (it will be made) or a folder, never an existing file."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise ValueError(f"{option} {path} is a file: pass a folder (it is created if missing)")


def check_out_file(path: Path | None, option: str) -> None:
    """An output file: never an existing directory, and its parent must be a folder."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a directory: pass a file name")
    if path.parent.exists() and not path.parent.is_dir():
        raise ValueError(f"{option} {path}: {path.parent} is a file, not a folder")


def check_ctx_len(lm, ctx_len: int, option: str = "--ctx-len") -> None:
    """Contexts longer than the model's positions would fail (or run for ever) deep inside
    the model: say so before any work starts."""
    limit = max_positions(lm)
    if ctx_len < 2:
        raise ValueError(f"{option} must be at least 2, got {ctx_len}")
    if limit is not None and ctx_len > limit:
        raise ValueError(f"{option} {ctx_len} is beyond the model's {limit} positions")


def train_contexts(corpus: str, tokenizer, ctx_len: int, text_field: str, seed: int):
    """The corpus's train split (steer eval reads the held-out rest) as contexts, a new
    order each epoch, repeated as needed: what `steer train` and `steer cache` read. An
    unreadable or empty corpus is a one-line error now, before any file is written."""
    from steer.evals.evaluate import DEFAULT_HELDOUT_FRACTION
    from steer.lm.data import RepeatContexts, TokenContexts

    def contexts_for(epoch: int):
        return TokenContexts(
            corpus,
            tokenizer,
            ctx_len=ctx_len,
            text_field=text_field,
            split="train",
            heldout_fraction=DEFAULT_HELDOUT_FRACTION,
            seed=seed + epoch,
        )

    next(iter(contexts_for(0)))
    return RepeatContexts(contexts_for)


def max_positions(lm) -> int | None:
    """The longest sequence the model takes (None when its config does not say)."""
    config = getattr(lm.model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_fits_memory(n_bytes: int, what: str, device: str) -> None:
    """Refuse an allocation that cannot fit, before trying it (a failed try can take the
    machine down with it). CPU: the physical memory; CUDA: the device's memory."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        dev = torch.device(device)
        total = torch.cuda.get_device_properties(dev.index or 0).total_memory
    else:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return
    if n_bytes > total:
        raise ValueError(
            f"{what} needs {_gib(n_bytes)} of memory, more than the {_gib(total)} this "
            f"{'GPU' if str(device).startswith('cuda') else 'machine'} has"
        )


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def provenance_of(cfg) -> dict:
    """The training provenance an SAE config carries (written by `steer train`)."""
    extra = getattr(cfg, "extra", None) or {}
    nested = extra.get("provenance")
    return nested if isinstance(nested, dict) else extra


# ---------------------------------------------------------------------- an SAE with its model and catalog
def load_for_steering(
    sae_dir: Path, model: str | None, device: str, dtype: str = "fp32", latents=()
):
    """(lm, sae) for a checkpoint folder; latents are checked before the model loads."""
    import torch
    from transformers.utils import logging as hf_logging

    from steer.steering import open_sae

    hf_logging.disable_progress_bar()  # stderr is for our progress and one-line errors
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if dtype not in dtypes:
        raise ValueError(f"--dtype must be fp32 or bf16, got {dtype!r}")
    return open_sae(
        sae_dir,
        model=model,
        device=check_device(resolve_device(device)),
        dtype=dtypes[dtype],
        latents=latents,
    )


def load_catalog_for(sae_dir: Path, sae, warn: bool = True):
    """The SAE's catalog, or None (with a note on stderr when it belongs to another SAE)."""
    from steer.features.catalog import CatalogMismatch, FeatureCatalog

    try:
        return FeatureCatalog.for_sae(sae_dir, sae)
    except CatalogMismatch:
        if warn:
            typer.echo(
                f"note: the catalog in {sae_dir} was built for another SAE; ignoring it (rerun steer index)",
                err=True,
            )
        return None


SAE_HELP = "SAE checkpoint folder (cfg.json + sae.safetensors); its catalog/ is used when present."
SAE_DEFAULT_HELP = " Default: the SAE shipped for the embedded model (as steer chat opens)."
MODEL_HELP = "Model to steer (default: the one named in the SAE's cfg.json)."
DEVICE_HELP = "cpu, cuda, or auto (cuda when available)."


@functools.cache
def field_docs(package: str, module_path: str, class_name: str) -> dict[str, str]:
    """The field docstrings of a dataclass (the string under each field), read from its
    source without importing it: option help comes from the config's own words, and
    `steer --help` stays free of torch. module_path is relative to the package folder."""
    spec = importlib.util.find_spec(package)  # a top-level package: found, not imported
    if spec is None or not spec.submodule_search_locations:
        return {}
    source = Path(spec.submodule_search_locations[0], module_path).read_text()
    cls = next(
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ClassDef) and node.name == class_name
    )
    docs = {}
    for node, after in zip(cls.body, cls.body[1:], strict=False):  # (field, its docstring)
        doc = getattr(after, "value", None)
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(doc, ast.Constant)
            and isinstance(doc.value, str)
        ):
            docs[node.target.id] = " ".join(doc.value.split())
    return docs


def feature_caption(catalog, latent: int) -> str:
    """A feature's label with the score of its explanation: `" Paris" after " in" → France
    · n2g precision 0.83 · recall 0.62` ("" without a catalog)."""
    if catalog is None:
        return ""
    label = catalog.label(latent)
    shown = catalog.explanations.explanation(latent) if catalog.explanations else None
    return f"{label} · {shown.source} {shown.score}" if shown else label


def explanation_json(catalog, latent: int) -> dict | None:
    """{text, source, score} of a feature's best explanation, or None."""
    if catalog is None or catalog.explanations is None:
        return None
    shown = catalog.explanations.explanation(latent)
    return (
        None
        if shown is None
        else {"text": shown.text, "source": shown.source, "score": shown.score}
    )


# ---------------------------------------------------------------------- the default SAE, prompts
# The token `steer attribute` and `steer circuit` explain, chosen the same way in both.
TARGET_OPTION = typer.Option(
    None,
    "--target",
    "-t",
    help="The token to explain (one token, e.g. ' Paris', or #ID). Without --position: the "
    "token after the prompt, or its first occurrence in the completion.",
)
POSITION_OPTION = typer.Option(
    None,
    "--position",
    help="Explain the token at this index (0-based) of the completion when there is one, "
    "else of the prompt; negative counts from the end.",
)
CONTRAST_OPTION = typer.Option(
    None, "--contrast", help="Explain logit(target) - logit(this token) instead."
)


def sae_or_default(sae: Path | None, model: str | None = None) -> Path:
    """--sae, or the SAE shipped for the embedded model (said on stderr), as `steer chat`
    opens it. Every command taking --sae calls this (generate, features, index, eval,
    serve, vector, sweep, attribute, circuit, explain, web), so they all default the same
    way. With another --model there
    is no default."""
    if sae is not None:
        return Path(sae)
    from steer.app.checkpoints import find_default_sae
    from steer.lm.models import DEFAULT_MODEL, EMBEDDED_HUB_ID

    if model not in (None, DEFAULT_MODEL, EMBEDDED_HUB_ID):
        raise ValueError(f"give the SAE with --sae DIR (the shipped SAE is for {DEFAULT_MODEL})")
    found = find_default_sae()
    if found is None:
        raise ValueError("no --sae given and no shipped SAE found: give --sae DIR")
    typer.echo(f"using the shipped SAE {found} (--sae to choose)", err=True)
    return found


def read_prompts(values: list[str], option: str) -> list[str]:
    """Prompts from repeated options: each value is a file (one prompt per line; blank
    lines and lines starting with # skipped) when such a file exists, else the prompt
    itself."""
    prompts: list[str] = []
    for value in values:
        path = Path(value).expanduser()
        if path.is_file():
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as err:
                raise ValueError(f"{option} {value}: cannot read it ({err})") from None
            found = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            if not found:
                raise ValueError(f"{option} {value}: the file holds no prompts")
            prompts += found
        elif value.strip():
            prompts.append(value.strip())
        else:
            raise ValueError(f"{option}: an empty prompt")
    return prompts
