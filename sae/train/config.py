"""The settings of one training run (TrainConfig): the SAE family, the batch, the
optimiser and its schedule, the sparsity recipe. sae/train/trainer.py trains by it; the
field docstrings are the `steer train` flags' help (steer/cli/train.py reads them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sae.matryoshka import check_levels

OPTIMIZERS = ("adam", "signum")


@dataclass
class TrainConfig:
    widths: list[int]
    """Number of latents of each SAE in the family; every (width, k) pair is trained, all
    on the same batches."""

    ks: list[int] = field(default_factory=lambda: [32])
    """Active latents per token (TopK); every (width, k) pair is trained."""

    batch_tokens: int = 4096
    """Activations (tokens) per optimizer step; the stream is re-chunked to this size."""

    total_tokens: int = 10_000_000
    """Total training tokens; steps = total tokens // batch tokens."""

    lr: float | None = None
    """Learning rate (default, per SAE: 2e-4 / sqrt(n_latents / 2^14) with adam, the
    paper's scaling; 2.5e-3 / sqrt(n_latents / 2^14) with signum)."""

    optimizer: str = "adam"
    """adam: the paper's recipe (warmup, decay over the last 20%). signum: schedule-free
    SignSGD as in sparsify; warmup, no decay, faster on short runs."""

    warmup_steps: int = 100
    """Steps of linear learning-rate warmup from 0."""

    decay_fraction: float = 0.2
    """Fraction of the steps, at the end, over which the learning rate decays linearly to 0
    (Adam only: schedule-free averaging takes the place of the decay)."""

    grad_clip: float = 1.0
    """Clip each SAE's gradient to this global norm (0: no clipping)."""

    auxk_alpha: float = 1 / 32
    """Weight of the AuxK loss that revives dead latents (paper: 1/32; 0 disables it)."""

    k_aux: int | None = None
    """Dead latents used by the AuxK loss per token; None: d_in // 2 (paper)."""

    dead_after_tokens: int | None = None
    """A latent is dead after this many tokens without firing; None: min(10M, total_tokens // 10),
    at least one batch (the paper's 10M, scaled down for short runs)."""

    multi_topk: bool = False
    """Multi-TopK loss L(k) + L(4k)/8, so k can be raised at inference."""

    matryoshka: list[int] = field(default_factory=list)
    """Train one Matryoshka SAE with these nested levels (the last is its width): the first
    m latents form an SAE of their own for each level m; loss = mean FVU of each prefix
    alone (sae/matryoshka.py)."""

    archs: list[str] = field(default_factory=lambda: ["topk"])
    """Architectures to train side by side (sae/train/baselines.py): topk, batchtopk (k from
    `ks`), relu (one SAE per `l1_coeffs`), jumprelu (one per `l0_coeffs`), each at every width."""

    l1_coeffs: list[float] = field(default_factory=lambda: [1.0])
    """relu: L1 sparsity coefficients λ (loss = FVU + λ·E[Σ z_i‖W_dec,i‖]/√d)."""

    l0_coeffs: list[float] = field(default_factory=lambda: [1e-3])
    """jumprelu: L0 sparsity coefficients λ (loss = FVU + λ·E[L0])."""

    save_every_steps: int = 500
    """Save checkpoints and training state every this many steps."""

    log_every_steps: int = 10
    """Log metrics (metrics.jsonl, progress callback) every this many steps."""

    seed: int = 0
    """Seed of the SAE initialisation."""

    device: str = "cpu"
    """Device the SAEs train on (cpu, cuda, cuda:1, ...)."""

    geomedian_tokens: int = 32768
    """Tokens from the start of the stream used to set the input scale and b_pre (geometric median)."""

    def __post_init__(self) -> None:
        self.widths = [int(w) for w in self.widths]
        self.ks = [int(k) for k in self.ks]
        if not self.widths or min(self.widths) <= 0:
            raise ValueError(f"widths must be positive numbers of latents, got {self.widths}")
        if not self.ks or min(self.ks) <= 0:
            raise ValueError(f"ks must be positive, got {self.ks}")
        if len(set(self.widths)) != len(self.widths) or len(set(self.ks)) != len(self.ks):
            raise ValueError(
                f"widths and ks must not repeat, got widths {self.widths}, ks {self.ks}"
            )
        if max(self.ks) > min(self.widths):
            raise ValueError(
                f"k={max(self.ks)} is larger than width {min(self.widths)}: every SAE needs k <= its number of latents"
            )
        if self.multi_topk and 4 * max(self.ks) > min(self.widths):
            raise ValueError(
                f"multi_topk trains with 4k={4 * max(self.ks)} latents, more than width "
                f"{min(self.widths)}: use a smaller k or a wider SAE"
            )
        for name in (
            "batch_tokens",
            "total_tokens",
            "save_every_steps",
            "log_every_steps",
            "geomedian_tokens",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.decay_fraction <= 1.0:
            raise ValueError(f"decay_fraction must be in [0, 1], got {self.decay_fraction}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.warmup_steps < 0 or self.grad_clip < 0 or self.auxk_alpha < 0:
            raise ValueError("warmup_steps, grad_clip and auxk_alpha must be >= 0")
        if self.k_aux is not None and self.k_aux <= 0:
            raise ValueError(f"k_aux must be positive, got {self.k_aux}")
        if self.matryoshka:
            self._check_matryoshka()
        self._check_archs()
        if self.dead_after_tokens is not None and self.dead_after_tokens <= 0:
            raise ValueError(f"dead_after_tokens must be positive, got {self.dead_after_tokens}")

    def _check_archs(self) -> None:
        from sae.train.baselines import TRAIN_ARCHS

        self.archs = list(self.archs)
        bad = [a for a in self.archs if a not in TRAIN_ARCHS]
        if bad or not self.archs or len(set(self.archs)) != len(self.archs):
            raise ValueError(
                f"archs must be distinct, from {', '.join(TRAIN_ARCHS)}; got {self.archs}"
            )
        if (self.multi_topk or self.matryoshka) and self.archs != ["topk"]:
            raise ValueError("multi_topk and matryoshka train arch topk only")
        for name in ("l1_coeffs", "l0_coeffs"):
            values = [float(v) for v in getattr(self, name)]
            if not values or min(values) <= 0 or len(set(values)) != len(values):
                raise ValueError(f"{name} must be distinct positive numbers, got {values}")
            setattr(self, name, values)

    def specs(self) -> list:
        """Every SAE of the sweep (sae.train.baselines.SAESpec), in training order."""
        from sae.train.baselines import SAESpec

        out = []
        for arch in self.archs:
            for n in self.widths:
                if arch in ("topk", "batchtopk"):
                    out += [SAESpec(arch, n, k=k) for k in self.ks]
                else:
                    coeffs = self.l1_coeffs if arch == "relu" else self.l0_coeffs
                    out += [SAESpec(arch, n, coeff=c) for c in coeffs]
        return out

    def _check_matryoshka(self) -> None:
        if len(self.widths) != 1 or len(self.ks) != 1 or self.multi_topk:
            raise ValueError("a Matryoshka SAE trains alone: one width, one k, no multi_topk")
        self.matryoshka = check_levels(self.matryoshka, self.widths[0], self.ks[0])

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> its docstring (for CLI help). Read from this module's source."""
        import ast
        import inspect
        import textwrap

        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        body = tree.body[0].body
        out = {}
        for node, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                out[node.target.id] = " ".join(nxt.value.value.split())
        return out
