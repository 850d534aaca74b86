"""The parts of `steer train` besides its flags: where the activations come from (the
model over a corpus, or a steer cache), the progress bar with Ctrl-C handling, the summary.

Not a command: steer/cli/train.py alone imports it.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path

import typer

from .options import check_ctx_len, quiet_model_loading, train_contexts


def parse_layers(spec: str | None) -> int | list[int] | None:
    """`8` / `resid_post.8` -> 8; `4,8,12`, `4-16:4` (4 to 16 by 4), `4-6` or a mix of
    them -> the sorted list of layers (several depths from one forward pass)."""
    from steer.lm.models import parse_hookpoint

    if spec is None:
        return None
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not parts:
        raise ValueError("--layer is empty")
    if len(parts) == 1 and "-" not in parts[0]:
        return parse_hookpoint(parts[0])
    layers: list[int] = []
    for part in parts:
        if "-" not in part:
            layers.append(parse_hookpoint(part))
            continue
        span, _, step = part.partition(":")
        first, _, last = span.partition("-")
        try:
            start, stop, by = int(first), int(last), int(step or 1)
        except ValueError:
            raise ValueError(f"--layer: cannot read {part!r} (use e.g. 4-16:4 or 4,8,12)") from None
        if by < 1 or stop < start:
            raise ValueError(f"--layer: {part!r} is an empty range (use e.g. 4-16:4)")
        layers += range(start, stop + 1, by)
    if len(set(layers)) != len(layers):
        raise ValueError(f"--layer {spec}: a layer is listed twice")
    return sorted(layers)


def fit_with_progress(trainer, stream, total_tokens: int, resume: bool, show: bool = True) -> dict:
    """Run trainer.fit with a rich progress bar (show=False: silent, for ranks other than 0);
    SIGINT or SIGTERM (torchrun forwards both to its workers) asks the trainer to save and stop."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True, quiet=not show)
    interactive = console.is_terminal and show
    progress = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} tok"),
        TextColumn("{task.fields[speed]}"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[metrics]}"),
        console=console,
        disable=not interactive,
    )
    task = progress.add_task("train", total=total_tokens, speed="", metrics="")
    next_report = [0.0]

    def on_log(record: dict) -> None:
        metrics = _format_metrics(record.get("saes", {}))
        speed = f"{record.get('tokens_per_s', 0):,.0f} tok/s"
        progress.update(task, completed=record.get("tokens", 0), speed=speed, metrics=metrics)
        fraction = record.get("tokens", 0) / total_tokens
        if not interactive and fraction >= next_report[0]:
            # Plain lines when stderr is not a terminal (logs, CI): about every 10%.
            console.print(
                f"step {record.get('step')}: {record.get('tokens', 0):,} tokens, {speed}, {metrics}",
                highlight=False,
            )
            next_report[0] = fraction + 0.1

    with _save_and_stop_on_signals(trainer, console), progress:
        return trainer.fit(stream, resume=resume, on_log=on_log)


@contextlib.contextmanager
def _save_and_stop_on_signals(trainer, console):
    """Inside the block, SIGINT or SIGTERM asks the trainer to save and stop after the
    step; a second one stops at once. The previous handlers come back after it."""
    interrupts = [0]

    def on_sigint(_signum, _frame):
        interrupts[0] += 1
        if interrupts[0] > 1:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without saving
        trainer.request_stop()
        console.print(
            "\nCtrl-C: saving and stopping after this step (press again to abort)", highlight=False
        )

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, on_sigint)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _format_metrics(saes: dict, limit: int = 3) -> str:
    parts = []
    for name, m in list(saes.items())[:limit]:
        parts.append(
            f"{name} fvu {m.get('fvu', float('nan')):.3f} L0 {m.get('l0', float('nan')):.0f} "
            f"dead {m.get('dead_frac', float('nan')):.0%}"
        )
    if len(saes) > limit:
        parts.append(f"+{len(saes) - limit} more")
    return " | ".join(parts)


def print_summary(result: dict, out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.get('steps', 0):,} steps, {result.get('tokens', 0):,} tokens")
    for column in ("SAE", "FVU", "L0", "dead", "checkpoint"):
        table.add_column(column, justify="left" if column in ("SAE", "checkpoint") else "right")
    for name, m in result.get("saes", {}).items():
        table.add_row(
            name,
            _fmt(m.get("fvu"), ".4f"),
            _fmt(m.get("l0"), ".1f"),
            _fmt(m.get("dead_frac"), ".1%"),
            str(m.get("path", out_dir / name)),
        )
    console = Console(file=sys.stdout)
    if not console.is_terminal:
        console = Console(file=sys.stdout, width=130)
    console.print(table)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


