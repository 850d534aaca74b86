"""`steer report` on a synthetic sweep whose FVU follows a known law."""

import json
import re

from typer.testing import CliRunner

from steer.cli.main import app


def _sae(run, name, n, k, arch="topk", **metrics):
    folder = run / name
    folder.mkdir(parents=True)
    extra = {"metrics": metrics}
    if arch != "topk":
        extra.update(train_arch=arch, sparsity_coeff=0.1)
    cfg = {"d_in": 16, "n_latents": n, "k": k, "arch": "topk", "extra": extra}
    (folder / "cfg.json").write_text(json.dumps(cfg))


def test_report_fits_the_law_it_was_given(tmp_path):
    run = tmp_path / "run"
    for n in (256, 512, 1024, 2048, 4096):
        for k in (8, 16, 32):
            fvu = 2.0 * n**-0.5 * (k / 8) ** -0.3 + 0.04
            _sae(run, f"{n}-k{k}", n, k, fvu=fvu, l0=float(k), dead_frac=0.0)
    _sae(run, "relu-1024-l10.1", 1024, 0, arch="relu", fvu=0.3, l0=20.0, dead_frac=0.1)
    (run / "eval.json").write_text(json.dumps({"1024-k8": {"fvu": 0.5, "l0": 8.0,
                                   "delta_loss": 0.1, "probe_loss": 0.4}}))  # fmt: skip
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "rep" / "report.md").read_text()
    # k = 16: L(n) = 2·(16/8)^-0.3 · n^-0.5 + 0.04
    row = re.search(r"\| 16 \| ([\d.]+) \| (-[\d.]+) \| ([\d.]+) \| ([\d.]+) \|", md)
    assert row, md
    alpha, beta, l_inf, r2 = map(float, row.groups())
    assert abs(alpha - 2 * 2**-0.3) < 0.05 and abs(beta + 0.5) < 0.01 and abs(l_inf - 0.04) < 0.002
    assert r2 > 0.999 and "Joint: L(n, k)" in md
    for png in ("fvu_vs_latents", "fvu_vs_k", "frontier", "dead_vs_width", "delta_loss_vs_fvu",
                "probe_loss_vs_width"):  # fmt: skip
        assert (tmp_path / "rep" / f"{png}.png").stat().st_size > 1000, png
        assert f"({png}.png)" in md
    assert "| relu-1024-l10.1 | relu |" in md and "| eval |" in md


def test_report_bad_input(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path / "none")])
    assert result.exit_code == 1 and "no run folder" in result.stderr
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "no SAE folders" in result.stderr


def test_report_plots_feature_quality_vs_width_from_a_second_eval_file(tmp_path):
    """eval.json (reconstruction) and eval-quality.json (steer eval --probes --n2g
    --ablation) merge per SAE; each quality metric gets its figure vs width and a column."""
    run = tmp_path / "run"
    widths = (2304, 4608, 9216)
    for n in widths:
        _sae(run, f"{n}-k32", n, 32, fvu=0.2, l0=32.0, dead_frac=0.0)
    (run / "eval.json").write_text(json.dumps({f"{n}-k32": {"fvu": 0.1 + 100 / n} for n in widths}))
    quality = {
        f"{n}-k32": {"fvu": 9.0, "probe_loss": 0.5 - n / 1e5, "probe_loss_residual": 0.6,
                     "n2g_precision": 0.5, "n2g_recall": 0.3 + n / 1e5, "n2g_f1": 0.35,
                     "ablation_sparsity": 40.0 - n / 1e3}
        for n in widths
    }  # fmt: skip
    (run / "eval-quality.json").write_text(json.dumps(quality))
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "rep" / "report.md").read_text()
    for key in ("probe_loss", "n2g_precision", "n2g_recall", "n2g_f1", "ablation_sparsity"):
        assert (tmp_path / "rep" / f"{key}_vs_width.png").stat().st_size > 1000, key
        assert f"({key}_vs_width.png)" in md
    row = next(line for line in md.splitlines() if line.startswith("| 9216-k32 |"))
    assert "| 0.1109 |" in row  # eval.json's FVU wins over the quality file's
    assert "| 0.4078 |" in row and "| 0.3922 |" in row and "| 30.7840 |" in row
