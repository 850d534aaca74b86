"""SAE training throughput and quality: our `sae.train.trainer` vs EleutherAI sparsify.

    .venv/bin/python benchmarks/train_vs_sparsify.py [--tokens 200k] [--layer 15] [--width 8x] [--k 32]
        [--repeat 2] [--cache /tmp/acts.safetensors] [--e2e-tokens 32k]

1. Activations of the embedded model (SmolLM2-135M) at one layer are computed once
   (`steer.lm.activations.ActivationStream`, first position of each context skipped) and
   held in memory: `--tokens` for training plus `--eval-tokens` held out.
2. Our Trainer trains one TopK SAE on those batches, in order.
3. sparsify's own `Trainer.fit` trains the same SAE (width, k, batch, tokens, Adam, the
   paper's lr, AuxK, same warmup and dead-latent threshold) on the very same batches in
   the same order: a stand-in "model" whose one layer returns rows of the activation
   buffer feeds them through sparsify's hook, so its training loop runs unchanged.
   sparsify's defaults (SignSGD + schedule-free, no AuxK) run as a second pair, against
   our `--optimizer signum` (the same optimizer and lr, with our AuxK).
4. FVU of every SAE is measured on the same held-out activations.
5. End to end (--e2e-tokens > 0): each library computes its own activations from text
   as well (ours: ActivationStream, the model cut after the hooked block; sparsify: its
   Trainer running the model on token batches), the model forward under bf16 autocast for both.

Training throughput excludes activation computation; end-to-end includes it. On a shared
machine use --repeat: the trainers take turns and each keeps its best turn. --cache keeps
the activations in a file for reruns.
`pip install --no-deps eai-sparsify` plus einops, natsort, schedulefree, simple-parsing
(none of which touches torch) makes sparsify importable.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae.train.trainer import TrainConfig, Trainer  # noqa: E402
from steer.cli.options import parse_count  # noqa: E402
from steer.lm.activations import ActivationStream  # noqa: E402
from steer.lm.data import TokenContexts  # noqa: E402
from steer.lm.models import load_model  # noqa: E402

SHARD = (
    Path(__file__).resolve().parents[2] / "shared" / "corpus" / "wikipedia-en" / "wiki-00.jsonl.xz"
)


# ---------------------------------------------------------------- activations
def compute_activations(
    lm, layer: int, corpus: str, n_tokens: int, args
) -> tuple[list[Tensor], float]:
    """`n_tokens` activations as (batch_tokens, d) batches, and the tokens/s it took."""
    contexts = TokenContexts(corpus, lm.tokenizer, ctx_len=args.ctx_len, seed=args.seed)
    stream = ActivationStream(lm, layer, contexts, batch_tokens=args.batch_tokens, seed=args.seed)
    batches, done = [], 0
    start = time.perf_counter()
    for batch in stream:
        if batch.shape[0] < args.batch_tokens:
            break
        batches.append(batch)
        done += batch.shape[0]
        if done >= n_tokens:
            break
    elapsed = time.perf_counter() - start
    if done < n_tokens:
        raise SystemExit(f"the corpus gave only {done} tokens, {n_tokens} were asked for")
    return batches, done / elapsed


def cached_activations(lm, layer: int, n_tokens: int, args) -> tuple[list[Tensor], float]:
    """compute_activations, kept in --cache (safetensors) for reruns with the same settings."""
    from safetensors.torch import load_file, save_file

    key = f"{args.model}|{layer}|{args.corpus}|{args.ctx_len}|{args.batch_tokens}|{args.seed}|{n_tokens}"
    path = Path(args.cache) if args.cache else None
    if path is not None and path.is_file():
        data = load_file(str(path))
        if bytes(data["key"].tolist()).decode() == key:
            print(f"activations: read from {path}")
            return list(data["acts"].split(args.batch_tokens)), float(data["speed"])
    batches, speed = compute_activations(lm, layer, args.corpus, n_tokens, args)
    if path is not None:
        save_file(
            {
                "acts": torch.cat(batches),
                "speed": torch.tensor(speed),
                "key": torch.tensor(list(key.encode()), dtype=torch.uint8),
            },
            str(path),
        )
    return batches, speed


def heldout_fvu(encode_decode, x: Tensor) -> float:
    """sum ||x - x̂||² / sum ||x - mean(x)||² over held-out activations (raw units)."""
    err = total = 0.0
    mean = x.mean(0)
    with torch.inference_mode():
        for chunk in x.split(4096):
            x_hat = encode_decode(chunk).float()
            err += float((chunk - x_hat).double().pow(2).sum())
            total += float((chunk - mean).double().pow(2).sum())
    return err / total


# ---------------------------------------------------------------- ours
def train_ours(
    batches: list[Tensor], d: int, width: int, args, out: Path, warmup: int, optimizer: str
):
    cfg = TrainConfig(
        widths=[width],
        ks=[args.k],
        batch_tokens=args.batch_tokens,
        total_tokens=len(batches) * args.batch_tokens,
        warmup_steps=warmup,
        dead_after_tokens=args.dead_after,
        save_every_steps=10**9,
        log_every_steps=10**9,
        seed=args.seed,
        lr=args.lr if optimizer == "adam" else None,
        optimizer=optimizer,
    )
    trainer = Trainer(cfg, d, out)
    start = time.perf_counter()
    result = trainer.fit(iter(batches))
    elapsed = time.perf_counter() - start
    sae = next(iter(trainer.saes.values()))
    return sae, result["tokens"] / elapsed, lambda x: sae.decode(*sae.encode(x))


# ---------------------------------------------------------------- sparsify
class _Rows(nn.Module):
    """The stand-in model's only layer: token "ids" are row numbers of the buffer."""

    def __init__(self, acts: Tensor):
        super().__init__()
        self.acts = acts

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.acts[input_ids]  # (B, T, d)


