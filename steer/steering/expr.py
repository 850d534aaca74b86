"""One steering expression: a set of levers written as one line, parsed and printed.

    2.5 #2374 + 0.4 #55:add @generated      clamp 2374 to 2.5 x its max activation; add
                                            0.4 x 55's direction at the generated tokens
    #88:ablate                              ablate 88 (no strength)
    3 #100 @when:#55>0.4                    clamp 100 to 3 where 55 fires above 0.4 (same pass)
    0.8 v:formal @first:8 - 0.5 #7:set      add 0.8 of the saved vector `formal` for the first
                                            8 generated tokens; set the projection on 7 to -0.5
    1234=10:add                             the `--feature ID=STRENGTH:MODE` spelling

Public API (import from here):
    parse_steering(text) -> Recipe          ValueError "steering expression, column C: ..."
    format_steering(recipe) -> str          parse_steering(format_steering(r)) == r
    Recipe(terms)                           .terms: tuple[Intervention, ...] (copies)
                                            .features: the latents it names; .vectors: the
                                            vector names (its own and its gates')
    resolve_recipe(recipe, sae, sae_dir)    -> list[Intervention] for SteeringHook /
                                            generate_rows: latents checked, vectors loaded
                                            (steer.steering.vectors.load_vector)

The grammar (GRAMMAR below is the source of truth; whitespace is free):
    expression  term (("+" | "-") term)*          "-" negates the next term's strength
    term        ["~"] [strength ["*"]] target [":" mode] modifier*      "~": muted (kept, off)
              | ["~"] INDEX "=" strength [":" mode] modifier*           the --feature spelling
    target      "#" INDEX | INDEX | "v:" NAME | NAME    a latent, or a saved vector by name
    mode        clamp | add | ablate | set | cap       default: clamp (latent), add (vector)
    modifier    "@" (all | prompt | generated | first:N)    where it applies (default: the
                                                        run's positions setting)
              | "@when:" target (">" | ">=" | "<" | "<=") number    the gate
A term's strength is in the playground's units: multiples of the latent's max activation
when the SAE has a catalog (raw SAE units otherwise), as `--feature ID=STRENGTH` uses;
omitted it is 1. A gate on a latent compares its activation in those same units; on a
vector, the residual's projection onto it (units of the vector). An ablation carries no
strength (it is 0 in a Recipe). Every term reads the unedited residual of the SAE's layer
at the same position; the edits add up.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

from lark import Lark, Token, Transformer, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput
from lark.exceptions import VisitError

from .intervention import MODES, Gate, Intervention, check_latents

# LALR with lark's contextual lexer: after a term only "+", "-", ":", "@" or the end can
# follow, so "2 #5 -1 #7" reads "-" as the separator, not as a negative number.
GRAMMAR = r"""
start: (term (sep term)*)?
sep: PLUS | MINUS
term: MUTE? strength? target mode? modifier*       -> term
    | MUTE? NUMBER "=" NUMBER mode? modifier*       -> legacy
strength: NUMBER STAR?
target: FEATURE | NUMBER | VECTOR | NAME
mode: ":" NAME
modifier: "@" NAME                                  -> where
        | "@" FIRST                                 -> first
        | "@" WHEN target CMP NUMBER                -> gate

