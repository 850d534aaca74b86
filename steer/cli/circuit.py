"""`steer circuit`: the graph from the input tokens through SAE latents at several depths
to a token, pruned, checked by ablation; a tree in the terminal, JSON, or an HTML page."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .options import (
    CONTRAST_OPTION,
    DEVICE_HELP,
    MODEL_HELP,
    POSITION_OPTION,
    TARGET_OPTION,
    check_out_file,
    friendly_errors,
    load_catalog_for,
    load_for_steering,
    sae_or_default,
)


@friendly_errors
def circuit(
    saes: list[Path] = typer.Option(
        None,
        "--sae",
        help="An SAE folder; repeat for each depth (one SAE per depth, any number of depths). "
        "Default: the shipped SAE with --all-depths.",
    ),
    all_depths: bool = typer.Option(
        False,
        "--all-depths",
        help="Add the SAEs at the other depths beside the first --sae "
        "(<root>/resid_post.L/: the folder of the same name, else the widest).",
    ),
    prompt: str = typer.Option(..., "--prompt", "-p", help="The text (or the chat prompt)."),
    completion: str = typer.Option(
        None,
        "--completion",
        "-c",
        help="A completion of the prompt: positions then count in it, and the prompt is "
        "wrapped in the chat template as generate does.",
    ),
    target: str = TARGET_OPTION,
    position: int = POSITION_OPTION,
    contrast: str = CONTRAST_OPTION,
    nodes: int = typer.Option(
        8, "--nodes", "-n", help="Latents kept per depth (and tokens kept), by |effect|."
    ),
    branch: int = typer.Option(3, "--branch", help="Strongest inputs shown per node in the tree."),
    check: int = typer.Option(
        5,
        "--check",
        help="Ablate the N strongest nodes one by one, and each depth's kept latents "
        "together: predicted against measured (0: skip).",
    ),
    chat: bool = typer.Option(
        None,
        "--chat/--no-chat",
        help="Wrap the prompt in the chat template [default: with a completion, when the "
        "tokenizer has one; without, the raw text].",
    ),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the graph as JSON."),
    html: Path = typer.Option(
        None, "--html", help="Also write the graph as one self-contained HTML page here."
    ),
) -> None:
    """The feature circuit behind a token: input tokens -> latents at each depth -> output.

    Nodes are the input tokens, every active latent at every position of each SAE's depth,
    each SAE's error term (one node per depth) and the target's logit. Node effects and
    edges (an upstream node's effect on the logit through a downstream node) come from
    attribution patching with every SAE spliced in; pruning keeps the strongest --nodes
    latents per depth and says what share of the attribution they explain."""
    from steer.attribution.circuit import build_circuit
    from steer.attribution.circuit_check import checks
    from steer.attribution.report import build_context
    from steer.attribution.targets import context_position, resolve_target

    check_out_file(html, "--html")
    if check < 0:
        raise ValueError(f"--check must be 0 or more, got {check}")
    if not saes:  # the shipped SAE and its sibling depths: the whole path through the model
        saes, all_depths = [sae_or_default(None, model)], True
    dirs = _sae_dirs(saes, all_depths)
    lm, first_sae = load_for_steering(dirs[0], model, device, "fp32", [])
    models = [first_sae] + [_load_sae(d, lm.device) for d in dirs[1:]]
    with_completion = completion is not None
    use_chat = (lm.is_chat if with_completion else False) if chat is None else chat
    ids, start = build_context(lm, prompt, completion, chat=use_chat)
    q = context_position(lm.tokenizer, ids, start, position, target, with_completion)
    tgt = resolve_target(lm.tokenizer, ids, position=q, target=target, contrast=contrast)
    labelers = _labelers(dirs, models)
    result = build_circuit(lm, models, ids, tgt, nodes=nodes, labelers=labelers)
    found = checks(lm, models, ids, result, top=check) if check else []
    if html is not None:
        from steer.attribution.circuit_html import write_html

        write_html(result, html, title=f"{lm.name} · {prompt[:60]}")
    if json_out:
        out = result.to_dict()
        out.update(model=lm.name, saes=[str(d) for d in dirs], start=start)
        out["checks"] = [vars(c) for c in found]
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    _print(lm, result, found, start, branch, html)


def _sae_dirs(saes: list[Path], all_depths: bool) -> list[Path]:
    from steer.app.checkpoints import sibling_depths

    for d in saes:
        if not Path(d).exists():
            raise ValueError(f"--sae {d}: no such folder")
    if not all_depths:
        return list(saes)
    extra = [d for d in sibling_depths(saes[0]) if d not in saes]
    return list(saes) + extra


def _load_sae(folder: Path, device):
    from sae import load_sae

    return load_sae(folder, device=device)


def _labelers(dirs, models) -> dict:
    """layer -> feature -> label, from each SAE's catalog (none: no labels)."""
    from steer.lm.models import parse_hookpoint

    out = {}
    for folder, sae in zip(dirs, models, strict=True):
        catalog = load_catalog_for(folder, sae)
        if catalog is not None:
            out[parse_hookpoint(sae.cfg.hookpoint)] = catalog.label
    return out


def _print(lm, result, found, start, branch, html) -> None:
    from rich.console import Console
    from rich.text import Text
    from rich.tree import Tree

    from steer.attribution.circuit_view import summary, tree, tree_line

    console = Console()
    depths = ", ".join(f"resid_post.{layer}" for layer in result.layers)
    console.print(
        Text.assemble(
            (lm.name, "bold"),
            f" · {depths} · position {result.target.read_at + 1} · {result.seconds:.2f} s",
        )
    )
    context = Text()
    for i, t in enumerate(result.tokens):
        context.append(t, style="underline" if i >= start else "")
    context.append(" → ", style="dim")
    context.append(result.target_text, style="bold green")
    console.print(context)
    for line in summary(result):
        console.print(line, style="dim", markup=False, highlight=False)

    def add(branch_node, item):
        for child in item.children:
            style = {"token": "cyan", "error": "yellow"}.get(child.node.kind, "")
            sub = branch_node.add(Text(tree_line(result, child), style=style))
            add(sub, child)

    root = tree(result, branch)
    shown = Tree(Text(tree_line(result, root), style="bold"))
    add(shown, root)
    console.print(shown)
    if found:
        console.print("check by ablation (drop of the metric): predicted → measured")
        for c in found:
            console.print(
                f"  {c.name:<22} {c.predicted:+.3f} → {c.measured:+.3f}",
                markup=False,
                highlight=False,
            )
    if html is not None:
        console.print(f"wrote {html}", markup=False, highlight=False)
