"""Training losses of the baseline architectures the TopK paper compares against.

Every SAE reads and writes in the normalised space of sae/model.py (E‖x‖² = d), and the
reconstruction term is the same FVU as TopK's. What differs:

- relu (Anthropic, "Circuits Updates – April 2024"): z = ReLU(W_enc x_c + b_enc);
  loss = FVU + λ·E_tokens[Σ_i z_i ‖W_dec,i‖] / √d. The decoder rows are free (not held
  at unit norm): the norm inside the penalty is what stops the trivial shrink-the-code
  solution; λ ramps up linearly over the first 5% of steps, as in the recipe. Rows are
  initialised at norm 0.1 with W_enc = W_decᵀ. Saved with norms folded into the encoder.
- jumprelu (Rajamanoharan et al. 2024, arXiv 2407.14435): z = pre·H(pre − θ), loss =
  FVU + λ·E_tokens[L0], with the paper's straight-through estimators: the gradients
  reaching θ through the step use the rectangle kernel K(u) = 1{|u| < ½} of bandwidth ε
  (ε = 0.05 here, in normalised units where pre-activations are O(1)); θ starts at 0.1.
- batchtopk (Bussmann, Leask & Nanda 2024, arXiv 2412.06410): ReLU pre-activations, the
  k·B largest over the whole batch of B tokens kept (so L0 averages k, varying per
  token). At inference a single threshold θ replaces the batch: θ = running mean (EMA,
  0.99) of the smallest activation kept in each batch, and the SAE is saved as a jumprelu
  SAE with θ_i = θ for every latent (as SAELens stores BatchTopK SAEs).

No AuxK for the three baselines (their papers train without it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from sae.archs import sparse_codes
from sae.config import SAEConfig
from sae.model import ForwardOutput, TopKSAE

TRAIN_ARCHS = ("topk", "batchtopk", "relu", "jumprelu")
RELU_INIT_NORM = 0.1
JUMPRELU_EPS = 0.05
JUMPRELU_INIT_THRESHOLD = 0.1
L1_WARMUP_FRACTION = 0.05
THRESHOLD_EMA = 0.99


@dataclass(frozen=True)
class SAESpec:
    """One SAE of a sweep: its training architecture, width and sparsity knob."""

    arch: str
    n_latents: int
    k: int = 0
    """TopK / BatchTopK: active latents per token (BatchTopK: on average)."""
    coeff: float = 0.0
    """relu: the L1 coefficient λ; jumprelu: the L0 coefficient λ."""

    @property
    def name(self) -> str:
        if self.arch == "topk":
            return f"{self.n_latents}-k{self.k}"  # the name TopK runs always had
        if self.arch == "batchtopk":
            return f"batchtopk-{self.n_latents}-k{self.k}"
        knob = "l1" if self.arch == "relu" else "l0"
        return f"{self.arch}-{self.n_latents}-{knob}{self.coeff:g}"

    @property
    def unit_decoder(self) -> bool:
        """Decoder rows held at unit norm during training (all but relu)."""
        return self.arch != "relu"


def make_sae(spec: SAESpec, d_in: int, **cfg_fields) -> TopKSAE:
    """A freshly initialised SAE for `spec` (the architecture it is saved and read as:
    batchtopk is stored as jumprelu)."""
    if spec.arch not in TRAIN_ARCHS:
        raise ValueError(f"unknown arch {spec.arch!r}: use {', '.join(TRAIN_ARCHS)}")
    stored = {"batchtopk": "jumprelu"}.get(spec.arch, spec.arch)
    cfg = SAEConfig(d_in=d_in, n_latents=spec.n_latents, k=spec.k, arch=stored, **cfg_fields)
    if spec.arch != "topk":
        cfg.extra = {"train_arch": spec.arch, "sparsity_coeff": spec.coeff}
    sae = TopKSAE(cfg, device="cpu")
    with torch.no_grad():
        if spec.arch == "relu":
            sae.W_dec.mul_(RELU_INIT_NORM)
            sae.W_enc.copy_(sae.W_dec)
        if spec.arch == "jumprelu":
            sae.threshold.fill_(JUMPRELU_INIT_THRESHOLD)
        if spec.arch == "batchtopk":
            sae.threshold.requires_grad_(False)  # set from the batches, not by gradients
    return sae


class _JumpReLU(torch.autograd.Function):
    """pre·H(pre − θ); ∂/∂pre = H, ∂/∂θ = −θ/ε·K((pre − θ)/ε) (straight-through)."""

    @staticmethod
    def forward(ctx, pre, theta, eps: float):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        near = ((pre - theta).abs() < ctx.eps / 2).to(grad.dtype) / ctx.eps  # (N, n)
        return grad * (pre > theta), -(theta * near * grad).sum(0), None


class _Step(torch.autograd.Function):
    """H(pre − θ); ∂/∂pre = 0, ∂/∂θ = −1/ε·K((pre − θ)/ε) (straight-through)."""

    @staticmethod
    def forward(ctx, pre, theta, eps: float):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        near = ((pre - theta).abs() < ctx.eps / 2).to(grad.dtype) / ctx.eps
        return None, -(near * grad).sum(0), None


def baseline_step(
    sae: TopKSAE, spec: SAESpec, x: Tensor, progress: float
) -> tuple[ForwardOutput, Tensor]:
    """(forward output, loss) of a non-TopK spec on raw x (N, d); progress = step/steps."""
    x_n = sae.normalize(x)  # (N, d)
    pre = torch.nn.functional.linear(x_n - sae.b_pre, sae.W_enc, sae.b_enc)  # (N, n)
    penalty = pre.new_zeros(())
    if spec.arch == "relu":
        z = torch.relu(pre)
        l1 = (z * sae.W_dec.norm(dim=1)).sum(1).mean() / math.sqrt(sae.d_in)
        penalty = spec.coeff * min(1.0, progress / L1_WARMUP_FRACTION) * l1
    elif spec.arch == "jumprelu":
        z = _JumpReLU.apply(pre, sae.threshold, JUMPRELU_EPS)
        penalty = spec.coeff * _Step.apply(pre, sae.threshold, JUMPRELU_EPS).sum(1).mean()
    else:  # batchtopk
        z = batch_topk(torch.relu(pre), spec.k)
        kept = z[z > 0]
        if kept.numel():
            with torch.no_grad():
                low = kept.detach().min()
                theta = sae.threshold
                first = bool(theta.eq(0).all())
                theta.copy_(low if first else THRESHOLD_EMA * theta + (1 - THRESHOLD_EMA) * low)
    x_hat_n = z @ sae.W_dec + sae.b_pre  # (N, d)
    total_var = (x_n - x_n.mean(0)).pow(2).sum().clamp_min(1e-12)
    fvu = (x_n - x_hat_n).pow(2).sum() / total_var
    acts, indices = sparse_codes(z.detach())
    zero = fvu.new_zeros(())
    out = ForwardOutput(x_hat_n.detach() / sae.cfg.input_scale, acts, indices, fvu, zero, zero)
    return out, fvu + penalty


def batch_topk(acts: Tensor, k: int) -> Tensor:
    """Keep the k·N largest entries of acts (N, n) over the whole batch, zero the rest."""
    flat = acts.flatten()
    keep = min(k * acts.shape[0], flat.numel())
    values, idx = flat.topk(keep, sorted=False)
    return torch.zeros_like(flat).scatter(0, idx, values).view_as(acts)


@torch.no_grad()
def after_step(sae: TopKSAE, spec: SAESpec) -> None:
    """Constraints after an optimiser step: thresholds stay non-negative."""
    if spec.arch == "jumprelu":
        sae.threshold.clamp_(min=0.0)
