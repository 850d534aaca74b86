"""The TopK sparse autoencoder of Gao et al. (arXiv 2406.04093).

    z  = TopK(ReLU(W_enc (s·x - b_pre) + b_enc))        s = cfg.input_scale
    x̂  = (W_dec^T z + b_pre) / s

Parameters live in the normalised space (s·x has E||.||^2 = d_in); `encode` takes raw
residual activations and `decode` returns raw ones, so callers never see the scaling.
Decoding is sparse: only the k selected decoder rows are read per token.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .config import SAEConfig
from .kernels import SelectedEncoder, selection_dtype

WEIGHTS_FILE = "sae.safetensors"
CONFIG_FILE = "cfg.json"
AUXK_ALPHA = 1 / 32


class EncoderOutput(NamedTuple):
    top_acts: Tensor  # (N, k) activations of the selected latents, >= 0
    top_indices: Tensor  # (N, k) their indices


class ForwardOutput(NamedTuple):
    x_hat: Tensor  # (N, d) reconstruction, raw units
    top_acts: Tensor  # (N, k)
    top_indices: Tensor  # (N, k)
    fvu: Tensor  # () fraction of variance unexplained, normalised space
    auxk_loss: Tensor  # () AuxK loss (0 when no dead latents are given)
    multi_topk_fvu: Tensor  # () FVU with 4k latents (0 unless multi_topk)


class TopKSAE(nn.Module):
    def __init__(self, cfg: SAEConfig, device: str | torch.device = "cpu", dtype=torch.float32):
        super().__init__()
        self.cfg = cfg
        n, d = cfg.n_latents, cfg.d_in
        # Decoder rows: random unit vectors; encoder = decoder^T (paper §2.2: "tied init").
        w_dec = torch.randn(n, d, device=device, dtype=dtype)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)  # (n, d)
        self.W_enc = nn.Parameter(w_dec.clone())  # (n, d): z = W_enc @ x, stored row-major
        self.b_enc = nn.Parameter(torch.zeros(n, device=device, dtype=dtype))  # (n,)
        self.b_pre = nn.Parameter(torch.zeros(d, device=device, dtype=dtype))  # (d,)
        # dtype for choosing the TopK during training; None: bf16 where that is fast.
        self.selection_dtype: torch.dtype | None = None

    # ------------------------------------------------------------------ properties
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def n_latents(self) -> int:
        return self.cfg.n_latents

    @property
    def k(self) -> int:
        return self.cfg.k

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_dec.dtype

    # ------------------------------------------------------------------ encode / decode
    def normalize(self, x: Tensor) -> Tensor:
        """Raw activations (..., d) -> normalised space, in the SAE's dtype."""
        return x.to(self.dtype) * self.cfg.input_scale

    def pre_acts(self, x: Tensor) -> Tensor:
        """ReLU pre-activations (N, n_latents) for raw input x (N, d)."""
        x_n = self.normalize(x) - self.b_pre  # (N, d)
        return F.relu(F.linear(x_n, self.W_enc, self.b_enc))  # (N, n)

    def select_topk(self, pre_acts: Tensor, k: int | None = None) -> EncoderOutput:
        top_acts, top_indices = pre_acts.topk(k or self.k, dim=-1, sorted=False)
        return EncoderOutput(top_acts, top_indices)

    def encode(self, x: Tensor, k: int | None = None) -> EncoderOutput:
        """Raw x (N, d) -> the k active latents per token."""
        return self.select_topk(self.pre_acts(x), k)

    def encode_dense(self, x: Tensor, k: int | None = None) -> Tensor:
        """Raw x (N, d) -> dense latent activations (N, n_latents), zeros outside the TopK."""
        top_acts, top_indices = self.encode(x, k)
        z = torch.zeros(x.shape[0], self.n_latents, device=x.device, dtype=top_acts.dtype)
        return z.scatter_(1, top_indices, top_acts)

    def decode_normalized(self, top_acts: Tensor, top_indices: Tensor) -> Tensor:
        """Sparse decode in normalised space: sum of k decoder rows per token. (N, d)"""
        # embedding_bag reads only the selected rows: O(N·k·d), never O(N·n·d).
        out = F.embedding_bag(
            top_indices, self.W_dec, per_sample_weights=top_acts.to(self.dtype), mode="sum"
        )
        return out + self.b_pre

    def decode(self, top_acts: Tensor, top_indices: Tensor) -> Tensor:
        """Sparse decode to raw units. (N, d)"""
        return self.decode_normalized(top_acts, top_indices) / self.cfg.input_scale

    def decoder_directions(self, indices: Tensor | list[int]) -> Tensor:
        """Raw-space residual written by one unit of each latent: W_dec[i] / s. (len, d)"""
        idx = torch.as_tensor(indices, device=self.device, dtype=torch.long)
        return self.W_dec[idx] / self.cfg.input_scale

    # ------------------------------------------------------------------ training forward
    def forward(self, x: Tensor, dead_mask: Tensor | None = None, k_aux: int | None = None) -> ForwardOutput:
        """Encode, decode and compute the training losses for raw x (N, d).

        dead_mask (n_latents,) bool marks latents that have not fired for a while; the AuxK
        loss asks the top-k_aux of those to reconstruct the residual error (paper §2.4).
        """
        x_n = self.normalize(x)  # (N, d)
        x_in = x_n - self.b_pre  # (N, d), carries b_pre's gradient
        k = self.k
        kk = min(4 * k, self.n_latents) if self.cfg.multi_topk else k
        with torch.no_grad():
            # Which latents win is decided without autograd (bf16 where the hardware is fast
            # at it); SelectedEncoder then gives gradients to the selected rows only.
            dt = self.selection_dtype or selection_dtype(x.device)
            pre = F.linear(x_in.to(dt), self.W_enc.to(dt), self.b_enc.to(dt))  # (N, n)
            # TopK(ReLU(p)) = ReLU(TopK(p)): apply the ReLU to the kk winners only.
            sel_acts, sel_idx = pre.topk(kk, dim=-1, sorted=kk > k)  # (N, kk)
            sel_acts = sel_acts.clamp_min_(0)
        sel_acts = SelectedEncoder.apply(x_in, self.W_enc, self.b_enc, sel_idx, sel_acts.to(self.dtype))
        top_acts, top_indices = sel_acts[:, :k], sel_idx[:, :k]
        x_hat_n = self.decode_normalized(top_acts, top_indices)  # (N, d)

        err = x_n - x_hat_n  # (N, d)
        # Denominator: variance of x around its batch mean (FVU = normalised MSE).
        total_var = (x_n - x_n.mean(0)).pow(2).sum().clamp_min(1e-12)
        fvu = err.pow(2).sum() / total_var

        zero = fvu.new_zeros(())
        auxk_loss = zero
        if dead_mask is not None:
            num_dead = int(dead_mask.sum())
            if num_dead > 0:
                k_aux = min(k_aux or self.d_in // 2, num_dead)
                # Only dead latents compete; scale down when few are dead (as sparsify does).
                scale = min(num_dead / k_aux, 1.0)
                with torch.no_grad():
                    pre.masked_fill_(~dead_mask, float("-inf"))  # only dead latents compete
                    aux_acts, aux_idx = pre.topk(k_aux, dim=-1, sorted=False)
                    aux_acts = aux_acts.clamp_min_(0)
                aux_acts = SelectedEncoder.apply(x_in, self.W_enc, self.b_enc, aux_idx, aux_acts.to(self.dtype))
                # ê = W_dec · TopK_aux(dead pre-acts), no bias: it models the error e.
                e_hat = F.embedding_bag(aux_idx, self.W_dec, per_sample_weights=aux_acts, mode="sum")
                auxk_loss = scale * (e_hat - err.detach()).pow(2).sum() / total_var

        multi_topk_fvu = zero
        if kk > k:
            x_hat4 = self.decode_normalized(sel_acts, sel_idx)
            multi_topk_fvu = (x_n - x_hat4).pow(2).sum() / total_var

        x_hat = x_hat_n / self.cfg.input_scale
        return ForwardOutput(x_hat, top_acts, top_indices, fvu, auxk_loss, multi_topk_fvu)

    # ------------------------------------------------------------------ constraints
    @torch.no_grad()
    def set_decoder_norm_to_unit(self) -> None:
        self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder(self) -> None:
        """Project out the part of W_dec's gradient that would change row norms."""
        if self.W_dec.grad is None:
            return
        parallel = (self.W_dec.grad * self.W_dec.data).sum(dim=1, keepdim=True)  # (n, 1)
        self.W_dec.grad -= parallel * self.W_dec.data

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, dtype: torch.dtype | None = None) -> None:
        """Write `cfg.json` + `sae.safetensors` into folder `path`, each atomically."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            name: t.detach().to(dtype or t.dtype).contiguous().cpu()
            for name, t in self.state_dict().items()
        }
        atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp))
        atomic_write(folder / CONFIG_FILE, lambda tmp: self.cfg.to_json(tmp))

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = torch.float32
    ) -> TopKSAE:
        """Load a folder written by `save`. Raises ValueError with a one-line reason."""
        folder = Path(path)
        if not folder.is_dir():
            raise ValueError(f"no SAE checkpoint folder at {folder}")
        cfg_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        for needed in (cfg_path, weights_path):
            if not needed.is_file():
                raise ValueError(f"{folder} is not an SAE checkpoint: {needed.name} is missing")
        cfg = SAEConfig.from_json(cfg_path)
        try:
            tensors = load_file(str(weights_path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"corrupt SAE weights {weights_path}: {err}") from None
        expected = {
            "W_enc": (cfg.n_latents, cfg.d_in),
            "W_dec": (cfg.n_latents, cfg.d_in),
            "b_enc": (cfg.n_latents,),
            "b_pre": (cfg.d_in,),
        }
        for name, shape in expected.items():
            if name not in tensors:
                raise ValueError(f"corrupt SAE weights {weights_path}: tensor {name} is missing")
            if tuple(tensors[name].shape) != shape:
                raise ValueError(
                    f"SAE weights {weights_path}: {name} has shape {tuple(tensors[name].shape)}, "
                    f"cfg.json implies {shape}"
                )
        first = next(iter(tensors.values()))
        sae = cls(cfg, device="meta", dtype=dtype or first.dtype)
        sae.load_state_dict(
            {name: t.to(device=device, dtype=dtype or t.dtype) for name, t in tensors.items()},
            assign=True,
        )
        if not all(torch.isfinite(p).all() for p in sae.parameters()):
            raise ValueError(f"SAE weights {weights_path} contain NaN or Inf")
        return sae


def atomic_write(target: Path, write) -> None:
    """Call write(tmp_path) then rename over target, so a crash never leaves half a file."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
