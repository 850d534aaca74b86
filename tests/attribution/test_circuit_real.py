"""One known case on the embedded model and the shipped SAEs at every shipped depth."""

import pytest
from conftest import requires_embedded


@requires_embedded
@pytest.mark.slow
def test_a_latent_on_plural_keys_raises_are_over_is_as_checked(one_thread):
    from sae import load_sae
    from steer.app.checkpoints import sibling_depths
    from steer.app.engine import find_default_sae
    from steer.attribution import resolve_target
    from steer.attribution.circuit import build_circuit
    from steer.attribution.circuit_check import ablate_nodes
    from steer.steering import open_sae

    dirs = sibling_depths(find_default_sae())
    lm, first = open_sae(dirs[0])
    saes = [first] + [load_sae(d) for d in dirs[1:]]
    ids = lm.tokenizer("The keys to the cabinet")["input_ids"]
    target = resolve_target(lm.tokenizer, ids, target=" are", contrast=" is")
    c = build_circuit(lm, saes, ids, target, nodes=8)
    assert c.metric > 0  # the model agrees with "keys"
    last = [n for n in c.nodes if n.kind == "latent" and n.layer == c.layers[-1]]
    top = sorted(last, key=lambda n: -abs(n.effect))[:3]
    on_keys = [n for n in top if n.pos == 1 and n.effect > 0]
    assert on_keys, [(n.id, n.effect) for n in top]
    (measured,) = ablate_nodes(lm, saes, ids, target, [[on_keys[0]]]).tolist()
    assert measured > 0.5 * on_keys[0].effect  # ablating it lowers "are" over "is", as estimated
