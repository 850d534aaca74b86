"""Print the README's metrics table of a shipped family from its eval.json; with several
folders (one per depth), one table with a depth column.

.venv/bin/python scripts/family_table.py checkpoints/smollm2-135m/resid_post.12
.venv/bin/python scripts/family_table.py checkpoints/smollm2-135m/resid_post.*
"""

import json
import sys
from pathlib import Path

from sae import TopKSAE

folders = [Path(arg) for arg in sys.argv[1:]]
folders.sort(key=lambda f: int(f.name.split(".")[-1]) if f.name[-1].isdigit() else 0)
several = len(folders) > 1
head = "| SAE | latents | k | training tokens | FVU | L0 | dead | Δ loss (nats) | loss recovered | KL |"
print(("| depth " if several else "") + head)
print("|---" * (11 if several else 10) + "|")
heldout = set()
for folder in folders:
    results = json.loads((folder / "eval.json").read_text())
    for name, r in sorted(
        results.items(), key=lambda kv: TopKSAE.load(folder / Path(kv[0]).name).n_latents
    ):
        cfg = TopKSAE.load(folder / Path(name).name).cfg
        tokens = cfg.extra.get("tokens") or cfg.extra.get("provenance", {}).get("tokens") or "?"
        print(
            (f"| {folder.name} " if several else "")
            + f"| {Path(name).name} | {cfg.n_latents:,} | {cfg.k} | {tokens:,} | {r['fvu']:.3f} | "
            f"{r['l0']:.1f} | {100 * r['dead_frac']:.2f}% | {r['delta_loss']:.3f} | "
            f"{r['loss_recovered']:.3f} | {r['kl']:.3f} |"
        )
        heldout.add(f"{r['tokens']:,} of {r['corpus']}")
print(f"\nheld-out tokens: {'; '.join(sorted(heldout))}")