PLUS: "+"
MINUS: "-"
MUTE: "~"
STAR: "*"
FEATURE: /#[0-9]+/
VECTOR: /v:[A-Za-z_][A-Za-z0-9_]*/
FIRST.2: /first:[0-9]+/
WHEN.2: "when:"
NAME: /[A-Za-z_][A-Za-z0-9_]*/
NUMBER: /[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?/
CMP: ">=" | "<=" | ">" | "<"
%ignore /[ \t]+/
"""

# What a user reads when lark expected one of these terminals.
_EXPECTED = {
    "NUMBER": "a number",
    "FEATURE": "'#id'",
    "VECTOR": "a vector name",
    "NAME": "a name",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "COLON": "':mode'",
    "AT": "'@where'",
    "CMP": "'>' or '<'",
    "EQUAL": "'='",
    "FIRST": "'first:N'",
    "WHEN": "'when:'",
}


class SteeringSyntaxError(ValueError):
    """A bad expression: one line naming the column (1-based)."""

    def __init__(self, column: int, message: str):
        self.column = column
        super().__init__(f"steering expression, column {column}: {message}")


@functools.cache
def _parser() -> Lark:
    return Lark(GRAMMAR, parser="lalr", lexer="contextual", propagate_positions=False)


@dataclass
class Recipe:
    """A set of levers (terms), as an expression says them. Terms are copies, ablations
    carry strength 0, so that equal expressions give equal recipes."""

    terms: tuple[Intervention, ...] = ()

    def __post_init__(self) -> None:
        terms = []
        for term in self.terms:
            if not isinstance(term, Intervention):
                raise ValueError(f"a recipe term is an Intervention, got {term!r}")
            copy = dataclasses.replace(term)
            if copy.mode == "ablate":
                copy.strength = 0.0
            if copy.gate is not None:
                copy.gate = dataclasses.replace(copy.gate)
            terms.append(copy)
        self.terms = tuple(terms)

    def __bool__(self) -> bool:
        return bool(self.terms)

    @property
    def features(self) -> list[int]:
        """The latents named by terms and gates, in order, once each."""
        named = [t.latent for t in self.terms] + [t.gate.source for t in self.terms if t.gate]
        return list(dict.fromkeys(n for n in named if isinstance(n, int)))

    @property
    def vectors(self) -> list[str]:
        named = [t.latent for t in self.terms] + [t.gate.source for t in self.terms if t.gate]
        return list(dict.fromkeys(n for n in named if isinstance(n, str)))

    def interventions(self) -> list[Intervention]:
        """Fresh copies of the terms, for a panel or a hook to own."""
        return [dataclasses.replace(t) for t in self.terms]

    def __str__(self) -> str:
        return format_steering(self)


# ---------------------------------------------------------------------- parsing
class _Build(Transformer):
    """Parse tree -> Recipe. Checks that need the token's column raise _At."""

    def start(self, items):
        terms, sign = [], 1.0
        for item in items:
            if isinstance(item, float):  # a separator: +1 or -1
                sign = item
                continue
            if sign < 0:
                item = dataclasses.replace(item, strength=-item.strength)
            terms.append(item)
        return Recipe(tuple(terms))

    def sep(self, items):
        return -1.0 if items[0] == "-" else 1.0

    def strength(self, items):
        return _number(items[0])

    def target(self, items):
        tok = items[0]
        if tok.type == "FEATURE":
            return (int(tok[1:]), tok)
        if tok.type == "VECTOR":
            return (tok[2:], tok)
        if tok.type == "NUMBER":
            return (_index(tok), tok)
        return (str(tok), tok)

    def mode(self, items):
        tok = items[0]
        if tok not in MODES:
            raise _At(tok, f"unknown mode {str(tok)!r}: use {', '.join(MODES)}")
        return ("mode", str(tok), tok)

    def where(self, items):
        tok = items[0]
        if tok not in ("all", "prompt", "generated"):
            raise _At(tok, f"unknown '@{tok}': use @all, @prompt, @generated, @first:N or @when:")
        return ("where", str(tok), tok)

    def first(self, items):
        tok = items[0]
        if int(tok[len("first:") :]) < 1:
            raise _At(tok, "@first:N needs N >= 1")
        return ("where", f"first:{int(tok[len('first:') :])}", tok)

    def gate(self, items):
        when, (source, tok), cmp, number = items
        try:
            return ("gate", Gate(source, str(cmp), _number(number)), when)
        except ValueError as err:
            raise _At(tok, str(err)) from None

    def term(self, items):
        muted = bool(items) and isinstance(items[0], Token) and items[0].type == "MUTE"
        items = items[1:] if muted else items
        strength = items.pop(0) if isinstance(items[0], float) else None
        (target, tok), mods = items[0], items[1:]
        return _make(target, strength, mods, muted, tok)

    def legacy(self, items):
        muted = items[0].type == "MUTE"
        items = items[1:] if muted else items
        index, value, mods = items[0], items[1], items[2:]
        return _make(_index(index), _number(value), mods, muted, index)


_KINDS = {"mode": "':mode'", "where": "'@where'", "gate": "'@when:' gate"}


class _At(Exception):
    def __init__(self, tok: Token, message: str):
        self.column, self.message = getattr(tok, "column", 1) or 1, message


def _number(tok: Token) -> float:
    value = float(tok)
    if value != value or abs(value) == float("inf"):
        raise _At(tok, f"{str(tok)!r} is not a finite number")
    return value


def _index(tok: Token) -> int:
    if not str(tok).isdigit():
        raise _At(tok, f"a feature index is a whole number, got {str(tok)!r}")
    return int(tok)


def _make(target, strength, mods, muted: bool, tok: Token) -> Intervention:
    seen: dict[str, tuple] = {}
    for kind, value, mtok in mods:
        if kind in seen:
            raise _At(mtok, f"a term takes one {_KINDS[kind]}")
        seen[kind] = (value, mtok)
    default_mode = "add" if isinstance(target, str) else "clamp"
    mode = seen.get("mode", (default_mode,))[0]
    if strength is None:
        strength = 1.0
    try:
        return Intervention(
            target,
            0.0 if mode == "ablate" else strength,
            mode,
            enabled=not muted,
            where=seen.get("where", (None,))[0],
            gate=seen.get("gate", (None,))[0],
        )
    except ValueError as err:
        raise _At(tok, str(err)) from None


def parse_steering(text: str) -> Recipe:
    """Read a steering expression. Bad input: SteeringSyntaxError (a ValueError) naming
    the column, e.g. `steering expression, column 7: expected a strength or '#id'`."""
    if not isinstance(text, str):
        raise ValueError(f"a steering expression is text, got {type(text).__name__}")
    if "\n" in text.strip():
        raise SteeringSyntaxError(text.index("\n") + 1, "an expression is one line")
    try:
        return _Build().transform(_parser().parse(text.strip()))
    except VisitError as err:
        inner = err.orig_exc
        if isinstance(inner, _At):
            raise SteeringSyntaxError(_column(text, inner.column), inner.message) from None
        raise
    except UnexpectedInput as err:
        raise SteeringSyntaxError(_column(text, err.column), _explain(err, text)) from None


def _column(text: str, column: int) -> int:
    """Columns count from the user's text, leading spaces included (we parse it stripped)."""
    return (column if column and column > 0 else 1) + len(text) - len(text.lstrip())


def _explain(err: UnexpectedInput, text: str) -> str:
    if isinstance(err, UnexpectedEOF) or getattr(getattr(err, "token", None), "type", "") == "$END":
        expected = _words(err.expected if isinstance(err, UnexpectedEOF) else err.accepts)
        return f"the expression ends early: expected {expected}"
    if isinstance(err, UnexpectedCharacters):
        found = text.strip()[err.pos_in_stream]
        return f"unexpected {found!r}: expected {_words(err.allowed)}"
    token = getattr(err, "token", "")
    expected = getattr(err, "accepts", None) or getattr(err, "expected", set())
    return f"unexpected {str(token)!r}: expected {_words(expected)}"


def _words(names) -> str:
    names = set(names or ())
    if len(names) > 2:  # lark's lexer state after a target also allows a gate's comparison
        names.discard("CMP")
    if {"NUMBER", "FEATURE"} <= names:  # the start of a term
        return "a strength or '#id'"
    words = sorted(dict.fromkeys(_EXPECTED.get(n, n.lower()) for n in names if n != "$END"))
    return " or ".join(words) if words else "the end of the expression"


# ---------------------------------------------------------------------- printing
def _num(x: float) -> str:
    """Shortest text that reads back as the same float: 2.5, 10, -0.25, 1e-07."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def _target(target: int | str) -> str:
    return f"#{target}" if isinstance(target, int) else f"v:{target}"


def format_term(term: Intervention) -> str:
    """One term without its sign's separator: `2.5 #2374`, `#88:ablate`, `v:formal`."""
    parts = "~" if not term.enabled else ""
    default_mode = "add" if term.is_vector else "clamp"
    if term.mode != "ablate":
        parts += f"{_num(term.strength)} "
    parts += _target(term.latent)
    if term.mode != default_mode:
        parts += f":{term.mode}"
    if term.where is not None:
        parts += f" @{term.where}"
    if term.gate is not None:
        g = term.gate
        parts += f" @when:{_target(g.source)}{g.op}{_num(g.threshold)}"
    return parts


def format_steering(recipe: Recipe | list[Intervention]) -> str:
    """The expression of a recipe (or a list of levers, e.g. the playground's panel)."""
    terms = recipe.terms if isinstance(recipe, Recipe) else Recipe(tuple(recipe)).terms
    out = ""
    for i, term in enumerate(terms):
        negative = term.mode != "ablate" and str(_num(term.strength)).startswith("-")
        if i and negative:  # `a - 0.5 #7` rather than `a + -0.5 #7`
            term = dataclasses.replace(term, strength=-term.strength)
        text = format_term(term)
        out += text if not i else (" - " if negative else " + ") + text
    return out


# ---------------------------------------------------------------------- to the hook
def resolve_recipe(recipe: Recipe, sae, sae_dir: str | Path | None) -> list[Intervention]:
    """The levers SteeringHook / generate_rows apply: latents checked against the SAE,
    saved vectors (terms and gates) loaded from beside the SAE and checked against d_in."""
    from .vectors import load_vector

    check_latents(sae, recipe.features)
    vectors = {}
    for name in recipe.vectors:
        if sae_dir is None:
            raise ValueError(f"vector {name!r}: no SAE folder to find saved vectors in")
        direction = load_vector(name, sae_dir)  # (d,)
        if direction.shape != (sae.d_in,):
            raise ValueError(
                f"vector {name!r} has shape {tuple(direction.shape)}, the SAE reads d={sae.d_in}"
            )
        vectors[name] = direction.to(sae.device, sae.dtype)
    levers = recipe.interventions()
    for lever in levers:
        if lever.is_vector:
            lever.direction = vectors[lever.latent]
        if lever.gate is not None:
            lever.gate = dataclasses.replace(lever.gate, direction=vectors.get(lever.gate.source))
    return levers
