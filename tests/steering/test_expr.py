"""The steering expression: parse, print, round trip, the error table, and what the terms
do in the hook (gates on a planted feature, set / cap, vectors, per-term positions)."""

import random

import pytest
import torch
from builders import CATALOG_LAYER, planted_sae
from conftest import make_tiny_lm
from safetensors.torch import save_file

from steer.steering import Intervention, SteeringHook
from steer.steering.expr import Recipe, format_steering, parse_steering, resolve_recipe
from steer.steering.intervention import Gate
from steer.steering.terms import where_mask
from steer.steering.vectors import load_vector, vector_path

# (expression, its canonical print)
CANONICAL = [
    ("2.5 #2374 + 0.4 #55:add @generated", "2.5 #2374 + 0.4 #55:add @generated"),
    ("#88:ablate", "#88:ablate"),
    ("3 #100 @when:#55>0.4", "3 #100 @when:#55>0.4"),
    ("0.8 v:formal @first:8 - 0.5 #7:set", "0.8 v:formal @first:8 - 0.5 #7:set"),
    ("1234=10:add", "10 #1234:add"),
    ("1234=10", "10 #1234"),
    ("2374", "1 #2374"),
    ("2 2374", "2 #2374"),
    ("2*#5", "2 #5"),
    ("-2 #5 -1 #7", "-2 #5 - 1 #7"),
    ("2 #5 + -1 #7", "2 #5 - 1 #7"),
    ("  ~3 #4 @prompt ", "~3 #4 @prompt"),
    ("formal", "1 v:formal"),
    ("0.5 v:formal:set @when:v:formal<=-1e-3", "0.5 v:formal:set @when:v:formal<=-0.001"),
    ("5 #3 :cap @all @when:3>=2", "5 #3:cap @all @when:#3>=2"),
    ("7 #1:ablate", "#1:ablate"),
    ("", ""),
]


@pytest.mark.parametrize("text,canonical", CANONICAL)
def test_expressions_print_canonically_and_round_trip(text, canonical):
    recipe = parse_steering(text)
    assert format_steering(recipe) == canonical
    assert parse_steering(canonical) == recipe


def test_terms_mean_what_the_readme_says():
    (a, b) = parse_steering("2.5 #2374 + 0.4 #55:add @generated").terms
    assert a == Intervention(2374, 2.5, "clamp")
    assert b == Intervention(55, 0.4, "add", where="generated")
    (c,) = parse_steering("3 #100 @when:#55>0.4").terms
    assert c.gate == Gate(55, ">", 0.4) and c.where is None
    (v, f) = parse_steering("0.8 v:formal @first:8 - 0.5 #7:set").terms
    assert (v.latent, v.mode, v.where, v.strength) == ("formal", "add", "first:8", 0.8)
    assert (f.latent, f.mode, f.strength) == (7, "set", -0.5)
    assert not parse_steering("~3 #4").terms[0].enabled
    assert parse_steering("#1 + #2").features == [1, 2]
    assert parse_steering("v:a @when:v:b>0 + #3 @when:#9<1").vectors == ["a", "b"]
    assert parse_steering("v:a @when:v:b>0 + #3 @when:#9<1").features == [3, 9]


# (expression, column, what the message says)
ERRORS = [
    ("2.5 #", 5, "expected a strength or '#id'"),
    ("2 #5 +", 6, "ends early: expected a strength or '#id'"),
    ("  @x", 3, "unexpected '@'"),
    ("#5:foo", 4, "unknown mode 'foo'"),
    ("2 #5 @bar", 7, "unknown '@bar'"),
    ("2 #5 #6", 6, "unexpected '#6'"),
    ("#5 @when:#3", 10, "expected '>' or '<'"),
    ("2.5 #2374 & 3", 11, "unexpected '&'"),
    ("#1:clamp:add", 9, "unexpected ':'"),
    ("2 #5 @first:0", 7, "@first:N needs N >= 1"),
    ("v:x:clamp", 1, "cannot be clamped"),
    ("1.5=3", 1, "a feature index is a whole number"),
    ("#5 @prompt @all", 13, "a term takes one '@where'"),
    ("#5 @when:#1>0 @when:#2>0", 16, "a term takes one '@when:' gate"),
    ("3 #5 @when:#1>x", 15, "unexpected 'x': expected a number"),
    ("#5\n#6", 3, "one line"),
]


