"""`steer train`: train a family of TopK SAEs on one hook point of a model."""

from __future__ import annotations

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
from .train_settings import (  # noqa: F401 - CONFIG_FLAGS: the flag table, read by tests
    CONFIG_FLAGS,
    announce,
    check_out_dir,
    check_resume_settings,
    command_line,
    default_out_dir,
    parse_ks,
    provenance,
    report_end,
    run_settings,
    train_config,
)
from .training import (
    fit_with_progress,
    make_trainer,
    model_stream,
    open_source,
    parse_layers,
    print_summary,
)


def config_help(field: str, cli: str = "") -> str:
    doc = field_docs("sae", "train/config.py", "TrainConfig").get(field, "")
    return " ".join(part for part in (doc, cli) if part)


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
    source = open_source(
        activations, model, layer_index, corpus, text_field, ctx_len, torch_dtype, dev,
        batch_tokens, seed, dist_env,
    )  # fmt: skip
    cfg = train_config(
        widths, ks, matryoshka, source.d_model, total_tokens, batch_tokens, lr, optimizer,
        multi_topk, save_every, seed, dev, (arch, l1, l0),
    )  # fmt: skip
    # fp32 W_enc and W_dec, their gradients and two optimizer moments: 6 matrices per SAE
    n_weights = sum(2 * w * source.d_model for w in cfg.widths) * len(ks)
    n_weights *= len(layer_index) if multi else 1
    check_fits_memory(6 * 4 * n_weights, f"training widths {widths} on d={source.d_model}", dev)
    out_dir = Path(out) if out is not None else default_out_dir(source.model, source.layer)
    check_out_dir(out_dir, resume, batch_tokens, dist_env.world_size)
    run = run_settings(source, seed, dtype, optimizer, activations, cfg.matryoshka)
    if resume:
        check_resume_settings(
            out_dir, {k: v for k, v in run.items() if not multi or k != "hookpoint"}
        )
    stream = source.stream
    if stream is None:  # the model over the corpus (a cache brings its own stream)
        stream = model_stream(source, batch_tokens, seed, dtype, dist_env)
    command = command_line(ctx, out_dir, source.layer, cached=activations is not None)
    trainer = make_trainer(
        cfg, source, out_dir, run, provenance(run, command, dist_env.world_size), dist_env
    )
    # Only rank 0 talks (and writes files: see sae/train/distributed.py).
    err = typer.echo if dist_env.is_main else (lambda *args, **kwargs: None)
    announce(err, trainer, source, run, total_tokens, out_dir, dist_env)
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
    report_end(result, out_dir, command, dist_env, err)
