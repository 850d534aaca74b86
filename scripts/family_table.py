"""Print the README's metrics table of a shipped family from its eval.json.

.venv/bin/python scripts/family_table.py checkpoints/smollm2-135m/resid_post.12
"""

import json
import sys
from pathlib import Path

from sae import TopKSAE

folder = Path(sys.argv[1])
results = json.loads((folder / "eval.json").read_text())
print(
    "| SAE | latents | k | training tokens | FVU | L0 | dead | Δ loss (nats) | loss recovered | KL |"
)
print("|---|---|---|---|---|---|---|---|---|---|")
for name, r in sorted(
    results.items(), key=lambda kv: TopKSAE.load(folder / Path(kv[0]).name).n_latents
):
    cfg = TopKSAE.load(folder / Path(name).name).cfg
    tokens = cfg.extra.get("tokens") or cfg.extra.get("provenance", {}).get("tokens") or "?"
    print(
        f"| {Path(name).name} | {cfg.n_latents:,} | {cfg.k} | {tokens:,} | {r['fvu']:.3f} | {r['l0']:.1f} | "
        f"{100 * r['dead_frac']:.2f}% | {r['delta_loss']:.3f} | {r['loss_recovered']:.3f} | {r['kl']:.3f} |"
    )
print(
    f"\nheld-out tokens: {next(iter(results.values()))['tokens']:,} of {next(iter(results.values()))['corpus']}"
)
