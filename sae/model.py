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
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .config import SAEConfig
from .kernels import selection_dtype

WEIGHTS_FILE = "sae.safetensors"
CONFIG_FILE = "cfg.json"
AUXK_ALPHA = 1 / 32


# torch warns once per process that CSR tensors are "beta"; they are used here only as
# transient operands of two well-supported products (CSR @ dense, sampled_addmm). Spend
# that one warning here, silenced, instead of in the user's training loop.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.sparse_csr_tensor(
        torch.zeros(2, dtype=torch.long),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0),
        (1, 1),
        check_invariants=False,
    )


# ---------------------------------------------------------------------- sparse kernels
# A TopK SAE touches only k of its n latents per token. The dense parts of a training step
# are the encoder matmul (N, d) x (d, n) (in bf16 where that is fast, sae/kernels.py) and
# the TopK over (N, n); everything else (the decoder, the exact values of the selected
# pre-activations, every backward product) works on the (N, k) selection with sparse CSR
# products, O(N·k·d) instead of O(N·n·d). Measured on 2 CPU cores at N=4096, d=576,
# n=4608, k=32: each backward product ~10 ms, against ~90 ms for a dense one, and ~250 ms
# for the backward of embedding_bag.


def _sparse_ok(t: Tensor) -> bool:
    return t.dtype in (torch.float32, torch.float64) and t.device.type in ("cpu", "cuda")


def _csr_by_token(indices: Tensor, values: Tensor, n_latents: int) -> Tensor:
    """(N, k) selection -> CSR (N, n_latents), one row per token, columns sorted."""
    N, K = indices.shape
    sorted_idx, order = indices.sort(dim=1)
    crow = torch.arange(0, N * K + 1, K, device=indices.device)
    return torch.sparse_csr_tensor(
        crow,
        sorted_idx.reshape(-1),
        values.gather(1, order).reshape(-1),
        (N, n_latents),
        check_invariants=False,
    )


def _csr_by_latent(indices: Tensor, values: Tensor, n_latents: int) -> Tensor:
    """(N, k) selection -> CSR (n_latents, N), one row per latent: the transpose."""
    N, K = indices.shape
    flat = indices.reshape(-1)
    order = flat.argsort(stable=True)  # stable: tokens stay in order within a row
    crow = torch.zeros(n_latents + 1, dtype=torch.long, device=indices.device)
    crow[1:] = torch.bincount(flat, minlength=n_latents).cumsum(0)
    return torch.sparse_csr_tensor(
        crow, order // K, values.reshape(-1)[order], (n_latents, N), check_invariants=False
    )


def _sampled_dot(a: Tensor, W: Tensor, indices: Tensor) -> Tensor:
    """out[t, j] = a[t] · W[idx[t, j]]: (N, d), (n, d), (N, K) -> (N, K), a sampled
    dense-dense product (SDDMM) that never forms the (N, n) matrix."""
    N, K = indices.shape
    sorted_idx, order = indices.sort(dim=1)
    pattern = torch.sparse_csr_tensor(
        torch.arange(0, N * K + 1, K, device=indices.device),
        sorted_idx.reshape(-1),
        a.new_zeros(N * K),
        (N, W.shape[0]),
        check_invariants=False,
    )
    values = torch.sparse.sampled_addmm(pattern, a.contiguous(), W.T).values().view(N, K)
    return torch.empty_like(values).scatter_(1, order, values)


class _SparseDecode(torch.autograd.Function):
    """sum_j acts[t, j] · W[idx[t, j]] for every token t: (N, k), (N, k), (n, d) -> (N, d)."""

    @staticmethod
    def forward(ctx, acts: Tensor, indices: Tensor, W: Tensor) -> Tensor:
        ctx.save_for_backward(acts, indices, W)
        return _csr_by_token(indices, acts, W.shape[0]) @ W

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        acts, indices, W = ctx.saved_tensors
        grad_acts = grad_W = None
        if ctx.needs_input_grad[0]:
            grad_acts = _sampled_dot(grad_out, W, indices)  # grad_out[t] · W[idx[t, j]]
        if ctx.needs_input_grad[2]:
            grad_W = _csr_by_latent(indices, acts.to(grad_out.dtype), W.shape[0]) @ grad_out
        return grad_acts, None, grad_W


def sparse_decode(acts: Tensor, indices: Tensor, W: Tensor) -> Tensor:
    """Sparse decode without the bias: (N, k) acts and indices, W (n, d) -> (N, d)."""
    acts = acts.to(W.dtype)
    if _sparse_ok(W) and acts.shape[-1] > 0:
        return _SparseDecode.apply(acts, indices, W)
    return F.embedding_bag(indices, W, per_sample_weights=acts, mode="sum")


