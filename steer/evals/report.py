"""`steer report`: a sweep's SAEs as the paper's figures and fits, in markdown + PNGs.

Rows come from every SAE folder under the run folders given: the training metrics in its
cfg.json, replaced by held-out metrics where the run folder holds `eval*.json` files
(written by `steer eval --sae RUN --json [--probes --n2g --ablation] > RUN/eval.json`;
several files merge, e.g. one per SAE for the costly metrics).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from .scaling import fit_joint, fit_power_law

METRICS = ("fvu", "l0", "dead_frac", "delta_loss", "loss_recovered", "probe_loss",
           "probe_loss_residual", "n2g_precision", "n2g_recall", "n2g_f1", "ablation_sparsity")  # fmt: skip


def load_rows(run_dirs: list[Path]) -> list[dict]:
    """One dict per SAE: name, arch, n_latents, k, source and the metrics it has."""
    rows = []
    for run in run_dirs:
        run = Path(run)
        if not run.is_dir():
            raise ValueError(f"no run folder {run}")
        evals: dict = {}
        for path in sorted(run.glob("eval*.json")):  # eval.json, then e.g. eval-quality.json
            if path.stat().st_size == 0:
                continue  # an eval still writing its output (steer eval ... > eval.json)
            try:
                for name, metrics in json.loads(path.read_text()).items():
                    evals.setdefault(name, {}).update(metrics)
            except (json.JSONDecodeError, AttributeError) as err:
                raise ValueError(f"cannot read {path}: {err}") from None
        for cfg_path in sorted(run.glob("*/cfg.json")):
            cfg = json.loads(cfg_path.read_text())
            extra = cfg.get("extra", {})
            name = cfg_path.parent.name
            row = {
                "name": name,
                "run": str(run),
                "arch": extra.get("train_arch", cfg.get("arch", "topk")),
                "n_latents": int(cfg["n_latents"]),
                "k": int(cfg.get("k", 0)),
                "coeff": extra.get("sparsity_coeff"),
                "source": "eval" if "fvu" in evals.get(name, {}) else "train",
            }
            metrics = {**extra.get("metrics", {}), **evals.get(name, {})}
            row.update({m: metrics[m] for m in METRICS if metrics.get(m) is not None})
            rows.append(row)
    if not rows:
        raise ValueError(f"no SAE folders (*/cfg.json) under {', '.join(map(str, run_dirs))}")
    return rows


def _topk(rows):
    return [r for r in rows if r["arch"] == "topk" and "fvu" in r]


def fits(rows: list[dict]) -> dict:
    """Per-k power laws in n and the joint L(n, k) fit, over the TopK rows."""
    out: dict = {"per_k": {}, "joint": None}
    by_k = defaultdict(list)
    for r in _topk(rows):
        by_k[r["k"]].append(r)
    for k, group in sorted(by_k.items()):
        if len({r["n_latents"] for r in group}) >= 3:
            group.sort(key=lambda r: r["n_latents"])
            out["per_k"][k] = fit_power_law(
                [r["n_latents"] for r in group], [r["fvu"] for r in group]
            )
    top = _topk(rows)
    if len(top) >= 7 and len({r["k"] for r in top}) >= 2:
        out["joint"] = fit_joint(
            [r["n_latents"] for r in top], [r["k"] for r in top], [r["fvu"] for r in top]
        )
    return out


def _plot(path: Path, title: str, xlabel: str, ylabel: str, series, log=(True, True), fit=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for label, xs, ys in series:
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        ax.plot([xs[i] for i in order], [ys[i] for i in order], "o-", label=label, ms=4)
    for label, xs, ys in fit or []:
        ax.plot(xs, ys, "--", color="gray", lw=1, label=label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if log[0]:
        ax.set_xscale("log")
    if log[1]:
        ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _series(rows, x, y, key):
    groups = defaultdict(lambda: ([], []))
    for r in rows:
        if x in r and y in r and r[y] is not None and not _nan(r[y]):
            groups[key(r)][0].append(r[x])
            groups[key(r)][1].append(r[y])
    ordered = sorted(groups.items(), key=lambda g: (len(str(g[0])), str(g[0])))  # k=8 < k=16
    return [(label, xs, ys) for label, (xs, ys) in ordered]


def _nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def figures(rows: list[dict], fitted: dict, out: Path) -> dict[str, str]:
    """Write the PNGs into out; returns figure key -> file name."""
    out.mkdir(parents=True, exist_ok=True)
    top = _topk(rows)
    made = {}
    curves = []
    for k, f in fitted["per_k"].items():
        ns = [r["n_latents"] for r in top if r["k"] == k]
        grid = [min(ns) * (max(ns) / min(ns)) ** (i / 40) for i in range(41)]
        curves.append((f"k={k} fit", grid, f(grid).tolist()))
    made["fvu_n"] = _plot(out / "fvu_vs_latents.png", "TopK: FVU vs latents", "latents n",
                          "normalized MSE", _series(top, "n_latents", "fvu", lambda r: f"k={r['k']}"),
                          fit=curves)  # fmt: skip
    made["fvu_k"] = _plot(out / "fvu_vs_k.png", "TopK: FVU vs k", "k", "normalized MSE",
                          _series(top, "k", "fvu", lambda r: f"n={r['n_latents']}"))  # fmt: skip
    made["frontier"] = _plot(out / "frontier.png", "FVU vs L0 by architecture", "L0",
                             "normalized MSE", _series(rows, "l0", "fvu", lambda r: r["arch"]))  # fmt: skip
    if any("delta_loss" in r for r in rows):
        made["delta"] = _plot(out / "delta_loss_vs_fvu.png", "Δ LM loss vs FVU", "normalized MSE",
                              "Δ loss (nats)", _series(rows, "fvu", "delta_loss", lambda r: r["arch"]))  # fmt: skip
    dead = [dict(r, dead_pct=100 * r["dead_frac"] + 1e-3) for r in top if "dead_frac" in r]
    made["dead"] = _plot(out / "dead_vs_width.png", "TopK: dead latents vs width", "latents n",
                         "dead latents (%)", _series(dead, "n_latents", "dead_pct", lambda r: f"k={r['k']}"),
                         log=(True, False))  # fmt: skip
    for key, label in QUALITY_FIGURES.items():
        if any(key in r for r in top):
            made[key] = _plot(out / f"{key}_vs_width.png", f"TopK: {label} vs width", "latents n",
                              label, _series(top, "n_latents", key, lambda r: f"k={r['k']}"),
                              log=(True, False), fit=_baseline(top, key))  # fmt: skip
    return made


QUALITY_FIGURES = {
    "probe_loss": "probe loss (nats)",
    "n2g_precision": "N2G precision",
    "n2g_recall": "N2G recall",
    "n2g_f1": "N2G F1",
    "ablation_sparsity": "ablation sparsity (L1/L2)²",
}


def _baseline(rows, key):
    """The probe loss of one residual coordinate, as a dashed line beside the latents'."""
    if key != "probe_loss":
        return None
    pts = sorted(
        (r["n_latents"], r["probe_loss_residual"]) for r in rows if "probe_loss_residual" in r
    )
    if not pts:
        return None
    return [("one residual coordinate", [n for n, _ in pts], [v for _, v in pts])]