class ReplayModel(nn.Module):
    """Just enough of a transformers model for sparsify's Trainer: `layers.0` outputs the
    precomputed activations, so its hook sees exactly our batches, in our order."""

    def __init__(self, acts: Tensor):
        super().__init__()
        self.layers = nn.ModuleList([_Rows(acts)])
        self.anchor = nn.Parameter(torch.zeros(1))  # gives .parameters() something to count
        self.config = SimpleNamespace(num_hidden_layers=1)

    @property
    def base_model(self):
        return self

    @property
    def device(self):
        return self.anchor.device

    @property
    def dummy_inputs(self):
        return {"input_ids": torch.zeros(1, 2, dtype=torch.long)}

    def forward(self, input_ids: Tensor, **_):
        return self.layers[0](input_ids)


def sparsify_config(
    width: int, args, batch_size: int, warmup: int, out: Path, hookpoint: str, optimizer: str
):
    from sparsify import SaeConfig
    from sparsify import TrainConfig as SparsifyTrainConfig

    paper = optimizer == "adam"
    return SparsifyTrainConfig(
        SaeConfig(num_latents=width, k=args.k),
        batch_size=batch_size,
        loss_fn="fvu",
        optimizer=optimizer,
        lr=args.lr if paper else None,
        lr_warmup_steps=warmup,
        auxk_alpha=1 / 32 if paper else 0.0,
        dead_feature_threshold=args.dead_after,
        hookpoints=[hookpoint],
        save_every=10**9,
        log_to_wandb=False,
        save_dir=str(out),
        run_name="bench",
    )


