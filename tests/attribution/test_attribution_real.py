"""One known case on the embedded model and the shipped default SAE."""

import pytest
from conftest import requires_embedded

from steer.app.engine import find_default_sae


@requires_embedded
@pytest.mark.slow
def test_a_paris_feature_is_attributed_for_paris_after_the_eiffel_tower(one_thread):
    from steer.attribution import ablation_effects, attribute, resolve_target
    from steer.features.catalog import FeatureCatalog
    from steer.steering import open_sae

    sae_dir = find_default_sae()
    lm, sae = open_sae(sae_dir)
    catalog = FeatureCatalog.load(sae_dir)
    ids = lm.tokenizer("The Eiffel Tower is in")["input_ids"]
    target = resolve_target(lm.tokenizer, ids, target=" Paris")
    attr = attribute(lm, sae, ids, target)
    top = attr.top(10)
    paris = [s for s in top if "Paris" in catalog.label(s.latent)]
    assert paris, [(s.latent, catalog.label(s.latent)) for s in top]
    assert paris[0].score > 0  # it raises " Paris"
    (exact,) = ablation_effects(lm, sae, ids, target, [paris[0].latent])
    assert exact > 0.5 * paris[0].score  # and ablating it lowers " Paris", as estimated
    assert 0 <= attr.error_share < 0.5