def _fmt(v, spec=".4f") -> str:
    if v is None or _nan(v):
        return "–"
    return format(v, spec) if isinstance(v, float) else str(v)


def write_report(run_dirs: list[Path], out: Path, title: str = "SAE sweep report") -> Path:
    """report.md + PNGs in out; returns the markdown's path."""
    rows = load_rows(run_dirs)
    fitted = fits(rows)
    made = figures(rows, fitted, out)
    lines = [f"# {title}", "", f"Runs: {', '.join(f'`{d}`' for d in run_dirs)}. "
             f"{len(rows)} SAEs; metrics from held-out eval where `eval.json` has them, else "
             "from the last training log window.", ""]  # fmt: skip
    lines += ["## Fits (TopK, normalized MSE, least squares on log L)", ""]
    if fitted["per_k"]:
        lines += [
            "L(n) = α·n^β + L∞ at each k:",
            "",
            "| k | α | β | L∞ | R² (log) |",
            "|---|---|---|---|---|",
        ]
        for k, f in fitted["per_k"].items():
            lines.append(
                f"| {k} | {f.alpha:.4g} | {f.beta:.3f} | {f.irreducible:.4f} | {f.r2:.4f} |"
            )
    else:
        lines.append("Too few widths per k (3 needed) for L(n).")
    lines.append("")
    j = fitted["joint"]
    if j is not None:
        lines += [
            "Joint: L(n, k) = exp(α + β_k·log k + β_n·log n + γ·log k·log n) + exp(ζ + η·log k)",
            "",
            f"α = {j.alpha:.3f}, β_k = {j.beta_k:.3f}, β_n = {j.beta_n:.3f}, γ = {j.gamma:.4f}, "
            f"ζ = {j.zeta:.3f}, η = {j.eta:.3f}; R² (log L) = {j.r2:.4f}",
            "",
        ]
    lines += ["## Figures", ""]
    lines += [f"![{key}]({name})" for key, name in made.items()]
    lines += ["", "## SAEs", ""]
    cols = ["name", "arch", "n_latents", "k", "coeff", "source", *METRICS]
    present = [c for c in cols if any(c in r and r[c] is not None for r in rows)]
    lines += ["| " + " | ".join(present) + " |", "|" + "---|" * len(present)]
    for r in sorted(rows, key=lambda r: (r["arch"], r["n_latents"], r["k"], r.get("coeff") or 0)):
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in present) + " |")
    path = Path(out) / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
