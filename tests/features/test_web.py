"""The feature web on synthetic families with a planted hierarchy: 4 broad features, each
split into 2 finer ones, plus one wide feature that belongs to no parent."""

from __future__ import annotations

import json

import pytest
import torch

from sae import SAEConfig, TopKSAE
from steer.features.web import FeatureWeb, Level, build_web, family_levels, find_web
from steer.features.web_html import render_html

D, N_PAR = 32, 4
BASIS = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(3)))[0].T
PARENTS = BASIS[:N_PAR]  # (4, d) orthonormal broad directions
DETAIL = BASIS[N_PAR : N_PAR + 2 * N_PAR]  # (8, d) what tells the two children apart
LONER = BASIS[-1]  # fires on its own, with no parent
CHILD_OF = torch.arange(2 * N_PAR) // 2  # child c refines parent c // 2


def _unit(w):
    return w / w.norm(dim=-1, keepdim=True)


CHILDREN = _unit(PARENTS[CHILD_OF] + 0.8 * DETAIL)  # cos to their parent ≈ 0.78


def tokens(n=600, seed=0):
    """Child c's tokens: 3·parent + detail_c; every 10th token: the loner alone."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(0, 2 * N_PAR, (n,), generator=g)
    x = 3 * PARENTS[CHILD_OF[c]] + DETAIL[c]
    x[::10] = 3 * LONER
    return x


def tied_sae(rows, k, levels=(), hookpoint="resid_post.1"):
    sae = TopKSAE(SAEConfig(D, len(rows), k, hookpoint=hookpoint, matryoshka=list(levels)))
    with torch.no_grad():
        sae.W_dec.copy_(rows)
        sae.W_enc.copy_(rows)
        sae.b_enc.fill_(-1e-3)  # float noise in orthogonal directions stays off
        sae.b_pre.zero_()
    return sae


NARROW_ROWS = torch.cat([PARENTS, _unit(BASIS[20:21] + BASIS[21:22])])  # 4 parents + 1 idle
WIDE_ROWS = torch.cat([CHILDREN, LONER[None]])  # 8 children + the loner


def check_planted(web: FeatureWeb, j_wide: int, new_from: int, narrow_parent):
    cos, parent = web.cos[j_wide], web.parent[j_wide]
    for c in range(2 * N_PAR):
        assert int(parent[c]) == narrow_parent(int(CHILD_OF[c]))
        assert float(cos[c]) == pytest.approx(1 / (1 + 0.64) ** 0.5, abs=1e-4)
        assert float(web.p_parent[j_wide][c]) == 1.0  # it only fires with its parent
    linked = web.linked(j_wide)
    assert linked[: 2 * N_PAR].all() and not linked[2 * N_PAR]  # the loner has no parent
    tree = web.children()
    for p in range(N_PAR):
        kids = {i for _, i in tree[web.home(j_wide - 1, narrow_parent(p))]}
        assert kids == {new_from + c for c in range(2 * N_PAR) if CHILD_OF[c] == p}
    assert web.parent_of(j_wide, new_from + 2 * N_PAR) is None  # the loner is a root


def test_independent_family_links_children_to_planted_parents(tmp_path):
    narrow, wide = tied_sae(NARROW_ROWS, 1), tied_sae(WIDE_ROWS, 1)
    levels = [Level("5-k1", "", 5, 0), Level("9-k1", "", 9, 0)]
    web = build_web(levels, [narrow, wide], tokens().split(100))
    assert web.tokens == 600 and not web.matryoshka
    check_planted(web, 1, 0, lambda p: p)
    assert float(web.freq[0][4]) == 0  # the idle narrow latent never fires
    summary = web.summary()[1]
    assert summary["children"] == 9 and summary["parent_by_both"] == pytest.approx(8 / 9)

    # stored and read back; the HTML is one page with the tree and no network
    web.save(tmp_path)
    back = FeatureWeb.load(tmp_path)
    check_planted(back, 1, 0, lambda p: p)
    page = render_html(back)
    assert "<details>" in page and "http" not in page.replace("http-equiv", "")
    assert page.count("cos 0.78") == 8


def test_matryoshka_prefixes_link_added_latents_to_the_prefix(tmp_path):
    # One SAE: latents 0-4 are the level-5 prefix (parents), 5-13 the latents level 14 adds.
    rows = torch.cat([NARROW_ROWS, WIDE_ROWS])
    full = tied_sae(rows, 2, levels=(5, 14))
    full.save(tmp_path / "14-k2")
    levels = family_levels(tmp_path / "14-k2")
    assert [(lv.name, lv.n_latents, lv.new_from) for lv in levels] == [
        ("14-k2@5", 5, 0),
        ("14-k2@14", 14, 5),
    ]
    saes = [TopKSAE.load(lv.path) for lv in levels]
    assert saes[0].n_latents == 5 and saes[0].k == 2
    web = build_web(levels, saes, tokens().split(128))
    assert web.matryoshka and len(web.cos[1]) == 9  # only the added latents are children
    check_planted(web, 1, 5, lambda p: p)
    assert web.home(1, 3) == (0, 3)  # a prefix latent is the same node at every level
    web.save(tmp_path / "14-k2")
    assert find_web(f"{tmp_path / '14-k2'}@5") == tmp_path / "14-k2" / "web.json"


def test_family_levels_and_errors(tmp_path):
    for n in (5, 9):
        tied_sae(NARROW_ROWS if n == 5 else WIDE_ROWS, 1).save(tmp_path / f"{n}-k1")
    levels = family_levels(tmp_path / "9-k1")
    assert [lv.name for lv in levels] == ["5-k1", "9-k1"] and levels[1].new_from == 0
    alone = tmp_path / "alone" / "9-k1"
    tied_sae(WIDE_ROWS, 1).save(alone)
    with pytest.raises(ValueError, match="two levels"):
        family_levels(alone)
    with pytest.raises(ValueError, match="no SAE"):
        family_levels(tmp_path / "nowhere")
    (tmp_path / "bad.json").write_text(json.dumps({"levels": []}))
    with pytest.raises(ValueError, match="cannot read"):
        FeatureWeb.load(tmp_path / "bad.json")


def test_cli_web_builds_stores_and_prints_a_branch(tmp_path, tiny_model_dir, tiny_corpus):
    from typer.testing import CliRunner

    from steer.cli.main import app

    # A family of widths on the tiny model's resid_post.1 (d=32): the web's tokens come from
    # the model; the planted directions need not fire there, the links are checked above.
    torch.manual_seed(0)
    for n in (5, 9):
        sae = tied_sae(NARROW_ROWS if n == 5 else WIDE_ROWS, 1)
        sae.cfg.model_name = str(tiny_model_dir)
        sae.save(tmp_path / "fam" / f"{n}-k1")
    runner = CliRunner()
    args = ["web", "--sae", tmp_path / "fam" / "9-k1", "--corpus", tiny_corpus]
    args += ["--tokens", "300", "--ctx-len", "16", "--split", "all", "--device", "cpu"]
    page = tmp_path / "web.html"
    result = runner.invoke(
        app, [str(a) for a in [*args, "--json", "--branch", "0", "--html", page]]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["tokens"] == 300 and out["web"] == str(tmp_path / "fam" / "9-k1" / "web.json")
    assert [row["level"] for row in out["summary"]] == ["5-k1", "9-k1"]
    branch = out["branch"]
    assert branch[0]["latent"] == 0 and branch[0]["depth"] == 0
    assert {line["latent"] for line in branch[1:]} == {0, 1}  # its two planted children
    assert all(line["link"]["cos"] == pytest.approx(0.781, abs=1e-3) for line in branch[1:])
    assert page.read_text().startswith("<!doctype html>")
    # stored: a second call reads web.json without the model; bad input is one line
    result = runner.invoke(app, ["web", "--sae", str(tmp_path / "fam" / "5-k1"), "--branch", "1"])
    assert result.exit_code == 0 and "#1" in result.stdout and "5-k1" in result.stdout
    result = runner.invoke(app, ["web", "--sae", str(tmp_path / "fam" / "5-k1"), "--branch", "7"])
    assert result.exit_code == 1 and result.stderr.startswith("error: --branch 7")


def test_a_matryoshka_level_has_its_own_catalog_folder(tmp_path):
    from steer.features.catalog import FeatureCatalog, catalog_dir

    folder = tmp_path / "14-k2"
    assert catalog_dir(f"{folder}@5") == folder / "catalog@5"
    assert catalog_dir(folder) == folder / "catalog"
    (folder / "catalog").mkdir(parents=True)  # the full SAE's catalog is not the level's
    assert not FeatureCatalog.exists(f"{folder}@5")
