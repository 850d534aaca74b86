"""Feature circuits checked against brute force on tiny models.

Linear regime: SAEs after blocks 1 and 2 of a 3-block Llama whose block 2 writes nothing
(its attention and MLP outputs zeroed) and whose final norm is the identity: m is linear
in x_1 = x_2, so every node effect must equal ablating the node, and every edge between
the depths must equal path patching (ablate u, carry only d's new value to the output).
Near-linear regime: every block at work, a small step of each upstream node removed: edges
must match path patching to first order (central differences; the model's RMSNorm runs in
float32, which bounds how small the step can be).
Bookkeeping: with every node kept, a node's outgoing edges sum to its effect exactly.
"""

import contextlib

import pytest
import torch
from conftest import make_tiny_lm
from torch import nn

from sae import SAEConfig, TopKSAE
from steer.attribution import resolve_target
from steer.attribution.circuit import OUTPUT, build_circuit
from steer.attribution.circuit_check import ablate_nodes, checks
from steer.attribution.circuit_view import tree, tree_line
from steer.attribution.inputs import _pre_act
from steer.attribution.passes import reconstruct
from steer.lm.models import block_output

TEXT = "The Golden Gate Bridge is a suspension bridge in San Francisco."


def make_sae(lm, layer, seed=0, n_latents=64, k=6):
    torch.manual_seed(seed)
    cfg = SAEConfig(lm.d_model, n_latents, k, input_scale=1.5, hookpoint=f"resid_post.{layer}")
    sae = TopKSAE(cfg, dtype=torch.float64)
    with torch.no_grad():
        sae.b_enc.fill_(0.05)  # most latents fire: TopK really selects
        sae.b_pre.normal_(0, 0.1)
    return sae


def ids_of(lm):
    return torch.tensor(lm.tokenizer(TEXT).input_ids)


@pytest.fixture
def linear(one_thread):
    lm = make_tiny_lm("llama", n_layers=3)
    lm.model.double()
    lm.model.model.norm = nn.Identity()
    with torch.no_grad():
        lm.block(2).self_attn.o_proj.weight.zero_()
        lm.block(2).mlp.down_proj.weight.zero_()
    return lm, [make_sae(lm, 1, seed=0), make_sae(lm, 2, seed=1)]


# ---------------------------------------------------------------- brute force
def _edit(lm, stage, fn):
    module = lm.model.get_input_embeddings() if stage is None else lm.block(stage)

    def hook(_m, _a, output):
        x = fn(block_output(output).clone())
        return (x, *output[1:]) if isinstance(output, tuple) else x

    return module.register_forward_hook(hook)


