"""The TopK sparse autoencoder of Gao et al. (arXiv 2406.04093), and the other
architectures it can run in place of TopK (cfg.arch: relu, jumprelu, gated; sae/archs.py).

    z  = TopK(ReLU(W_enc (s·x - b_pre) + b_enc))        s = cfg.input_scale
    x̂  = (W_dec^T z + b_pre) / s

Whatever the architecture, `encode` returns sparse codes (acts, indices), each (N, K):
K = k for TopK; for the others the most latents any token of the batch has active, the
rest of each row padded with zero activations. Everything downstream (decode, steering,
readouts, the catalog) reads those codes and works with every architecture.

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

from . import kernels
from .archs import arch_params, elementwise_acts, sparse_codes
from .config import SAEConfig
from .kernels import TopKEncode, selection_dtype, sparse_decode
from .metrics import total_variance

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
        # Architecture parameters (jumprelu: threshold; gated: r_mag, b_mag), each (n,).
        for name, shape in arch_params(cfg.arch, n).items():
            self.register_parameter(
                name, nn.Parameter(torch.zeros(shape, device=device, dtype=dtype))
            )
        # dtype for choosing the TopK during training; None: bf16 where that is fast (AMX
        # CPUs, CUDA) for fp32 SAEs, else the SAE's dtype. Activation values stay exact.
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
    def arch(self) -> str:
        return self.cfg.arch

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
        """ReLU pre-activations (N, n_latents) for raw input x (N, d) (TopK chooses among
        them; for the other architectures see `activations`)."""
        x_n = self.normalize(x) - self.b_pre  # (N, d)
        return F.relu(F.linear(x_n, self.W_enc, self.b_enc))  # (N, n)

    def select_topk(self, pre_acts: Tensor, k: int | None = None) -> EncoderOutput:
        top_acts, top_indices = pre_acts.topk(k or self.k, dim=-1, sorted=False)
        return EncoderOutput(top_acts, top_indices)

    def encode(self, x: Tensor, k: int | None = None) -> EncoderOutput:
        """Raw x (N, d) -> the active latents per token, (N, K) acts and indices: K = k for
        TopK; for other archs every active latent, zero-padded (k, if given, caps K)."""
        if self.arch == "topk":
            return self.select_topk(self.pre_acts(x), k)
        return EncoderOutput(*sparse_codes(self.activations(x), k))

    def encode_dense(self, x: Tensor, k: int | None = None) -> Tensor:
        """Raw x (N, d) -> dense latent activations (N, n_latents), zeros where inactive."""
        if self.arch != "topk" and k is None:
            return self.activations(x)
        top_acts, top_indices = self.encode(x, k)
        z = torch.zeros(x.shape[0], self.n_latents, device=x.device, dtype=top_acts.dtype)
        return z.scatter_(1, top_indices, top_acts)

    @property
    def is_elementwise(self) -> bool:
        """True when a latent's activation depends on its own encoder row only (every
        arch but TopK), so `activations(x, latents)` costs len(latents) rows."""
        return self.arch != "topk"

    def activations(self, x: Tensor, latents: Tensor | list[int] | None = None) -> Tensor:
        """Dense activations of raw x (N, d): (N, n_latents), or (N, m) for m `latents`."""
        if not self.is_elementwise:
            z = self.encode_dense(x)  # (N, n): TopK membership needs every latent
            return z if latents is None else z[:, torch.as_tensor(latents, device=z.device)]
        x_c = self.normalize(x) - self.b_pre  # (N, d)
        params = {name: getattr(self, name) for name in arch_params(self.arch, self.n_latents)}
        W, b = self.W_enc, self.b_enc
        if latents is not None:
            idx = torch.as_tensor(latents, device=self.device, dtype=torch.long)
            W, b = W[idx], b[idx]
            params = {name: p[idx] for name, p in params.items()}
        return elementwise_acts(self.arch, x_c, W, b, params)

    def decode_normalized(self, top_acts: Tensor, top_indices: Tensor) -> Tensor:
        """Sparse decode in normalised space: sum of k decoder rows per token. (N, d)"""
        # Reads only the selected rows: O(N·k·d), never O(N·n·d).
        return sparse_decode(top_acts, top_indices, self.W_dec) + self.b_pre

    def decode(self, top_acts: Tensor, top_indices: Tensor) -> Tensor:
        """Sparse decode to raw units. (N, d)"""
        return self.decode_normalized(top_acts, top_indices) / self.cfg.input_scale

    def decoder_directions(self, indices: Tensor | list[int]) -> Tensor:
        """Raw-space residual written by one unit of each latent: W_dec[i] / s. (len, d)"""
        idx = torch.as_tensor(indices, device=self.device, dtype=torch.long)
        return self.W_dec[idx] / self.cfg.input_scale

    # ------------------------------------------------------------------ training forward
    def forward(
        self, x: Tensor, dead_mask: Tensor | None = None, k_aux: int | None = None
    ) -> ForwardOutput:
        """Encode, decode and compute the training losses for raw x (N, d).

        dead_mask (n_latents,) bool marks latents that have not fired for a while; the AuxK
        loss asks the top-k_aux of those (default d_in // 2) to reconstruct the residual
        error (paper §2.4 / App. B.1). All losses are normalised by the batch variance.
        """
        if self.is_elementwise:
            return self._forward_elementwise(x)
        x_n = self.normalize(x)  # (N, d)
        dead_idx = None
        if dead_mask is not None:
            dead_idx = dead_mask.nonzero().squeeze(1)  # (n_dead,) host sync: its size
            if dead_idx.numel() == 0:
                dead_idx = None

        k_enc = min(4 * self.k, self.n_latents) if self.cfg.multi_topk else self.k
        acts, indices, dead_pre = self._train_encode(x_n, k_enc, dead_idx)
        top_acts, top_indices = acts[:, : self.k], indices[:, : self.k]  # (N, k)
        x_hat_n = self.decode_normalized(top_acts, top_indices)  # (N, d)

        err = x_n - x_hat_n  # (N, d)
        # Denominator: variance of x around its batch mean (FVU = normalised MSE).
        total_var = total_variance(x_n)
        fvu = err.pow(2).sum() / total_var

        zero = fvu.new_zeros(())
        auxk_loss = zero
        if dead_idx is not None:
            auxk_loss = self._auxk_loss(err, dead_idx, dead_pre, k_aux, total_var)

        multi_topk_fvu = zero
        if self.cfg.multi_topk:
            x_hat4 = self.decode_normalized(acts, indices)  # (N, d) with 4k latents
            multi_topk_fvu = (x_n - x_hat4).pow(2).sum() / total_var

        x_hat = x_hat_n / self.cfg.input_scale
        return ForwardOutput(x_hat, top_acts, top_indices, fvu, auxk_loss, multi_topk_fvu)

    def _train_encode(self, x_n: Tensor, k_enc: int, dead_idx: Tensor | None):
        """Top-k_enc codes of normalised x_n (N, d) for training: (acts, indices) (N, k_enc)
        and the dead latents' pre-activations (N, n_dead) for AuxK (None without)."""
        if kernels.sparse_ok(x_n):
            select = self.selection_dtype or (
                selection_dtype(x_n.device) if self.dtype == torch.float32 else self.dtype
            )
            return TopKEncode.apply(
                x_n,
                self.b_pre,
                self.W_enc,
                self.b_enc,
                k_enc,
                self.cfg.multi_topk,
                dead_idx,
                select,
            )
        # plain autograd (e.g. bf16 weights): same maths, dense backward
        pre = F.relu(F.linear(x_n - self.b_pre, self.W_enc, self.b_enc))  # (N, n)
        acts, indices = pre.topk(k_enc, dim=-1, sorted=self.cfg.multi_topk)
        dead_pre = pre[:, dead_idx] if dead_idx is not None else None
        return acts, indices, dead_pre

    def _auxk_loss(
        self, err: Tensor, dead_idx: Tensor, dead_pre: Tensor, k_aux: int | None, total_var
    ) -> Tensor:
        """AuxK: the top-k_aux dead latents reconstruct the residual error err (N, d)."""
        num_dead = dead_idx.numel()
        k_aux = k_aux or self.d_in // 2
        # Fewer dead latents than k_aux: all of them take part, loss scaled down.
        scale = min(num_dead / k_aux, 1.0)
        if k_aux < num_dead:
            aux_vals, aux_j = dead_pre.topk(k_aux, dim=-1, sorted=False)
            dead_pre = torch.zeros_like(dead_pre).scatter(1, aux_j, aux_vals)
        # Dense over the dead sub-dictionary only: (N, n_dead) @ (n_dead, d). No bias:
        # it models the error of the live latents.
        e_hat = dead_pre @ self.W_dec[dead_idx]
        return scale * (e_hat - err.detach()).pow(2).sum() / total_var

    def _forward_elementwise(self, x: Tensor) -> ForwardOutput:
        """Reconstruction and FVU for the non-TopK archs, dense (N, n) codes; their own
        training losses (L1, L0 with straight-through thresholds) are the trainer's."""
        x_n = self.normalize(x)  # (N, d)
        z = self.activations(x)  # (N, n)
        x_hat_n = z @ self.W_dec + self.b_pre  # (N, d)
        total_var = total_variance(x_n)
        fvu = (x_n - x_hat_n).pow(2).sum() / total_var
        top_acts, top_indices = sparse_codes(z)
        zero = fvu.new_zeros(())
        return ForwardOutput(x_hat_n / self.cfg.input_scale, top_acts, top_indices, fvu, zero, zero)

    # ------------------------------------------------------------------ constraints
    @torch.no_grad()
    def set_decoder_norm_to_unit(self) -> None:
        self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def fold_decoder_norms(self) -> None:
        """Make decoder rows unit norm, moving each row's norm r into the encoder (W_enc row
        and b_enc times r): every latent's contribution r·a · W_dec/r is unchanged; only the
        TopK ranking between latents shifts. For weights that drifted off the unit sphere
        (schedule-free averaging), so latent activations stay comparable for steering."""
        norms = self.W_dec.data.norm(dim=1).clamp_min(1e-8)  # (n,)
        self.W_dec.data /= norms[:, None]
        self.W_enc.data *= norms[:, None].to(self.W_enc.dtype)
        # Every bias and threshold on the pre-activation's scale moves with it (gated:
        # the gate's sign is unchanged; r_mag multiplies W_enc x and needs nothing).
        for name in ("b_enc", "threshold", "b_mag"):
            if hasattr(self, name):
                getattr(self, name).data *= norms.to(self.b_enc.dtype)

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
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = torch.float32,
    ) -> TopKSAE:
        """Load a folder written by `save`; `DIR@m` loads level m of a Matryoshka SAE in DIR
        as an SAE of its own. Raises ValueError with a one-line reason."""
        from .matryoshka import prefix_sae, split_prefix  # late: it imports this module

        folder, prefix = split_prefix(path)
        if prefix is not None:
            return prefix_sae(cls.load(folder, device=device, dtype=dtype), prefix)
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
            **arch_params(cfg.arch, cfg.n_latents),
        }
        for name, shape in expected.items():
            if name not in tensors:
                raise ValueError(f"corrupt SAE weights {weights_path}: tensor {name} is missing")
            if tuple(tensors[name].shape) != shape:
                raise ValueError(
                    f"SAE weights {weights_path}: {name} has shape {tuple(tensors[name].shape)}, "
                    f"cfg.json implies {shape}"
                )
        unknown = sorted(tensors.keys() - expected.keys())
        if unknown:
            raise ValueError(
                f"SAE weights {weights_path} hold {', '.join(unknown)}, which arch "
                f"{cfg.arch!r} does not have (is cfg.json's arch right?)"
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
    """Call write(tmp_path) then rename over target, so a crash never leaves half a file.
    The file gets the mode any new file would (0666 less the umask), not mkstemp's 0600,
    so a checkpoint in a shared folder is readable by whoever may read the folder."""
    target = Path(target)
    if target.is_dir():
        raise ValueError(f"cannot write {target}: it is a directory")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