class _TopKEncode(torch.autograd.Function):
    """pre = ReLU(W (x - b_pre) + b); its top-K per token, plus the columns `dead_idx` of
    pre for AuxK. Only the selected (token, latent) pairs and the dead columns carry a
    gradient, so the backward never forms the dense (N, n) gradient."""

    @staticmethod
    def forward(ctx, x, b_pre, W, b, k: int, sort: bool, dead_idx, select_dtype):
        x_c = x - b_pre  # (N, d)
        # ReLU is monotone, so TopK-then-ReLU keeps the same values as ReLU-then-TopK and
        # saves a pass over the (N, n) matrix.
        if select_dtype == x_c.dtype:
            pre = F.linear(x_c, W, b)  # (N, n)
            acts, indices = pre.topk(k, dim=-1, sorted=sort)  # (N, K)
        else:
            # Choose the winners on a bf16 copy (the one dense matmul, ~5x faster with
            # AMX / tensor cores), then compute the winners' values exactly: only near-ties
            # at the k-th place can differ from a full-precision choice.
            pre = F.linear(x_c.to(select_dtype), W.to(select_dtype), b.to(select_dtype))
            indices = pre.topk(k, dim=-1, sorted=sort).indices  # (N, K)
            acts = _sampled_dot(x_c, W, indices) + b[indices]  # (N, K)
            if sort:
                acts, order = acts.sort(dim=-1, descending=True)
                indices = indices.gather(1, order)
        acts = acts.relu_()
        if dead_idx is None:
            dead_idx = indices.new_empty(0)
        # AuxK's dead columns (selection precision: the auxiliary loss needs no more).
        dead_pre = pre.index_select(1, dead_idx).to(x_c.dtype).relu_()  # (N, n_dead)
        ctx.save_for_backward(x_c, W, acts, indices, dead_pre, dead_idx)
        ctx.mark_non_differentiable(indices)
        return acts, indices, dead_pre

    @staticmethod
    def backward(ctx, g_acts, _g_indices, g_dead):
        x_c, W, acts, indices, dead_pre, dead_idx = ctx.saved_tensors
        n = W.shape[0]
        g_acts = g_acts * (acts > 0)  # ReLU' (TopK may keep zeros when < K are positive)
        has_dead = dead_idx.numel() > 0
        if has_dead:
            g_dead = g_dead * (dead_pre > 0)
        # Per-latent gradient sums: the bias gradients follow from them alone.
        g_lat = torch.zeros(n, dtype=g_acts.dtype, device=g_acts.device)
        g_lat.index_add_(0, indices.reshape(-1), g_acts.reshape(-1))
        if has_dead:
            g_lat.index_add_(0, dead_idx, g_dead.sum(0))
        grad_x = grad_b_pre = grad_W = None
        if ctx.needs_input_grad[0]:
            grad_x = _csr_by_token(indices, g_acts, n) @ W
            if has_dead:
                grad_x = grad_x + g_dead @ W[dead_idx]
        if ctx.needs_input_grad[1]:
            grad_b_pre = -(g_lat @ W)  # d/db_pre of sum_t g_t·W(x_t - b_pre)
        if ctx.needs_input_grad[2]:
            grad_W = _csr_by_latent(indices, g_acts, n) @ x_c  # (n, d)
            if has_dead:
                grad_W.index_add_(0, dead_idx, g_dead.T @ x_c)
        grad_b = g_lat if ctx.needs_input_grad[3] else None
        return grad_x, grad_b_pre, grad_W, grad_b, None, None, None, None


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
        x_n = self.normalize(x)  # (N, d)
        dead_idx = None
        if dead_mask is not None:
            dead_idx = dead_mask.nonzero().squeeze(1)  # (n_dead,) host sync: its size
            if dead_idx.numel() == 0:
                dead_idx = None

        k_enc = min(4 * self.k, self.n_latents) if self.cfg.multi_topk else self.k
        if _sparse_ok(x_n):
            select = self.selection_dtype or (
                selection_dtype(x_n.device) if self.dtype == torch.float32 else self.dtype
            )
            acts, indices, dead_pre = _TopKEncode.apply(
                x_n,
                self.b_pre,
                self.W_enc,
                self.b_enc,
                k_enc,
                self.cfg.multi_topk,
                dead_idx,
                select,
            )
        else:  # plain autograd (e.g. bf16 weights): same maths, dense backward
            pre = F.relu(F.linear(x_n - self.b_pre, self.W_enc, self.b_enc))  # (N, n)
            acts, indices = pre.topk(k_enc, dim=-1, sorted=self.cfg.multi_topk)
            dead_pre = pre[:, dead_idx] if dead_idx is not None else None
        top_acts, top_indices = acts[:, : self.k], indices[:, : self.k]  # (N, k)
        x_hat_n = self.decode_normalized(top_acts, top_indices)  # (N, d)

        err = x_n - x_hat_n  # (N, d)
        # Denominator: variance of x around its batch mean (FVU = normalised MSE).
        total_var = (x_n - x_n.mean(0)).pow(2).sum().clamp_min(1e-12)
        fvu = err.pow(2).sum() / total_var

        zero = fvu.new_zeros(())
        auxk_loss = zero
        if dead_idx is not None:
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
            auxk_loss = scale * (e_hat - err.detach()).pow(2).sum() / total_var

        multi_topk_fvu = zero
        if self.cfg.multi_topk:
            x_hat4 = self.decode_normalized(acts, indices)  # (N, d) with 4k latents
            multi_topk_fvu = (x_n - x_hat4).pow(2).sum() / total_var

        x_hat = x_hat_n / self.cfg.input_scale
        return ForwardOutput(x_hat, top_acts, top_indices, fvu, auxk_loss, multi_topk_fvu)

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
        self.b_enc.data *= norms.to(self.b_enc.dtype)

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
