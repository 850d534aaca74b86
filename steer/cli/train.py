"""`steer train`: train a family of TopK SAEs on one hook point of a model."""

from __future__ import annotations

import shlex
import signal
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
)


def parse_widths(spec: str, d_model: int) -> list[int]:
    """`8x,16x` (multiples of d_model) or `4608,16k` -> latent counts."""
    widths = []
    for part in _split(spec, "--widths"):
        if part.lower().endswith("x"):
            try:
                factor = float(part[:-1])
            except ValueError:
                raise ValueError(f"--widths: cannot read {part!r} (use e.g. 8x or 4608)") from None
            width = round(factor * d_model)
        else:
            width = parse_count(part, "--widths")
        if width < 1:
            raise ValueError(f"--widths: {part!r} gives no latents")
        widths.append(width)
    return widths


def parse_ks(spec: str) -> list[int]:
    return [parse_count(part, "--k") for part in _split(spec, "--k")]


def _split(spec: str, option: str) -> list[str]:
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not parts:
        raise ValueError(f"{option} is empty")
    return parts


def check_resume_settings(out_dir: Path, setting: dict) -> None:
    """A resumed run must read the same activations as the run it continues."""
    import json

    for cfg_path in sorted(out_dir.glob("*/cfg.json")):
        try:
            saved = json.loads(cfg_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # the trainer's own state check reports a broken run
        prov = {**saved.get("extra", {}), **{k: saved.get(k) for k in ("model_name", "hookpoint")}}
        for key, value in setting.items():
            if key in prov and prov[key] != value:
                raise ValueError(
                    f"cannot resume {out_dir}: it was trained with {key}={prov[key]!r}, "
                    f"this command has {value!r}"
                )
        return


def default_out_dir(model: str, layer: int) -> Path:
    slug = Path(model).name if Path(model).expanduser().is_dir() else model.replace("/", "--")
    return Path("runs") / slug / f"resid_post.{layer}"


@friendly_errors
def train(
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="Model: smollm2-135m (embedded), a Hub id or a local directory. Default: gpt2 when its weights are cached or the Hub is reachable, else smollm2-135m.",
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
        help="Training text: a .txt/.jsonl/.parquet file (optionally .xz/.gz), a directory of them, or hf:<dataset>. 1% of documents are held out for steer eval.",
    ),
    text_field: str = typer.Option(
        "text", "--text-field", help="JSON/parquet field holding the text."
    ),
    ctx_len: int = typer.Option(
        128, "--ctx-len", help="Tokens per context (the first position of each is skipped)."
    ),
    widths: str = typer.Option(
        "8x",
        "--widths",
        "-w",
        help="Comma list of SAE widths: latent counts (4608, 16k) or multiples of d_model (8x). One SAE per width and k, all trained on one pass.",
    ),
    k: str = typer.Option("32", "--k", "-k", help="Comma list of active latents per token (TopK)."),
    batch_tokens: int = typer.Option(
        4096,
        "--batch-tokens",
        help="Activations (tokens) per optimizer step; under torchrun the global batch, split across the processes.",
    ),
    tokens: str = typer.Option(
        "10M", "--tokens", "-n", help="Total training tokens, e.g. 500k, 10M."
    ),
    lr: float = typer.Option(
        None,
        "--lr",
        help="Learning rate (default, per SAE: 2e-4 / sqrt(n_latents / 2^14) with adam, 2.5e-3 / sqrt(n_latents / 2^14) with signum).",
    ),
    optimizer: str = typer.Option(
        "adam",
        "--optimizer",
        help="adam: the paper's recipe (warmup, decay over the last 20%). signum: schedule-free SignSGD as in sparsify; no decay, faster on short runs.",
    ),
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="Output folder (default: runs/<model>/resid_post.L): one <n>-k<k>/ checkpoint per SAE, metrics.jsonl, train_state/.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for SAE init and data order."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run saved in --out where it stopped."
    ),
    save_every: int = typer.Option(
        500, "--save-every", help="Save checkpoints and training state every N steps."
    ),
    device: str = typer.Option("auto", "--device", help="auto (cuda when available), cpu or cuda."),
    dtype: str = typer.Option(
        "auto",
        "--dtype",
        help="Model precision for activations: auto (fp32 weights under bf16 autocast), bf16, fp32 or fp16. SAEs train in fp32.",
    ),
    multi_topk: bool = typer.Option(
        False,
        "--multi-topk",
        help="Multi-TopK loss L(k) + L(4k)/8, so k can be raised at inference.",
    ),
    activations: Path = typer.Option(
        None,
        "--activations",
        help="Train on activations cached by steer cache (this folder) instead of running the model; model, layer and corpus come from its cache.json.",
    ),
    matryoshka: str = typer.Option(
        None,
        "--matryoshka",
        help="Train one Matryoshka SAE with these nested levels, e.g. 1152,2304,4608,9216 (replaces --widths; one k): the first m latents form an SAE of their own for each m, opened as DIR@m.",
    ),
) -> None:
    """Train TopK SAEs (Gao et al. 2024) on the residual stream after one block.

    Activations stream from the model, the first position of each context skipped; every width x k pair trains on the same batches. Checkpoints (cfg.json + sae.safetensors per SAE), metrics.jsonl and the training state go to --out. Ctrl-C saves and stops; run the same command with --resume to continue.

    Data parallel: launch with torchrun (e.g. torchrun --nproc_per_node 2 -m steer train ...); each process reads its own share of the corpus, rank 0 writes the files.
    """
    from sae.train.distributed import DistributedTrainer, rank_batch_tokens
    from sae.train.trainer import OPTIMIZERS, TrainConfig, Trainer
    from steer.evals.evaluate import DEFAULT_HELDOUT_FRACTION
    from steer.lm.activations import ActivationStream
    from steer.lm.data import RepeatContexts, TokenContexts
    from steer.lm.distributed import ShardedStream, init_distributed, shutdown_distributed
    from steer.lm.models import default_training_model, load_model, parse_hookpoint

    total_tokens = parse_count(tokens, "--tokens")
    ks = parse_ks(k)
    torch_dtype = model_dtype(dtype)
    if not corpus and activations is None:
        raise ValueError(
            "no corpus: pass --corpus PATH (a .txt/.jsonl/.parquet file, optionally .xz/.gz, "
            "a directory of them, or hf:<dataset>) or set STEER_CORPUS, or --activations DIR"
        )
    if ctx_len < 2:
        raise ValueError(f"--ctx-len must be at least 2, got {ctx_len}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if batch_tokens < 1 or save_every < 1:
        raise ValueError("--batch-tokens and --save-every must be positive")
    layer_index = parse_hookpoint(layer) if layer is not None else None

    dist_env = init_distributed(device)  # torchrun: join the process group, cuda:LOCAL_RANK
    dev = check_device(dist_env.device if dist_env.distributed else resolve_device(device))
    if activations is not None:
        if dist_env.distributed:
            raise ValueError("--activations trains in one process: launch without torchrun")
        stream, cached = _cached_source(activations, model, layer_index, batch_tokens, seed)
        model, layer_index, d_model = cached["model_name"], cached["layer"], cached["d_in"]
        corpus_spec, text_field, ctx_len = cached["corpus"], cached["text_field"], cached["ctx_len"]
        corpus = corpus_spec
    else:
        if model is None:
            model = default_training_model()
            typer.echo(f"no --model given: training on {model}", err=True)
        quiet_model_loading()
        lm = load_model(model, device=dev, dtype=torch_dtype)
        if layer_index is None:
            layer_index = lm.n_layers // 2
        lm.check_layer(layer_index)
        d_model = lm.d_model
        corpus_spec = (
            corpus if corpus.startswith("hf:") else str(Path(corpus).expanduser().resolve())
        )
    width_list = parse_widths(widths, d_model)
    levels = parse_widths(matryoshka, d_model) if matryoshka else []
    if levels:
        width_list = [levels[-1]]
    for kk in ks:
        for width in width_list:
            if kk > width:
                raise ValueError(
                    f"k={kk} is larger than width {width}: each SAE needs k <= its number of latents"
                )
    out_dir = Path(out) if out is not None else default_out_dir(model, layer_index)
    state_dir = out_dir / "train_state"
    if batch_tokens < dist_env.world_size:
        raise ValueError(
            f"--batch-tokens {batch_tokens} is smaller than the {dist_env.world_size} processes"
        )
    if resume and not state_dir.exists():
        raise ValueError(
            f"nothing to resume: {state_dir} does not exist (run without --resume first)"
        )
    if not resume and state_dir.exists():
        raise ValueError(
            f"{out_dir} already holds a run: pass --resume to continue it, or choose another --out"
        )
    setting = dict(
        model_name=model,
        hookpoint=f"resid_post.{layer_index}",
        corpus=corpus_spec,
        text_field=text_field,
        ctx_len=ctx_len,
        seed=seed,
        dtype=dtype,
        optimizer=optimizer,
        activations=str(Path(activations).resolve()) if activations is not None else None,
        matryoshka=levels,
    )
    if resume:
        check_resume_settings(out_dir, setting)

    if activations is None:

        def contexts_for(epoch: int):
            return TokenContexts(
                corpus_spec,
                lm.tokenizer,
                ctx_len=ctx_len,
                text_field=text_field,
                split="train",
                heldout_fraction=DEFAULT_HELDOUT_FRACTION,
                seed=seed + epoch,
            )

        # Fail fast (one line) on an unreadable or empty corpus, before any file is written.
        next(iter(contexts_for(0)))
        stream = ActivationStream(
            lm,
            layer_index,
            RepeatContexts(contexts_for),
            batch_tokens=rank_batch_tokens(batch_tokens, dist_env.rank, dist_env.world_size),
            seed=seed,
            autocast=dtype == "auto",
            rank=dist_env.rank,
            world_size=dist_env.world_size,
        )
        # Resumable with another number of processes than the run it continues.
        stream = ShardedStream(stream, ctx_len)

    params = dict(
        model=model,
        layer=f"resid_post.{layer_index}",
        corpus=corpus,
        text_field=text_field,
        ctx_len=ctx_len,
        widths=widths,
        k=k,
        batch_tokens=batch_tokens,
        tokens=tokens,
        lr=lr,
        optimizer=optimizer,
        out=str(out_dir),
        seed=seed,
        save_every=save_every,
        device=device,
        dtype=dtype,
        multi_topk=multi_topk,
        activations=activations,
        matryoshka=matryoshka,
    )
    if activations is not None:  # model, corpus and layer come from the cache
        for key in ("model", "layer", "corpus", "text_field", "ctx_len", "dtype"):
            params.pop(key)
    command = _command_line(params)
    provenance = {
        "command": command,
        "argv": list(sys.argv),
        "corpus": corpus_spec,
        "text_field": text_field,
        "ctx_len": ctx_len,
        "heldout_fraction": DEFAULT_HELDOUT_FRACTION,
        "dtype": dtype,
        "seed": seed,
        "optimizer": optimizer,
        "matryoshka": levels,
        "skip_first": 1,
        "world_size": dist_env.world_size,
    }
    if activations is not None:
        provenance["activations"] = setting["activations"]
    steps = max(1, total_tokens // batch_tokens)
    cfg = TrainConfig(
        widths=width_list,
        ks=ks,
        batch_tokens=batch_tokens,
        total_tokens=total_tokens,
        lr=lr,
        optimizer=optimizer,
        multi_topk=multi_topk,
        matryoshka=levels,
        save_every_steps=save_every,
        seed=seed,
        device=dev,
        # Short runs: warm up over 5% of the steps (at most the usual 100) and log often
        # enough to draw a curve.
        warmup_steps=min(100, max(1, steps // 20)),
        log_every_steps=min(10, max(1, steps // 100)),
    )
    trainer = (DistributedTrainer if dist_env.distributed else Trainer)(
        cfg,
        d_model,
        out_dir,
        hookpoint=f"resid_post.{layer_index}",
        model_name=model,
        provenance=provenance,
    )

    # Only rank 0 talks (and writes files: see sae/distributed.py).
    err = typer.echo if dist_env.is_main else (lambda *args, **kwargs: None)
    err(
        f"training {len(width_list) * len(ks)} SAE(s) on {model} resid_post.{layer_index} "
        f"(d={d_model}): widths {width_list}, k {ks}, {total_tokens:,} tokens -> {out_dir}",
        err=True,
    )
    if dist_env.distributed:
        err(
            f"data parallel: {dist_env.world_size} processes ({dist_env.backend}), global batch "
            f"{batch_tokens:,} tokens = about {batch_tokens // dist_env.world_size:,} per process",
            err=True,
        )
    result = _fit_with_progress(trainer, stream, total_tokens, resume, show=dist_env.is_main)
    if getattr(stream, "resharded", None):
        err(
            f"resumed a {stream.resharded['from']}-process run with {dist_env.world_size}: skipped "
            f"the {stream.resharded['skipped_contexts']:,} contexts its processes had started",
            err=True,
        )
    shutdown_distributed()

    stopped = result.get("stopped", "done")
    if dist_env.is_main:
        _print_summary(result, out_dir)
    if stopped == "interrupted":
        err(
            f"interrupted at {result.get('tokens', 0):,} tokens; checkpoints and training state "
            f"saved in {out_dir}. Resume with:\n  {command} --resume"
            + (
                f"\n(under torchrun, as launched: {dist_env.world_size} processes, or any other number)"
                if dist_env.distributed
                else ""
            ),
            err=True,
        )
        raise typer.Exit(130)
    if stopped == "nan":
        raise ValueError(
            f"training diverged (NaN/Inf) at step {result.get('steps')}: the last good checkpoint "
            f"is kept in {out_dir}; try a lower --lr"
        )
    err(f"done: evaluate with  steer eval --sae {out_dir}", err=True)


def _command_line(params: dict) -> str:
    """The full `steer train` command these settings correspond to (for provenance/resume)."""
    words = ["steer", "train"]
    for name, value in params.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        words += [flag] if value is True else [flag, str(value)]
    return shlex.join(words)


def _fit_with_progress(trainer, stream, total_tokens: int, resume: bool, show: bool = True) -> dict:
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
        with progress:
            return trainer.fit(stream, resume=resume, on_log=on_log)
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


def _print_summary(result: dict, out_dir: Path) -> None:
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


def _cached_source(
    folder: Path, model: str | None, layer: int | None, batch_tokens: int, seed: int
):
    """(stream, settings) for a cache written by steer cache; --model / --layer, when
    given, must agree with it."""
    from steer.lm.cache import CachedActivations
    from steer.lm.models import parse_hookpoint

    stream = CachedActivations(folder, batch_tokens=batch_tokens, seed=seed)
    meta = stream.meta
    cached_layer = parse_hookpoint(meta.get("hookpoint", ""))
    if layer is not None and layer != cached_layer:
        raise ValueError(f"--layer {layer}: the cache {folder} holds resid_post.{cached_layer}")
    if model is not None and model != meta.get("model_name"):
        raise ValueError(f"--model {model}: the cache {folder} holds {meta.get('model_name')}")
    settings = {
        "model_name": meta.get("model_name", ""),
        "layer": cached_layer,
        "d_in": int(meta["d_in"]),
        "corpus": meta.get("corpus", ""),
        "text_field": meta.get("text_field", "text"),
        "ctx_len": int(meta.get("ctx_len", 128)),
    }
    return stream, settings