class Source:
    """Where the activations come from: the model run over a corpus, or a steer cache."""

    def __init__(self, model, layer, d_model, corpus, text_field, ctx_len, lm=None, stream=None):
        self.model, self.layer, self.d_model = model, layer, d_model
        self.corpus, self.text_field, self.ctx_len = corpus, text_field, ctx_len
        self.lm, self.stream = lm, stream


def model_source(model, layer, corpus, text_field, ctx_len, torch_dtype, dev) -> Source:
    from steer.lm.models import default_training_model, load_model

    if model is None:
        model = default_training_model()
        typer.echo(f"no --model given: training on {model}", err=True)
    quiet_model_loading()
    lm = load_model(model, device=dev, dtype=torch_dtype)
    if layer is None:
        layer = lm.n_layers // 2
    elif isinstance(layer, list):  # several depths from one forward pass
        layer = [lm.check_layer(one) for one in layer]
    else:
        layer = lm.check_layer(layer)
    check_ctx_len(lm, ctx_len)
    spec = corpus if corpus.startswith("hf:") else str(Path(corpus).expanduser().resolve())
    return Source(model, layer, lm.d_model, spec, text_field, ctx_len, lm=lm)


def model_stream(source: Source, batch_tokens: int, seed: int, dtype: str, dist_env):
    """The activation stream of the model over the corpus's train split, repeated as needed."""
    from sae.train.shards import rank_batch_tokens
    from steer.lm.activations import ActivationStream
    from steer.lm.distributed import ShardedStream

    contexts = train_contexts(
        source.corpus, source.lm.tokenizer, source.ctx_len, source.text_field, seed
    )
    stream = ActivationStream(
        source.lm,
        source.layer,
        contexts,
        batch_tokens=rank_batch_tokens(batch_tokens, dist_env.rank, dist_env.world_size),
        seed=seed,
        autocast=dtype == "auto",
        rank=dist_env.rank,
        world_size=dist_env.world_size,
    )
    # Resumable with another number of processes than the run it continues.
    return ShardedStream(stream, source.ctx_len)


def cached_source(
    folder: Path, model: str | None, layer: int | None, batch_tokens: int, seed: int
) -> Source:
    """The activations cached by steer cache in `folder`; --model / --layer, when given,
    must agree with it."""
    from steer.lm.cache import CachedActivations
    from steer.lm.models import parse_hookpoint

    stream = CachedActivations(folder, batch_tokens=batch_tokens, seed=seed)
    meta = stream.meta
    cached_layer = parse_hookpoint(meta.get("hookpoint", ""))
    if layer is not None and layer != cached_layer:
        raise ValueError(f"--layer {layer}: the cache {folder} holds resid_post.{cached_layer}")
    if model is not None and model != meta.get("model_name"):
        raise ValueError(f"--model {model}: the cache {folder} holds {meta.get('model_name')}")
    return Source(
        meta.get("model_name", ""),
        cached_layer,
        int(meta["d_in"]),
        meta.get("corpus", ""),
        meta.get("text_field", "text"),
        int(meta.get("ctx_len", 128)),
        stream=stream,
    )


def open_source(activations, model, layer, corpus, text_field, ctx_len, torch_dtype, dev,
                batch_tokens, seed, dist_env) -> Source:  # fmt: skip
    """Where the activations come from: the cache in --activations (one process, one hook
    point), or the model over the corpus."""
    multi = isinstance(layer, list)
    if multi and dist_env.distributed:
        raise ValueError("several --layer depths train in one process: launch without torchrun")
    if activations is not None:
        if dist_env.distributed:
            raise ValueError("--activations trains in one process: launch without torchrun")
        if multi:
            raise ValueError(
                "--activations holds one hook point: give one --layer, or run the model"
            )
        return cached_source(activations, model, layer, batch_tokens, seed)
    return model_source(model, layer, corpus, text_field, ctx_len, torch_dtype, dev)


def make_trainer(cfg, source: Source, out_dir: Path, run: dict, provenance: dict, dist_env):
    """The trainer of this run: data parallel under torchrun, one family per depth with
    several --layer depths."""
    from sae.train.distributed import DistributedTrainer
    from sae.train.trainer import Trainer

    multi = isinstance(source.layer, list)
    return (DistributedTrainer if dist_env.distributed else Trainer)(
        cfg,
        source.d_model,
        out_dir,
        hookpoint=run["hookpoint"],
        hookpoints=[f"resid_post.{one}" for one in source.layer] if multi else None,
        model_name=source.model,
        provenance=provenance,
    )