@pytest.mark.parametrize("text,column,message", ERRORS)
def test_bad_expressions_name_the_column(text, column, message):
    with pytest.raises(ValueError) as err:
        parse_steering(text)
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(f"steering expression, column {column}: ")
    assert message in line


def test_any_recipe_round_trips():
    """parse(format(r)) == r for random recipes: every field the grammar can say."""
    rng = random.Random(0)
    for _ in range(300):
        terms = []
        for _ in range(rng.randint(1, 4)):
            vector = rng.random() < 0.3
            target = rng.choice(["formal", "v_2", "x"]) if vector else rng.randint(0, 99999)
            modes = ("add", "ablate", "set", "cap") if vector else ("clamp", "add", "ablate")
            gate = None
            if rng.random() < 0.4:
                source = rng.choice([rng.randint(0, 50), "g"])
                gate = Gate(source, rng.choice([">", "<", ">=", "<="]), rng.uniform(-5, 5))
            terms.append(
                Intervention(
                    target,
                    rng.choice([rng.uniform(-50, 50), 0.0, 1e-9, 12.0]),
                    rng.choice(modes + ("set", "cap")),
                    enabled=rng.random() < 0.8,
                    where=rng.choice([None, "all", "prompt", "generated", "first:3"]),
                    gate=gate,
                )
            )
        recipe = Recipe(tuple(terms))
        assert parse_steering(format_steering(recipe)) == recipe, format_steering(recipe)


def test_a_lever_dict_keeps_where_and_gate_and_old_dicts_load():
    iv = parse_steering("3 #100 @first:4 @when:#55>=0.4").terms[0]
    assert Intervention.from_dict(iv.to_dict()) == iv
    assert Intervention.from_dict({"latent": 3, "strength": 2, "mode": "add", "enabled": True})
    assert "where" not in Intervention(3, 2.0).to_dict()  # old presets' shape, unchanged


# ---------------------------------------------------------------------- in the hook
@pytest.fixture(scope="module")
def planted():
    """The tiny Llama, an SAE whose latent 0 fires on " Bridge" only, and a text."""
    lm = make_tiny_lm("llama")
    sae = planted_sae(lm)
    text = "The Golden Gate Bridge is a suspension bridge. We walked over the Bridge at noon, " * 3
    ids = torch.tensor(lm.tokenizer(text, add_special_tokens=False).input_ids)
    with torch.inference_mode():
        x = lm.residual(ids[None], CATALOG_LAYER)  # (1, T, d)
    for p in sae.parameters():
        p.requires_grad_(False)
    return lm, sae, ids, x.clone()


def test_gate_edits_exactly_where_the_planted_feature_fires(planted):
    lm, sae, ids, x = planted
    (bridge,) = lm.tokenizer(" Bridge", add_special_tokens=False).input_ids
    on = ids == bridge  # (T,)
    assert 2 <= int(on.sum()) < len(ids) - 2
    fires = sae.activations(x[0], [0])[:, 0] > 0
    assert torch.equal(fires, on)  # the planted feature: on " Bridge", nowhere else
    for text in ("3 #5:add @when:#0>0.1", "3 #5:set @when:#0>0.1", "#9:ablate @when:#0>0.1"):
        levers = resolve_recipe(parse_steering(text), sae, None)
        with torch.inference_mode():
            changed = (SteeringHook(lm, sae, levers).edit(x, 0) - x)[0].abs().sum(-1) > 0
        if "ablate" in text:  # latent 9 may be off at some " Bridge": never edited elsewhere
            assert not bool(changed[~on].any())
        else:
            assert torch.equal(changed, on), text
    # The opposite gate edits every other position; a gate that never holds, none.
    levers = resolve_recipe(parse_steering("3 #5:add @when:#0<=0.1"), sae, None)
    changed = (SteeringHook(lm, sae, levers).edit(x, 0) - x)[0].abs().sum(-1) > 0
    assert torch.equal(changed, ~on)
    levers = resolve_recipe(parse_steering("3 #5:add @when:#0>1e9"), sae, None)
    assert torch.equal(SteeringHook(lm, sae, levers).edit(x, 0), x)


