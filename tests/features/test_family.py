"""Feature splitting across an SAE family: nearest decoder rows in wider siblings."""

import pytest
import torch

from sae import SAEConfig, TopKSAE
from steer.features.family import family_members, family_neighbours


def make_family(root, d=16, widths=(32, 64, 128), hookpoint="resid_post.1"):
    torch.manual_seed(0)
    folders = []
    planted = torch.randn(d)
    planted /= planted.norm()
    for i, n in enumerate(widths):
        sae = TopKSAE(SAEConfig(d, n, 4, hookpoint=hookpoint))
        with torch.no_grad():
            # latent 3 of the narrow SAE splits into two nearby rows of each wider one
            for j, latent in enumerate((5 + i, 9 + i)):
                noisy = planted + 0.05 * (j + 1) * torch.randn(d)
                sae.W_dec[latent] = noisy / noisy.norm()
            if n == widths[0]:
                sae.W_dec[3] = planted
        folder = root / "resid_post.1" / f"{n}-k4"
        sae.save(folder)
        folders.append(folder)
    return folders


def test_members_are_siblings_at_the_same_hook_point_narrowest_first(tmp_path):
    folders = make_family(tmp_path)
    other = TopKSAE(SAEConfig(16, 48, 4, hookpoint="resid_post.2"))
    other.save(tmp_path / "resid_post.1" / "48-k4")  # another hook point: not family
    assert family_members(folders[1]) == [f.resolve() for f in folders]


def test_neighbours_in_wider_saes_find_the_split_feature(tmp_path):
    narrow, mid, wide = make_family(tmp_path)
    result = family_neighbours(narrow, 3, n=2)
    assert list(result) == ["64-k4", "128-k4"]
    assert {nb.latent for nb in result["64-k4"]} == {6, 10}
    assert {nb.latent for nb in result["128-k4"]} == {7, 11}
    assert all(nb.cosine > 0.7 for hits in result.values() for nb in hits)
    assert family_neighbours(wide, 0) == {}  # nothing wider
    with pytest.raises(ValueError, match="out of range"):
        family_neighbours(narrow, 32)


def test_cli_features_family(tmp_path):
    import json

    from typer.testing import CliRunner

    from steer.cli.main import app

    narrow, _, _ = make_family(tmp_path)
    result = CliRunner().invoke(
        app, ["features", "--sae", str(narrow), "--id", "3", "--family", "--top", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert {nb["latent"] for nb in out["wider"]["64-k4"]} == {6, 10}
    table = CliRunner().invoke(app, ["features", "--sae", str(narrow), "--id", "3", "--family"])
    assert table.exit_code == 0 and "128-k4" in table.output
    bad = CliRunner().invoke(app, ["features", "--sae", str(narrow), "--family"])
    assert bad.exit_code == 1 and "--family needs --id" in bad.output


def test_neighbours_carry_the_catalogs_best_label(tmp_path):
    """The family view labels a neighbour as everywhere else: its explanation when it has one."""
    from builders import tiny_catalog

    from steer.features.catalog import FeatureCatalog, catalog_dir
    from steer.features.explain.store import Explanations, LMExplanation

    narrow, mid, _ = make_family(tmp_path, d=32, widths=(32, 64, 128))
    base = tiny_catalog()  # 64 latents, like the middle member
    catalog = FeatureCatalog(base.tensors, list(base.labels), base.pieces, dict(base.meta))
    catalog.save(catalog_dir(mid))
    ex = Explanations()
    ex.add_lm(6, LMExplanation("tester", "zebra crossings", 0.9, 10))
    ex.save(catalog_dir(mid))
    labels = {nb.latent: nb.label for nb in family_neighbours(narrow, 3, n=2)["64-k4"]}
    assert labels[6].startswith("zebra crossings")
    assert labels[10] == base.labels[10]