def _run(lm, ids, edits, target=None, read=None):
    """m (or the residual after block `read`) with the edits {stage: fn(x) -> x} applied."""
    handles = [_edit(lm, s, fn) for s, fn in edits.items()]
    held = {}
    if read is not None:
        handles.append(_edit(lm, read, lambda x: held.setdefault("x", x)))
    try:
        with torch.no_grad():
            out = lm.model(input_ids=ids[None], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return held["x"][0] if read is not None else float(target.metric(out.logits[0, -1]))


def _remove(node, sae, scale, first, x0):
    """fn(x): x less `scale` times the node's clean value (x0: the clean residual)."""

    def fn(x):
        if node.kind == "token":
            x[0, node.pos] *= 1 - scale
        elif node.kind == "error":
            eps = x0[first:] - reconstruct(sae, x0[first:], sae.encode(x0[first:]).top_indices)
            x[0, first:] -= scale * eps
        else:
            x[0, node.pos] -= scale * node.activation * sae.decoder_directions([node.feature])[0]
        return x

    return fn


def path_patched_edge(lm, saes, ids, target, u, d, scale=1.0, first=1):
    """m(clean) - m(clean but d's value set to what it is when `scale` of u is removed),
    divided by scale: the effect of u on m through d alone."""
    ids = ids[: target.read_at + 1]
    sae_of = {int(s.cfg.hookpoint.split(".")[1]): s for s in saes}
    up_x = _run(lm, ids, {}, read=u.layer) if u.layer is not None else None
    if u.kind == "token":
        with torch.no_grad():
            up_x = lm.model.get_input_embeddings()(ids)
    fn = _remove(u, sae_of.get(u.layer), scale, first, up_x)
    x_b = _run(lm, ids, {}, read=d.layer)
    x_b2 = _run(lm, ids, {u.layer: fn}, read=d.layer)
    sae = sae_of[d.layer]
    if d.kind == "latent":
        z = [float(_pre_act(sae, x[d.pos], d.feature).detach()) for x in (x_b, x_b2)]
        delta = (z[1] - z[0]) * sae.decoder_directions([d.feature])[0]

        def patch(x):
            x[0, d.pos] += delta
            return x
    else:
        idx = sae.encode(x_b[first:]).top_indices
        eps = [x[first:] - reconstruct(sae, x[first:], idx) for x in (x_b, x_b2)]

        def patch(x):
            x[0, first:] += eps[1] - eps[0]
            return x

    m = _run(lm, ids, {}, target)
    return (m - _run(lm, ids, {d.layer: patch}, target)) / scale


# ---------------------------------------------------------------- the tests
def test_linear_regime_nodes_and_edges_equal_brute_force(linear, tiny_tokenizer):
    lm, saes = linear
    ids = ids_of(lm)
    target = resolve_target(tiny_tokenizer, ids, position=10, contrast=" the")
    c = build_circuit(lm, saes, ids, target, nodes=6)
    inner = [n for n in c.nodes if n.kind in ("latent", "error")]
    assert sum(n.kind == "latent" for n in inner) >= 8
    exact = ablate_nodes(lm, saes, ids, target, [[n] for n in inner])
    torch.testing.assert_close(
        torch.tensor([n.effect for n in inner], dtype=torch.float64), exact, atol=1e-7, rtol=1e-4
    )
    edges = [e for e in c.edges if e.src.startswith("L1") and e.dst.startswith("L2")]
    assert len(edges) >= 20
    brute = [path_patched_edge(lm, saes, ids, target, c.node(e.src), c.node(e.dst)) for e in edges]
    weights = torch.tensor([e.weight for e in edges], dtype=torch.float64)
    # Exact: ablating an upstream node leaves every downstream ReLU on its side here.
    close = (weights - torch.tensor(brute)).abs() <= 1e-7 + 1e-4 * weights.abs()
    assert close.all(), list(zip(weights.tolist(), brute, strict=True))
    assert weights.abs().max() > 1e-4
    # Edges into the output are the last depth's node effects.
    for e in c.incoming(OUTPUT):
        assert e.weight == c.node(e.src).effect


def test_near_linear_edges_match_path_patching_to_first_order(tiny_tokenizer, one_thread):
    """Every block at work; u is removed a small step (1e-3 of it): edges are derivatives."""
    lm = make_tiny_lm("llama", n_layers=4)
    lm.model.double()
    saes = [make_sae(lm, 1, seed=0), make_sae(lm, 3, seed=1)]
    ids = ids_of(lm)
    target = resolve_target(tiny_tokenizer, ids, position=10)
    c = build_circuit(lm, saes, ids, target, nodes=4)
    picked = []
    for prefix in ("t", "L1.f", "L1.err"):  # token -> L1, L1 latent -> L3, L1 error -> L3
        found = [e for e in c.edges if e.src.startswith(prefix) and e.dst != OUTPUT]
        picked += sorted(found, key=lambda e: -abs(e.weight))[:4]
    assert len(picked) == 12
    for e in picked:  # central differences: second-order terms cancel
        u, d = c.node(e.src), c.node(e.dst)
        brute = [path_patched_edge(lm, saes, ids, target, u, d, s) for s in (1e-3, -1e-3)]
        assert e.weight == pytest.approx(sum(brute) / 2, rel=2e-3, abs=2e-5), e
    assert max(abs(e.weight) for e in picked) > 1e-2


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_outgoing_edges_sum_to_the_node_effect(family, tiny_tokenizer, one_thread):
    """Three depths, every node kept: x_b = x̂_b + ε_b, so nothing is lost between stages."""
    with contextlib.redirect_stderr(None):
        lm = make_tiny_lm(family, n_layers=4)
    lm.model.double()
    saes = [make_sae(lm, layer, seed=layer) for layer in (2, 0, 1)]  # any order
    ids = ids_of(lm)
    target = resolve_target(tiny_tokenizer, ids, position=9, contrast=" the")
    c = build_circuit(lm, saes, ids, target, nodes=10_000)
    assert c.layers == [0, 1, 2]
    inner = [n for n in c.nodes if n.layer in (0, 1) or (n.kind == "token" and n.pos >= 1)]
    assert len(inner) > 100
    big = max(abs(n.effect) for n in inner)
    for node in inner:  # effects are kept in float32
        out = sum(e.weight for e in c.outgoing(node.id))
        assert out == pytest.approx(node.effect, abs=1e-6 * big, rel=1e-4), node.id
    assert big > 1e-3
    # Nothing pruned: the kept latents carry every bit of each depth's attribution but the error's.
    for s in c.stages[1:]:
        assert s.explained + s.error_share == pytest.approx(1.0)


def test_pruning_keeps_the_strongest_and_reports_the_share(linear, tiny_tokenizer):
    lm, saes = linear
    ids = ids_of(lm)
    target = resolve_target(tiny_tokenizer, ids, position=10)
    full = build_circuit(lm, saes, ids, target, nodes=10_000)
    small = build_circuit(lm, saes, ids, target, nodes=2)
    for layer in (1, 2):
        every = sorted(
            (abs(n.effect) for n in full.nodes if n.kind == "latent" and n.layer == layer),
            reverse=True,
        )
        kept = sorted(
            (abs(n.effect) for n in small.nodes if n.kind == "latent" and n.layer == layer),
            reverse=True,
        )
        assert kept == pytest.approx(every[:2])
        stage = small.stage(layer)
        err = abs(small.node(f"L{layer}.err").effect)
        assert stage.explained == pytest.approx(sum(kept) / (sum(every) + err))
        assert stage.explained_by(2) == pytest.approx(stage.explained)
        assert stage.explained_by(10_000) + stage.error_share == pytest.approx(1.0)
    # The check: the kept latents of a depth ablated together, as predicted (linear regime).
    found = {c.name: c for c in checks(lm, saes, ids, small, top=3)}
    assert len(found) == 5
    for c in found.values():
        assert c.measured == pytest.approx(c.predicted, abs=1e-7, rel=1e-4)


def test_bad_input_is_one_line(linear, tiny_tokenizer):
    lm, saes = linear
    ids = ids_of(lm)
    target = resolve_target(tiny_tokenizer, ids, position=10)
    with pytest.raises(ValueError, match="one SAE per depth"):
        build_circuit(lm, [saes[0], make_sae(lm, 1, seed=3)], ids, target)
    with pytest.raises(ValueError, match="at least one SAE"):
        build_circuit(lm, [], ids, target)
    with pytest.raises(ValueError, match="--nodes"):
        build_circuit(lm, saes, ids, target, nodes=0)


def test_the_tree_walks_back_from_the_output_by_the_strongest_edges(linear, tiny_tokenizer):
    lm, saes = linear
    ids = ids_of(lm)
    target = resolve_target(tiny_tokenizer, ids, position=10)
    c = build_circuit(lm, saes, ids, target, nodes=5)
    root = tree(c, branch=2)
    assert root.node.id == OUTPUT and tree_line(c, root).startswith("logit(")
    seen, stack = [], [root]
    while stack:
        item = stack.pop()
        seen.append(item)
        into = c.incoming(item.node.id)
        if item.repeated or item.node.kind in ("error", "token"):
            assert item.children == []  # errors and repeats are not expanded
        else:
            assert [ch.node.id for ch in item.children] == [e.src for e in into[:2]]
            assert [ch.weight for ch in item.children] == [e.weight for e in into[:2]]
        stack.extend(item.children)
    expanded = [i.node.id for i in seen if i.children]
    assert len(expanded) == len(set(expanded))  # each node expanded once
    assert {i.node.kind for i in seen} >= {"output", "latent", "token"}
    with pytest.raises(ValueError, match="--branch"):
        tree(c, branch=0)