def test_gate_in_the_forward_pass_leaves_positions_before_the_token_alone(planted):
    """Causal model: logits before the first " Bridge" are untouched, those at it move."""
    lm, sae, ids, _ = planted
    (bridge,) = lm.tokenizer(" Bridge", add_special_tokens=False).input_ids
    first = int((ids == bridge).nonzero()[0])
    levers = resolve_recipe(parse_steering("20 #5:add @when:#0>0.1"), sae, None)
    with torch.inference_mode():
        base = lm.model(ids[None]).logits[0]
        with SteeringHook(lm, sae, levers).reset(0):
            steered = lm.model(ids[None]).logits[0]
    torch.testing.assert_close(steered[:first], base[:first])
    assert (steered[first] - base[first]).abs().max() > 1e-3


def test_set_and_cap_move_the_projection(planted):
    lm, sae, _, x = planted
    w = sae.decoder_directions([3])[0]  # no catalog: scale 1, w = dir_3

    def projection(levers):
        edited = SteeringHook(lm, sae, levers).edit(x, 0)[0]
        return edited @ w / w.dot(w)  # (T,)

    p = x[0] @ w / w.dot(w)
    torch.testing.assert_close(projection([Intervention(3, 0.7, "set")]), torch.full_like(p, 0.7))
    cap = float(p.median())
    capped = projection([Intervention(3, cap, "cap")])
    torch.testing.assert_close(capped, p.clamp(max=cap))


def test_a_saved_vector_steers_like_the_feature_it_copies(planted, tmp_path):
    lm, sae, _, x = planted
    path = vector_path(tmp_path, "bridge")
    path.parent.mkdir()
    save_file({"direction": sae.decoder_directions([0])[0].contiguous()}, str(path))
    assert torch.equal(load_vector("bridge", tmp_path), sae.decoder_directions([0])[0])
    by_vector = resolve_recipe(parse_steering("4 v:bridge @generated"), sae, tmp_path)
    by_feature = [Intervention(0, 4.0, "add")]
    a = SteeringHook(lm, sae, by_vector, prompt_len=5).edit(x, 0)
    b = SteeringHook(lm, sae, by_feature, positions="generated", prompt_len=5).edit(x, 0)
    torch.testing.assert_close(a, b)
    gated = resolve_recipe(parse_steering("4 #2:add @when:v:bridge>0.5"), sae, tmp_path)
    assert gated[0].gate.direction is not None
    with pytest.raises(ValueError, match=r"no vector 'nope' beside the SAE .*saved: bridge"):
        resolve_recipe(parse_steering("v:nope"), sae, tmp_path)
    with pytest.raises(ValueError, match="feature 999 is out of range"):
        resolve_recipe(parse_steering("#999"), sae, tmp_path)
    with pytest.raises(ValueError, match="is not loaded"):
        SteeringHook(lm, sae, parse_steering("v:bridge").interventions())


def test_where_masks_and_per_term_positions(planted):
    lm, sae, _, x = planted
    assert where_mask("first:2", 3, 4, prompt_len=5, device="cpu").tolist() == [
        False,
        True,
        True,
        False,
    ]
    assert where_mask("generated", 0, 6, 5, "cpu").tolist() == [False] * 4 + [True] * 2
    assert where_mask("prompt", 0, 6, 5, "cpu").tolist() == [True] * 5 + [False]
    # A term's own @prompt beats the run's positions; its delta stops at the prompt's end.
    levers = [Intervention(4, 2.0, "add", where="prompt")]
    hook = SteeringHook(lm, sae, levers, positions="generated", prompt_len=3)
    changed = (hook.edit(x, 0) - x)[0].abs().sum(-1) > 0
    assert changed.tolist() == [True] * 3 + [False] * (x.shape[1] - 3)
    assert hook.row_key(0) != ()  # this row's prompt differs from the baseline's
