"""The trainer's files on disk besides its metrics: the training state it resumes from
(train_state/, sae/state.py) and the SAE checkpoints (`<n>-k<k>/`, TopKSAE.save). A mixin
of Trainer (sae/train/trainer.py)."""

from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import asdict

import torch
from torch import Tensor

from sae.state import load_state, pack, save_state, unpack

STATE_DIR = "train_state"


class CheckpointsMixin:
    """Saving and resuming for Trainer: needs its saes, specs, optimizers, since_fired,
    metrics, cfg, out_dir, step, tokens, lrs and provenance."""

    def _save(self, pending: list[Tensor], source) -> None:
        tensors: dict[str, Tensor] = {}
        for name, sae in self.saes.items():
            for pname, p in sae.state_dict().items():
                tensors[f"sae/{name}/{pname}"] = p.detach().cpu().clone()
            tensors[f"since_fired/{name}"] = self.since_fired[name].cpu().clone()
        optim = {
            name: pack(opt.state_dict(), tensors, f"optim/{name}")
            for name, opt in self.optimizers.items()
        }
        rng = {"torch": pack(torch.get_rng_state(), tensors, "rng/torch")}
        if self.device.type == "cuda":
            rng["cuda"] = pack(torch.cuda.get_rng_state(self.device), tensors, "rng/cuda")
        if pending:
            tensors["pending"] = torch.cat([p.cpu() for p in pending])
        source_state = None
        if hasattr(source, "state_dict"):
            source_state = pack(source.state_dict(), tensors, "source")
        meta = {
            "step": self.step,
            "tokens": self.tokens,
            "d_in": self.d_in,
            "saes": list(self.saes),
            "multi_topk": self.cfg.multi_topk,
            "input_scale": {name: sae.cfg.input_scale for name, sae in self.saes.items()},
            "train_config": asdict(self.cfg),
            "optim": optim,
            "rng": rng,
            "source": source_state,
            "metrics": self.metrics,
        }
        save_state(self.out_dir / STATE_DIR, meta, tensors)
        with contextlib.ExitStack() as averaged:
            # Checkpoints hold schedule-free's average x; training goes on from y unchanged.
            for name, opt in self.optimizers.items():
                if hasattr(opt, "average_weights"):
                    averaged.enter_context(opt.average_weights())
                    self.saes[name].fold_decoder_norms()
            self._save_checkpoints()

    def _save_checkpoints(self) -> None:
        for name, sae in self.saes.items():
            sae.cfg.extra = {
                **self.provenance,
                "tokens": self.tokens,
                "steps": self.step,
                "lr": self.lrs[name],
                "dead_after_tokens": self.dead_after_tokens,
                "k_aux": self.k_aux,
                "train_config": asdict(self.cfg),
                "metrics": self.metrics.get(name, {}),
            }
            spec = self.specs[name]
            if spec.arch != "topk":
                sae.cfg.extra.update(train_arch=spec.arch, sparsity_coeff=spec.coeff)
            if not spec.unit_decoder:
                # Free decoder rows (relu): save with unit rows, norms moved into the
                # encoder (the same function); training goes on from the unfolded weights.
                sae = copy.deepcopy(sae)
                sae.fold_decoder_norms()
            sae.save(self.out_dir / name)

    def _use_average_weights(self) -> None:
        """Schedule-free optimizers: leave the parameters at the average x (end of training)."""
        for name, opt in self.optimizers.items():
            if hasattr(opt, "average_weights") and opt.train_mode:
                opt.eval()
                self.saes[name].fold_decoder_norms()

    def _load_state(self, source) -> Tensor | None:
        folder = self.out_dir / STATE_DIR
        meta, tensors = load_state(folder)
        saved_optimizer = meta.get("train_config", {}).get("optimizer", "adam")
        if saved_optimizer != self.cfg.optimizer:
            raise ValueError(
                f"cannot resume from {folder}: it was trained with optimizer={saved_optimizer}, "
                f"this run has optimizer={self.cfg.optimizer}"
            )
        theirs_levels = meta.get("train_config", {}).get("matryoshka", [])
        if theirs_levels != self.cfg.matryoshka:
            raise ValueError(
                f"cannot resume from {folder}: it was trained with matryoshka levels "
                f"{theirs_levels or 'none'}, this run has {self.cfg.matryoshka or 'none'}"
            )
        mine = {"d_in": self.d_in, "saes": list(self.saes), "multi_topk": self.cfg.multi_topk}
        theirs = {key: meta.get(key) for key in mine}
        if theirs != mine:
            raise ValueError(
                f"cannot resume from {folder}: it was trained with d_in={theirs['d_in']}, "
                f"SAEs {theirs['saes']}, multi_topk={theirs['multi_topk']}; this run has "
                f"d_in={self.d_in}, SAEs {mine['saes']}, multi_topk={self.cfg.multi_topk}"
            )
        try:
            for name, sae in self.saes.items():
                params = {p: tensors[f"sae/{name}/{p}"] for p in sae.state_dict()}
                sae.load_state_dict(params)
                sae.cfg.input_scale = float(meta["input_scale"][name])
                self.optimizers[name].load_state_dict(unpack(meta["optim"][name], tensors))
                self.since_fired[name] = tensors[f"since_fired/{name}"].to(self.device, torch.long)
            torch.set_rng_state(unpack(meta["rng"]["torch"], tensors))
            if self.device.type == "cuda" and "cuda" in meta["rng"]:
                torch.cuda.set_rng_state(unpack(meta["rng"]["cuda"], tensors), self.device)
            self.step, self.tokens = int(meta["step"]), int(meta["tokens"])
            self.metrics = {name: dict(meta.get("metrics", {}).get(name, {})) for name in self.saes}
        except (KeyError, TypeError, RuntimeError, ValueError) as err:
            raise ValueError(
                f"corrupt training state {folder}: {type(err).__name__}: {err}"
            ) from None
        for name, sae in self.saes.items():
            if not all(torch.isfinite(p).all() for p in sae.parameters()):
                raise ValueError(f"corrupt training state {folder}: {name} has NaN or Inf weights")
        if meta.get("source") is not None:
            if hasattr(source, "load_state_dict"):
                source.load_state_dict(unpack(meta["source"], tensors))
            else:
                warnings.warn(
                    "the training state holds a data position but this source has no "
                    "load_state_dict(): resuming from the start of the source",
                    stacklevel=4,  # the caller of fit()
                )
        self.initialized = True
        return tensors.get("pending")
