"""What one `steer train` invocation turns into besides its flags: the TrainConfig
(its checks worded with the flags), the settings a run records and a resume must match,
the output folder, the provenance beside each checkpoint, the command line to resume
with and the report at the end.

Not a command: steer/cli/train.py alone imports it.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from .options import parse_count

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


def train_config(widths, ks, matryoshka, d_model, total_tokens, batch_tokens, lr, optimizer,
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


def run_settings(source, seed: int, dtype: str, optimizer: str, activations, levels) -> dict:
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


def check_out_dir(out_dir: Path, resume: bool, batch_tokens: int, world_size: int) -> None:
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


def provenance(run: dict, command: str, world_size: int) -> dict:
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


def report_end(result: dict, out_dir: Path, command: str, dist_env, err) -> None:
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


def command_line(ctx: typer.Context, out_dir: Path, layer: int, cached: bool) -> str:
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


def announce(err, trainer, source, run: dict, total_tokens: int, out_dir: Path, dist_env) -> None:
    """What is about to train, where (and, under torchrun, how the batch is split)."""
    cfg = trainer.cfg
    err(
        f"training {len(trainer.saes)} SAE(s) on {source.model} {run['hookpoint']} "
        f"(d={source.d_model}): widths {cfg.widths}, k {cfg.ks}, {total_tokens:,} tokens -> {out_dir}",
        err=True,
    )
    if dist_env.distributed:
        batch_tokens = cfg.batch_tokens
        err(
            f"data parallel: {dist_env.world_size} processes ({dist_env.backend}), global batch "
            f"{batch_tokens:,} tokens = about {batch_tokens // dist_env.world_size:,} per process",
            err=True,
        )
