"""The trainer's metrics: running sums on the device between log steps, one JSON record
per log step in metrics.jsonl (one file per depth), trimmed back on resume, and the
summary fit() returns. A mixin of Trainer (sae/train/trainer.py)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from sae.model import atomic_write

METRICS_FILE = "metrics.jsonl"


class MetricsLogMixin:
    """Needs Trainer's saes, since_fired, dead_after_tokens, lrs, lr_factor, step, tokens,
    out_dir, hookpoint and _families."""

    def _metrics_paths(self) -> dict[str, Path]:
        """Name prefix ("" with one depth, "<hookpoint>/") -> that family's metrics file."""
        return {
            prefix: self.out_dir / prefix / METRICS_FILE
            for prefix, _ in self._families(self.hookpoint)
        }

    def _reset_log_window(self) -> None:
        # Running sums since the last log, kept on the device: [fvu, auxk_loss, l0].
        self._window = {name: torch.zeros(3, device=self.device) for name in self.saes}
        self._window_steps = 0
        self._window_start = (time.perf_counter(), self.tokens)

    def _log(self, log_file, on_log) -> None:
        now = time.perf_counter()
        t0, tokens0 = self._window_start
        steps = max(1, self._window_steps)
        lr_factor = self.lr_factor(max(0, self.step - 1))
        saes = {}
        for name in self.saes:
            fvu, auxk, l0 = (self._window[name] / steps).tolist()
            dead = float((self.since_fired[name] > self.dead_after_tokens).float().mean())
            saes[name] = {
                "fvu": fvu,
                "l0": l0,
                "dead_frac": dead,
                "auxk_loss": auxk,
                "lr": self.lrs[name] * lr_factor,
            }
        self.metrics = saes
        first = next(iter(saes.values()))
        record = {
            "step": self.step,
            "tokens": self.tokens,
            "tokens_per_s": (self.tokens - tokens0) / max(now - t0, 1e-9),
            "lr": first["lr"],
            "saes": saes,
        }
        # Several depths: each depth's file gets the record of its own family, named as
        # in a one-depth run; on_log sees them all ("<hookpoint>/<n>-k<k>").
        files = log_file if isinstance(log_file, dict) else {"": log_file}
        for prefix, file in files.items():
            mine = {n[len(prefix) :]: m for n, m in saes.items() if n.startswith(prefix)}
            file.write(json.dumps({**record, "saes": mine}) + "\n")
            file.flush()
        self._reset_log_window()
        if on_log is not None:
            on_log(record)

    def _trim_metrics(self) -> None:
        """On resume, drop records logged after the checkpoint we resume from."""
        for path in self._metrics_paths().values():
            if not path.exists():
                continue
            kept = []
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", math.inf) <= self.step:
                        kept.append(line + "\n")
                except (json.JSONDecodeError, AttributeError):
                    continue  # e.g. a line half-written when the run was killed
            atomic_write(path, lambda tmp, kept=kept: Path(tmp).write_text("".join(kept)))

    def _summary(self, stopped: str) -> dict:
        saes = {}
        for name, sae in self.saes.items():
            folder = self.out_dir / name
            saes[name] = {
                **self.metrics.get(name, {}),
                "n_latents": sae.n_latents,
                "k": sae.k,
                "path": str(folder) if (folder / "sae.safetensors").exists() else None,
            }
        return {
            "steps": self.step,
            "tokens": self.tokens,
            "stopped": stopped,
            "out_dir": str(self.out_dir),
            "saes": saes,
        }