def train_sparsify(batches: list[Tensor], width: int, args, out: Path, warmup: int, optimizer: str):
    from sparsify import Trainer as SparsifyTrainer

    acts = torch.cat(batches)  # (N, d), in our batch order
    seq = 64  # "sequence" length; batch_size sequences of it = one of our batches
    assert args.batch_tokens % seq == 0
    dataset = [{"input_ids": ids} for ids in torch.arange(acts.shape[0]).view(-1, seq)]
    cfg = sparsify_config(width, args, args.batch_tokens // seq, warmup, out, "layers.0", optimizer)
    with _quiet():
        trainer = SparsifyTrainer(cfg, dataset, ReplayModel(acts))
        start = time.perf_counter()
        trainer.fit()
        elapsed = time.perf_counter() - start
    sae = next(iter(trainer.saes.values()))
    return sae, acts.shape[0] / elapsed, lambda x: sae(x).sae_out


@contextlib.contextmanager
def _quiet():
    """sparsify prints and draws a tqdm bar; keep the benchmark's output readable."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


# ---------------------------------------------------------------- end to end
def e2e_ours(lm, layer, corpus, width, args, out, warmup) -> float:
    contexts = TokenContexts(corpus, lm.tokenizer, ctx_len=args.ctx_len, seed=args.seed + 1)
    stream = ActivationStream(lm, layer, contexts, batch_tokens=args.batch_tokens, seed=args.seed)
    cfg = TrainConfig(
        widths=[width],
        ks=[args.k],
        batch_tokens=args.batch_tokens,
        total_tokens=args.e2e_tokens,
        warmup_steps=warmup,
        dead_after_tokens=args.dead_after,
        save_every_steps=10**9,
        log_every_steps=10**9,
        seed=args.seed,
    )
    start = time.perf_counter()
    result = Trainer(cfg, lm.d_model, out).fit(stream)
    return result["tokens"] / (time.perf_counter() - start)


def e2e_sparsify(lm, layer, corpus, width, args, out, warmup) -> float:
    from sparsify import Trainer as SparsifyTrainer

    contexts = TokenContexts(corpus, lm.tokenizer, ctx_len=args.ctx_len, seed=args.seed + 1)
    n_ctx = math.ceil(args.e2e_tokens / args.ctx_len)
    batch_size = max(1, args.batch_tokens // args.ctx_len)
    n_ctx = math.ceil(n_ctx / batch_size) * batch_size
    dataset = []
    for ids in contexts:
        dataset.append({"input_ids": ids})
        if len(dataset) == n_ctx:
            break
    cfg = sparsify_config(width, args, batch_size, warmup, out, f"layers.{layer}", "adam")
    # bf16 autocast, as ActivationStream runs our model forward: the model's precision is
    # then the same on both sides (sparsify only autocasts on CUDA by itself).
    with _quiet(), torch.autocast("cpu", dtype=torch.bfloat16):
        trainer = SparsifyTrainer(cfg, dataset, lm.model)
        start = time.perf_counter()
        trainer.fit()
        elapsed = time.perf_counter() - start
    return len(dataset) * args.ctx_len / elapsed


# ---------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layer", type=int, default=None, help="default: the middle block")
    parser.add_argument("--corpus", default=str(SHARD))
    parser.add_argument("--ctx-len", type=int, default=128)
    parser.add_argument("--width", default="8x", help="latents, or a multiple of d_model (8x)")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--tokens", default="200k", help="training tokens")
    parser.add_argument("--eval-tokens", default="16k", help="held-out tokens for FVU")
    parser.add_argument(
        "--dead-after", default=None, help="dead-latent threshold in tokens (default: tokens/4)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="warmup steps (default: 5%% of steps)"
    )
    parser.add_argument("--e2e-tokens", default="32k", help="end-to-end run length (0: skip)")
    parser.add_argument(
        "--no-sparsify-default", action="store_true", help="skip sparsify's default optimizer run"
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help="Adam lr for ours and sparsify-Adam (default: the paper's)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeat", type=int, default=1, help="alternating turns; best tokens/s kept"
    )
    parser.add_argument("--cache", default=None, help="safetensors file to keep the activations in")
    args = parser.parse_args()
    args.tokens = parse_count(args.tokens, "--tokens")
    args.eval_tokens = parse_count(args.eval_tokens, "--eval-tokens")
    args.e2e_tokens = (
        0 if args.e2e_tokens in ("0", 0) else parse_count(args.e2e_tokens, "--e2e-tokens")
    )
    args.dead_after = (
        parse_count(args.dead_after, "--dead-after")
        if args.dead_after
        else max(args.tokens // 4, 1)
    )

    try:
        import sparsify
    except ImportError:
        raise SystemExit(
            "sparsify is not installed: pip install --no-deps eai-sparsify einops natsort schedulefree simple-parsing"
        ) from None
    if not Path(args.corpus).exists() and not args.corpus.startswith("hf:"):
        raise SystemExit(f"corpus {args.corpus} not found: pass --corpus")

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(args.seed)
    lm = load_model(args.model)
    layer = args.layer if args.layer is not None else lm.n_layers // 2
    d = lm.d_model
    width = round(float(args.width[:-1]) * d) if args.width.endswith("x") else int(args.width)
    steps = args.tokens // args.batch_tokens
    warmup = args.warmup if args.warmup is not None else max(1, steps // 20)
    print(
        f"{args.model} resid_post.{layer} (d={d}), width {width}, k {args.k}, batch {args.batch_tokens} tokens, "
        f"{steps * args.batch_tokens:,} training tokens ({steps} steps, warmup {warmup}), dead after "
        f"{args.dead_after:,} tokens; torch {torch.__version__}, sparsify {sparsify.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
    )

    n_eval_batches = math.ceil(args.eval_tokens / args.batch_tokens)
    n_act = (steps + n_eval_batches) * args.batch_tokens
    batches, act_speed = cached_activations(lm, layer, n_act, args)
    train, heldout = batches[:steps], torch.cat(batches[steps:])
    print(
        f"activations: {act_speed:,.0f} tokens/s (bf16 autocast, model cut after block {layer}); "
        f"{heldout.shape[0]:,} held out for FVU"
    )

    # (name, library, optimizer): each optimizer on both libraries, compared pairwise.
    runs = [
        ("ours (Adam, AuxK)", "ours", "adam"),
        ("sparsify (Adam, AuxK)", "sparsify", "adam"),
    ]
    if not args.no_sparsify_default:
        runs += [
            ("ours --optimizer signum", "ours", "signum"),
            ("sparsify default (SignSGD)", "sparsify", "signum"),
        ]
    speeds: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    fvus: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Trainers take turns, --repeat times: on a shared machine the best of the turns is
        # the least disturbed measurement of each, taken under similar conditions.
        for turn in range(args.repeat):
            for i, (name, library, optimizer) in enumerate(runs):
                out = Path(tmp) / f"{turn}-{i}"
                if library == "ours":
                    sae, speed, fn = train_ours(train, d, width, args, out, warmup, optimizer)
                else:
                    sae, speed, fn = train_sparsify(train, width, args, out, warmup, optimizer)
                speeds[name].append(speed)
                fvus[name] = heldout_fvu(fn, heldout)
                del sae, fn
        rows = {name: (max(speeds[name]), fvus[name]) for name, _, _ in runs}
        best = f", best of {args.repeat} alternating turns" if args.repeat > 1 else ""

        print(
            f"\nSAE training on identical activation batches ({steps * args.batch_tokens:,} tokens{best}):"
        )
        print(f"  {'trainer':<28} {'tokens/s':>10} {'held-out FVU':>13}")
        for name, (speed, fvu) in rows.items():
            print(f"  {name:<28} {speed:>10,.0f} {fvu:>13.4f}")
        # Same optimizer on both sides; then our Adam (the paper's recipe) against
        # sparsify's default: each library's default recipe.
        pairs = [(runs[i][0], runs[i + 1][0]) for i in range(0, len(runs), 2)]
        if len(runs) == 4:
            pairs.append((runs[0][0], runs[3][0]))
        for mine, theirs in pairs:
            (speed, fvu), (their_speed, their_fvu) = rows[mine], rows[theirs]
            print(
                f"  {mine} / {theirs}: {speed / their_speed:.2f}x throughput, "
                f"FVU {fvu:.4f} vs {their_fvu:.4f} ({'no worse' if fvu <= their_fvu * 1.005 else 'WORSE'})"
            )

        if args.e2e_tokens:
            del train, heldout, batches
            ours_e2e = e2e_ours(lm, layer, args.corpus, width, args, Path(tmp) / "e2e-ours", warmup)
            sp_e2e = e2e_sparsify(lm, layer, args.corpus, width, args, Path(tmp) / "e2e-sp", warmup)
            print(
                f"\nEnd to end from text ({args.e2e_tokens:,} tokens, model forward under bf16 autocast):"
            )
            print(f"  ours (model cut after block {layer})      {ours_e2e:>10,.0f} tokens/s")
            print(f"  sparsify (its Trainer, full forward) {sp_e2e:>10,.0f} tokens/s")
            print(f"  ratio: {ours_e2e / sp_e2e:.2f}x")


if __name__ == "__main__":
    main()
