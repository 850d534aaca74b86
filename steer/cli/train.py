"""`steer train`: train a family of TopK SAEs on one hook point of a model."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from .options import (
    check_device,
    check_fits_memory,
    check_out_folder,
    check_seed,
    field_docs,
    friendly_errors,
    model_dtype,
    parse_count,
    resolve_device,
)
from .training import (
    cached_source,
    fit_with_progress,
    model_source,
    model_stream,
    parse_layers,
    print_summary,
)

# TrainConfig field -> the flag that sets it. A flag's help is the field's docstring (one
# source: sae/train/config.py), then what the CLI adds; TrainConfig's checks name the flag.
CONFIG_FLAGS = {
    "widths": "--widths",
    "ks": "--k",
    "batch_tokens": "--batch-tokens",
    "total_tokens": "--tokens",
    "lr": "--lr",
    "optimizer": "--optimizer",
    "multi_topk": "--multi-topk",
    "matryoshka": "--matryoshka",
    "archs": "--arch",
    "l1_coeffs": "--l1",
    "l0_coeffs": "--l0",
    "save_every_steps": "--save-every",
    "seed": "--seed",
}


def config_help(field: str, cli: str = "") -> str:
    doc = field_docs("sae", "train/config.py", "TrainConfig").get(field, "")
    return " ".join(part for part in (doc, cli) if part)


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


def _floats(spec: str, option: str) -> list[float]:
    try:
        return [float(part) for part in _split(spec, option)]
    except ValueError:
        raise ValueError(f"{option}: cannot read {spec!r} (use e.g. 0.5,1,2)") from None


def check_resume_settings(out_dir: Path, setting: dict) -> None:
    """A resumed run must read the same activations as the run it continues."""
    import json

    cfgs = sorted(out_dir.glob("*/cfg.json")) + sorted(out_dir.glob("resid_post.*/*/cfg.json"))
    for cfg_path in cfgs:
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


def default_out_dir(model: str, layer: int | list[int]) -> Path:
    slug = Path(model).name if Path(model).expanduser().is_dir() else model.replace("/", "--")
    if isinstance(layer, list):  # several depths: one resid_post.L/ each inside
        return Path("runs") / slug
    return Path("runs") / slug / f"resid_post.{layer}"


@friendly_errors
def train(  # one typer.Option per flag: long, but it reads as the flag table
    ctx: typer.Context,
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
        help="Hook point: 8 or resid_post.8 (output of block 8, 0-based) (default: the middle block). Several depths from one forward pass per batch: 4,8,12,16 or a range 4-16:4 (4 to 16 by 4); the family trains at each, in --out/resid_post.L/ (default --out: runs/<model>).",
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
        help=config_help(
            "widths", "Comma list: latent counts (4608, 16k) or multiples of d_model (8x)."
        ),
    ),
    k: str = typer.Option("32", "--k", "-k", help=config_help("ks", "Comma list.")),
    batch_tokens: int = typer.Option(
        4096,
        "--batch-tokens",
        help=config_help(
            "batch_tokens", "Under torchrun the global batch, split across the processes."
        ),
    ),
    tokens: str = typer.Option(
        "10M", "--tokens", "-n", help=config_help("total_tokens", "E.g. 500k, 10M.")
    ),
    lr: float = typer.Option(
        None,
        "--lr",
        help=config_help("lr"),
    ),
    optimizer: str = typer.Option(
        "adam",
        "--optimizer",
        help=config_help("optimizer"),
    ),
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="Output folder (default: runs/<model>/resid_post.L): one <n>-k<k>/ checkpoint per SAE, metrics.jsonl, train_state/.",
    ),
    seed: int = typer.Option(0, "--seed", help=config_help("seed", "Also the data order.")),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run saved in --out where it stopped."
    ),
    save_every: int = typer.Option(500, "--save-every", help=config_help("save_every_steps")),
    device: str = typer.Option("auto", "--device", help="auto (cuda when available), cpu or cuda."),
    dtype: str = typer.Option(
        "auto",
        "--dtype",
        help="Model precision for activations: auto (fp32 weights under bf16 autocast), bf16, fp32 or fp16. SAEs train in fp32.",
    ),
    multi_topk: bool = typer.Option(
        False,
        "--multi-topk",
        help=config_help("multi_topk"),
    ),
    arch: str = typer.Option(
        "topk",
        "--arch",
        help=config_help("archs", "Comma list, e.g. topk,batchtopk,relu,jumprelu."),
    ),
    l1: str = typer.Option("1", "--l1", help=config_help("l1_coeffs", "Comma list.")),
    l0: str = typer.Option("0.001", "--l0", help=config_help("l0_coeffs", "Comma list.")),
    activations: Path = typer.Option(
        None,
        "--activations",
        help="Train on activations cached by steer cache (this folder) instead of running the model; model, layer and corpus come from its cache.json.",
    ),
    matryoshka: str = typer.Option(
        None,
        "--matryoshka",
        help=config_help(
            "matryoshka",
            "Comma list, e.g. 1152,2304,4608,9216 (replaces --widths; one k); DIR@m opens level m.",
        ),
    ),
) -> None:
    """Train TopK SAEs (Gao et al. 2024) on the residual stream after one block.

    Activations stream from the model, the first position of each context skipped; every width x k pair trains on the same batches. Checkpoints (cfg.json + sae.safetensors per SAE), metrics.jsonl and the training state go to --out. Ctrl-C saves and stops; run the same command with --resume to continue.

    Data parallel: launch with torchrun (e.g. torchrun --nproc_per_node 2 -m steer train ...); each process reads its own share of the corpus, rank 0 writes the files.
    """
    from sae.train.distributed import DistributedTrainer
    from sae.train.trainer import Trainer
    from steer.lm.distributed import init_distributed, shutdown_distributed

    total_tokens, ks, torch_dtype = parse_count(tokens, "--tokens"), parse_ks(k), model_dtype(dtype)
    check_seed(seed)
    check_out_folder(out)
    if not corpus and activations is None:
        raise ValueError(
            "no corpus: pass --corpus PATH (a .txt/.jsonl/.parquet file, optionally .xz/.gz, "
            "a directory of them, or hf:<dataset>) or set STEER_CORPUS, or --activations DIR"
        )
    layer_index = parse_layers(layer)
    multi = isinstance(layer_index, list)
    dist_env = init_distributed(device)  # torchrun: join the process group, cuda:LOCAL_RANK
    dev = check_device(dist_env.device if dist_env.distributed else resolve_device(device))
    if multi and dist_env.distributed:
        raise ValueError("several --layer depths train in one process: launch without torchrun")
    if activations is not None:
        if dist_env.distributed:
            raise ValueError("--activations trains in one process: launch without torchrun")
        if multi:
            raise ValueError(
                "--activations holds one hook point: give one --layer, or run the model"
            )
        source = cached_source(activations, model, layer_index, batch_tokens, seed)
    else:
        source = model_source(model, layer_index, corpus, text_field, ctx_len, torch_dtype, dev)
    cfg = _train_config(
        widths, ks, matryoshka, source.d_model, total_tokens, batch_tokens, lr, optimizer,
        multi_topk, save_every, seed, dev, (arch, l1, l0),
    )  # fmt: skip
    # fp32 W_enc and W_dec, their gradients and two optimizer moments: 6 matrices per SAE
    n_weights = sum(2 * w * source.d_model for w in cfg.widths) * len(ks)
    n_weights *= len(layer_index) if multi else 1
    check_fits_memory(6 * 4 * n_weights, f"training widths {widths} on d={source.d_model}", dev)
    out_dir = Path(out) if out is not None else default_out_dir(source.model, source.layer)
    _check_out_dir(out_dir, resume, batch_tokens, dist_env.world_size)
    run = _run_settings(source, seed, dtype, optimizer, activations, cfg.matryoshka)
    if resume:
        check_resume_settings(
            out_dir, {k: v for k, v in run.items() if not multi or k != "hookpoint"}
        )
    stream = source.stream
    if stream is None:  # the model over the corpus (a cache brings its own stream)
        stream = model_stream(source, batch_tokens, seed, dtype, dist_env)
    command = _command_line(ctx, out_dir, source.layer, cached=activations is not None)
    trainer = (DistributedTrainer if dist_env.distributed else Trainer)(
        cfg,
        source.d_model,
        out_dir,
        hookpoint=run["hookpoint"],
        hookpoints=[f"resid_post.{one}" for one in source.layer] if multi else None,
        model_name=source.model,
        provenance=_provenance(run, command, dist_env.world_size),
    )
    # Only rank 0 talks (and writes files: see sae/train/distributed.py).
    err = typer.echo if dist_env.is_main else (lambda *args, **kwargs: None)
    err(
        f"training {len(trainer.saes)} SAE(s) on {source.model} {run['hookpoint']} "
        f"(d={source.d_model}): widths {cfg.widths}, k {ks}, {total_tokens:,} tokens -> {out_dir}",
        err=True,
    )
    if dist_env.distributed:
        err(
            f"data parallel: {dist_env.world_size} processes ({dist_env.backend}), global batch "
            f"{batch_tokens:,} tokens = about {batch_tokens // dist_env.world_size:,} per process",
            err=True,
        )
    result = fit_with_progress(trainer, stream, total_tokens, resume, show=dist_env.is_main)
    if getattr(stream, "resharded", None):
        err(
            f"resumed a {stream.resharded['from']}-process run with {dist_env.world_size}: skipped "
            f"the {stream.resharded['skipped_contexts']:,} contexts its processes had started",
            err=True,
        )
    shutdown_distributed()
    if dist_env.is_main:
        print_summary(result, out_dir)
    _report_end(result, out_dir, command, dist_env, err)


def _train_config(widths, ks, matryoshka, d_model, total_tokens, batch_tokens, lr, optimizer,
                  multi_topk, save_every, seed, dev, sweep):  # fmt: skip
    """The TrainConfig of these flags; its own checks, worded with the flags' names."""
    from sae.train.trainer import TrainConfig

    levels = parse_widths(matryoshka, d_model) if matryoshka else []
    steps = max(1, total_tokens // max(batch_tokens, 1))  # batch_tokens < 1: TrainConfig says so
    try:
        return TrainConfig(
            widths=[levels[-1]] if levels else parse_widths(widths, d_model),
            ks=ks,
            batch_tokens=batch_tokens,
            total_tokens=total_tokens,
            lr=lr,
            optimizer=optimizer,
            multi_topk=multi_topk,
            matryoshka=levels,
            archs=_split(sweep[0], "--arch"),
            l1_coeffs=_floats(sweep[1], "--l1"),
            l0_coeffs=_floats(sweep[2], "--l0"),
            save_every_steps=save_every,
            seed=seed,
            device=dev,
            # Short runs: warm up over 5% of the steps (at most the usual 100) and log often
            # enough to draw a curve.
            warmup_steps=min(100, max(1, steps // 20)),
            log_every_steps=min(10, max(1, steps // 100)),
        )
    except ValueError as err:
        message = str(err)
        for field, flag in CONFIG_FLAGS.items():
            if message.startswith(f"{field} "):
                message = flag + message[len(field) :]
        raise ValueError(message) from None


def _run_settings(source, seed: int, dtype: str, optimizer: str, activations, levels) -> dict:
    """The settings that decide what the run computes: recorded beside every checkpoint
    (cfg.json), and a resumed run must have the same (check_resume_settings)."""
    multi = isinstance(source.layer, list)
    points = [f"resid_post.{one}" for one in source.layer] if multi else []
    return {
        "model_name": source.model,
        "hookpoint": ",".join(points) or f"resid_post.{source.layer}",
        **({"layers": source.layer} if multi else {}),
        "corpus": source.corpus,
        "text_field": source.text_field,
        "ctx_len": source.ctx_len,
        "seed": seed,
        "dtype": dtype,
        "optimizer": optimizer,
        "activations": str(Path(activations).resolve()) if activations is not None else None,
        "matryoshka": levels,
    }


def _check_out_dir(out_dir: Path, resume: bool, batch_tokens: int, world_size: int) -> None:
    if batch_tokens < world_size:
        raise ValueError(
            f"--batch-tokens {batch_tokens} is smaller than the {world_size} processes"
        )
    state_dir = out_dir / "train_state"
    if resume and not state_dir.exists():
        raise ValueError(
            f"nothing to resume: {state_dir} does not exist (run without --resume first)"
        )
    if not resume and state_dir.exists():
        raise ValueError(
            f"{out_dir} already holds a run: pass --resume to continue it, or choose another --out"
        )


def _provenance(run: dict, command: str, world_size: int) -> dict:
    """What each checkpoint's cfg.json records under `extra` (model and hook point have
    fields of their own)."""
    from steer.evals.evaluate import DEFAULT_HELDOUT_FRACTION

    settings = {k: v for k, v in run.items() if k not in ("model_name", "hookpoint")}
    if settings["activations"] is None:
        del settings["activations"]
    return {
        "command": command,
        "argv": list(sys.argv),
        **settings,
        "heldout_fraction": DEFAULT_HELDOUT_FRACTION,
        "skip_first": 1,
        "world_size": world_size,
    }


def _report_end(result: dict, out_dir: Path, command: str, dist_env, err) -> None:
    stopped = result.get("stopped", "done")
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
    first = next(iter(result.get("saes", {})), "")
    target = out_dir / first.split("/")[0] if "/" in first else out_dir  # several depths
    err(f"done: evaluate with  steer eval --sae {target}", err=True)


def _command_line(ctx: typer.Context, out_dir: Path, layer: int, cached: bool) -> str:
    """The full `steer train` command of this invocation, as typed but with the layer and
    the output folder spelled out (for provenance and the resume hint)."""
    params = {p.name: ctx.params.get(p.name) for p in ctx.command.params}  # declaration order
    spelled = ",".join(map(str, layer)) if isinstance(layer, list) else f"resid_post.{layer}"
    params.update(layer=spelled, out=str(out_dir))
    del params["resume"]
    if cached:  # model, corpus and layer come from the cache
        for key in ("model", "layer", "corpus", "text_field", "ctx_len", "dtype"):
            params.pop(key)
    words = ["steer", "train"]
    for name, value in params.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        words += [flag] if value is True else [flag, str(value)]
    return shlex.join(words)
