"""`steer cache`: run the model once and keep its activations on disk for many SAEs."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .options import (
    check_device,
    friendly_errors,
    model_dtype,
    parse_count,
    quiet_model_loading,
    resolve_device,
    train_contexts,
)


@friendly_errors
def cache(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the shards and cache.json."),
    model: str = typer.Option(
        "smollm2-135m",
        "--model",
        "-m",
        help="Model: smollm2-135m (embedded), a Hub id or a local directory.",
    ),
    layer: str = typer.Option(
        None,
        "--layer",
        "-l",
        help="Hook point: 8 or resid_post.8 (output of block 8, 0-based) (default: the middle block).",
    ),
    corpus: str = typer.Option(
        None,
        "--corpus",
        envvar="STEER_CORPUS",
        help="Text: a .txt/.jsonl/.parquet file (optionally .xz/.gz), a directory, a glob or hf:<dataset>. Its held-out 1% is left out, as in steer train.",
    ),
    text_field: str = typer.Option(
        "text", "--text-field", help="JSON/parquet field holding the text."
    ),
    ctx_len: int = typer.Option(
        128, "--ctx-len", help="Tokens per context (the first position of each is skipped)."
    ),
    tokens: str = typer.Option(
        "1M", "--tokens", "-n", help="Activations to store, e.g. 500k, 10M."
    ),
    shard_tokens: str = typer.Option(
        "64k", "--shard-tokens", help="Activations per shard file (safetensors)."
    ),
    store_dtype: str = typer.Option(
        "bf16",
        "--store-dtype",
        help="Precision on disk: bf16 (default; half the size, the model already runs under bf16 autocast), fp16 or fp32.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the context order and shuffling."),
    device: str = typer.Option("auto", "--device", help="auto (cuda when available), cpu or cuda."),
    dtype: str = typer.Option(
        "auto",
        "--dtype",
        help="Model precision: auto (fp32 weights under bf16 autocast), bf16, fp32 or fp16.",
    ),
) -> None:
    """Cache residual-stream activations as sharded safetensors (one model pass).

    The activations are those steer train streams (same contexts, first position of each skipped, shuffled within chunks of 256 contexts). Train any number of SAEs on them with steer train --activations DIR; cache.json records the model, hook point and corpus, so steer eval finds the held-out text afterwards.
    """
    from steer.evals.evaluate import DEFAULT_HELDOUT_FRACTION
    from steer.lm.cache import STORE_DTYPES, write_cache
    from steer.lm.models import load_model, parse_hookpoint

    total = parse_count(tokens, "--tokens")
    per_shard = parse_count(shard_tokens, "--shard-tokens")
    if store_dtype not in STORE_DTYPES:
        raise ValueError(
            f"--store-dtype must be one of {', '.join(STORE_DTYPES)}, got {store_dtype!r}"
        )
    if not corpus:
        raise ValueError("no corpus: pass --corpus PATH or set STEER_CORPUS")
    if ctx_len < 2:
        raise ValueError(f"--ctx-len must be at least 2, got {ctx_len}")
    layer_index = parse_hookpoint(layer) if layer is not None else None
    dev = check_device(resolve_device(device))
    quiet_model_loading()
    lm = load_model(model, device=dev, dtype=model_dtype(dtype))
    if layer_index is None:
        layer_index = lm.n_layers // 2
    lm.check_layer(layer_index)
    corpus_spec = corpus if corpus.startswith("hf:") else str(Path(corpus).expanduser().resolve())
    stream = _train_stream(lm, layer_index, corpus_spec, ctx_len, text_field, seed, dtype)
    meta = {
        "model_name": model,
        "hookpoint": f"resid_post.{layer_index}",
        "corpus": corpus_spec,
        "text_field": text_field,
        "ctx_len": ctx_len,
        "heldout_fraction": DEFAULT_HELDOUT_FRACTION,
        "seed": seed,
        "model_dtype": dtype,
        "skip_first": 1,
        "argv": list(sys.argv),
    }
    typer.echo(
        f"caching {total:,} activations of {model} resid_post.{layer_index} (d={lm.d_model}) -> {out}",
        err=True,
    )
    progress = _quarter_lines(total)
    info = write_cache(stream, out, total, per_shard, store_dtype, meta, on_progress=progress)
    size = sum((out / s["file"]).stat().st_size for s in info["shards"])
    typer.echo(
        f"{info['tokens']:,} activations in {len(info['shards'])} shard(s), {size / 2**20:,.1f} MiB, "
        f"{store_dtype}: {out}\ntrain with: steer train --activations {out} --widths ... --k ..."
    )


def _train_stream(lm, layer: int, corpus_spec: str, ctx_len: int, text_field: str, seed: int,
                  dtype: str):  # fmt: skip
    """The activations at `layer` over the corpus's train split (what `steer train` reads),
    repeated as needed; a one-line error now if the corpus is unreadable or empty."""
    from steer.lm.activations import ActivationStream

    contexts = train_contexts(corpus_spec, lm.tokenizer, ctx_len, text_field, seed)
    return ActivationStream(lm, layer, contexts, seed=seed, autocast=dtype == "auto")


def _quarter_lines(total: int):
    """on_progress(done) for write_cache: a line on stderr about every quarter."""
    next_report = [0.0]

    def progress(done: int) -> None:
        if done / total >= next_report[0]:
            typer.echo(f"  {done:,} / {total:,} tokens", err=True)
            next_report[0] += 0.25

    return progress
