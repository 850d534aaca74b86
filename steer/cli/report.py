"""`steer report`: the paper's figures and scaling fits for a sweep of SAEs."""

from __future__ import annotations

from pathlib import Path

import typer

from .options import friendly_errors


@friendly_errors
def report(
    runs: list[Path] = typer.Argument(
        ..., help="Run folders (steer train --out), each holding one folder per SAE."
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Where report.md and its PNGs go (default: RUN/report)."
    ),
    title: str = typer.Option("SAE sweep report", "--title", help="The report's heading."),
) -> None:
    """Markdown + PNG report of a sweep (widths x k x arch), as Gao et al. (2024) plot it.

    Figures: FVU vs latents per k with the fitted power law L(n) = a*n^b + L_inf; FVU vs k; the FVU-L0 frontier per architecture; delta LM loss vs FVU; dead latents vs width; probe loss, N2G F1 and ablation sparsity vs width. Fits: L(n) per k and the joint L(n, k) = exp(a + b_k log k + b_n log n + g log k log n) + exp(z + e log k), least squares on log L, with R^2.

    Held-out metrics come from RUN/eval.json when present (steer eval --sae RUN --json [--probes --n2g --ablation] > RUN/eval.json), else from training logs.
    """
    from steer.evals.report import write_report

    target = out or Path(runs[0]) / "report"
    path = write_report(list(runs), target, title=title)
    typer.echo(f"report: {path}")
