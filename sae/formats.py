"""Read and write SAEs in the two common on-disk formats, besides our native one.

native    cfg.json {d_in, n_latents, k, input_scale, ...} + sae.safetensors {W_enc (n,d),
          b_enc (n), W_dec (n,d), b_pre (d)}                       (TopKSAE.save / load)
sparsify  EleutherAI sparsify: cfg.json {expansion_factor, normalize_decoder, num_latents,
          k, multi_topk, d_in, ...} + sae.safetensors {encoder.weight (n,d), encoder.bias (n),
          W_dec (n,d), b_dec (d)}; z = TopK(ReLU(enc(x - b_dec))), x̂ = zᵀW_dec + b_dec
saelens   SAELens (>= 6): cfg.json {architecture, d_in, d_sae, k (topk),
          apply_b_dec_to_input, normalize_activations, metadata{model_name, hook_name, ...}}
          + sae_weights.safetensors {W_enc (d,n), b_enc (n), W_dec (n,d), b_dec (d)}, plus
          threshold (n) for jumprelu, and for gated b_gate (n) in place of b_enc, r_mag (n),
          b_mag (n). Architectures: topk, standard (ReLU), jumprelu (Gemma Scope; SAELens
          also saves BatchTopK and Matryoshka SAEs this way), gated: see sae/archs.py.

Our parameters live in a space scaled by s = cfg.input_scale. Exporting folds s away:
since ReLU and TopK commute with multiplying by s > 0,
    TopK(ReLU(W_enc(s·x − b_pre) + b_enc)) = s · TopK(ReLU(W_enc(x − b_pre/s) + b_enc/s)),
so the exported SAE has W_enc, W_dec unchanged, encoder bias b_enc/s, decoder bias b_pre/s
(and threshold/s, b_mag/s: every quantity on the pre-activation's scale): the same
reconstruction, with latents in raw units (ours divided by s). Importing gives an SAE with
input_scale = 1. `load_sae` opens any of the three formats: use it wherever a user names an
SAE folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from .archs import arch_params
from .config import SAEConfig
from .matryoshka import prefix_path, split_prefix
from .model import CONFIG_FILE, WEIGHTS_FILE, TopKSAE, atomic_write

FORMATS = ("native", "sparsify", "saelens")
# SAELens architecture name <-> ours
_FROM_SAELENS_ARCH = {"topk": "topk", "standard": "relu", "jumprelu": "jumprelu", "gated": "gated"}
_TO_SAELENS_ARCH = {ours: theirs for theirs, ours in _FROM_SAELENS_ARCH.items()}
SAELENS_WEIGHTS_FILE = "sae_weights.safetensors"
SAELENS_FORMAT_VERSION = "6.0.0"  # the cfg layout written below is SAELens 6's


# ---------------------------------------------------------------------- hook names
def _to_saelens_hook(hookpoint: str) -> str:
    """resid_post.8 -> blocks.8.hook_resid_post (TransformerLens naming, used by SAELens)."""
    kind, _, layer = hookpoint.partition(".")
    if kind == "resid_post" and layer.isdigit():
        return f"blocks.{layer}.hook_resid_post"
    return hookpoint


def _from_saelens_hook(hook_name: str) -> str:
    parts = hook_name.split(".")
    if (
        len(parts) == 3
        and parts[0] == "blocks"
        and parts[1].isdigit()
        and parts[2] == "hook_resid_post"
    ):
        return f"resid_post.{parts[1]}"
    return hook_name


# ---------------------------------------------------------------------- export
@torch.no_grad()
def folded_tensors(sae: TopKSAE) -> dict[str, Tensor]:
    """W_enc (n,d), b_enc (n), W_dec (n,d), b_dec (d) and the arch's own parameters, with
    the input scale folded in."""
    s = sae.cfg.input_scale
    out = {
        "W_enc": sae.W_enc.detach().clone(),
        "b_enc": sae.b_enc.detach() / s,
        "W_dec": sae.W_dec.detach().clone(),
        "b_dec": sae.b_pre.detach() / s,
    }
    for name in arch_params(sae.arch, sae.n_latents):
        value = getattr(sae, name).detach()
        out[name] = value.clone() if name == "r_mag" else value / s  # r_mag is a log-ratio
    return out


def export_sae(
    sae: TopKSAE,
    folder: str | Path,
    fmt: str = "sparsify",
    dtype: torch.dtype | None = None,
    model_name: str | None = None,
) -> Path:
    """Write `sae` into `folder` in format fmt ("native", "sparsify" or "saelens").

    model_name: what SAELens's metadata.model_name says (default cfg.model_name); pass the
    Hugging Face id where cfg.model_name is a local alias."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"cannot export to {folder}: it is a file, not a folder")
    if fmt == "native":
        sae.save(folder, dtype=dtype)
        return folder
    if fmt not in FORMATS:
        raise ValueError(f"unknown SAE format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "sparsify" and sae.arch != "topk":
        raise ValueError(f"sparsify has no {sae.arch} SAEs: export this one as saelens or native")
    t = {name: v.to(dtype or v.dtype).contiguous().cpu() for name, v in folded_tensors(sae).items()}
    if fmt == "sparsify":
        tensors, cfg, weights_file = *_as_sparsify(sae, t), WEIGHTS_FILE
    else:
        tensors, cfg, weights_file = *_as_saelens(sae, t, model_name), SAELENS_WEIGHTS_FILE
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / weights_file, lambda tmp: save_file(tensors, tmp))
    atomic_write(
        folder / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(cfg, indent=2) + "\n")
    )
    return folder


def _as_sparsify(sae: TopKSAE, t: dict) -> tuple[dict, dict]:
    """(tensors, cfg.json) of an EleutherAI sparsify checkpoint from the folded tensors t."""
    tensors = {
        "encoder.weight": t["W_enc"],
        "encoder.bias": t["b_enc"],
        "W_dec": t["W_dec"],
        "b_dec": t["b_dec"],
    }
    cfg = {
        "activation": "topk",
        "expansion_factor": max(1, sae.n_latents // sae.d_in),
        "normalize_decoder": True,
        "num_latents": sae.n_latents,  # sparsify uses it when nonzero; expansion_factor is informative
        "k": sae.k,
        "multi_topk": sae.cfg.multi_topk,
        "skip_connection": False,
        "transcode": False,
        "d_in": sae.d_in,
    }
    return tensors, cfg


def _as_saelens(sae: TopKSAE, t: dict, model_name: str | None) -> tuple[dict, dict]:
    """(tensors, cfg.json) of a SAELens checkpoint from the folded tensors t."""
    tensors = {**t, "W_enc": t["W_enc"].T.contiguous()}
    if sae.arch == "gated":
        tensors["b_gate"] = tensors.pop("b_enc")
    dtype_name = str(tensors["W_dec"].dtype).removeprefix("torch.")
    cfg = {
        "architecture": _TO_SAELENS_ARCH[sae.arch],
        "d_in": sae.d_in,
        "d_sae": sae.n_latents,
        **({"k": sae.k} if sae.arch == "topk" else {}),
        "dtype": dtype_name,
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "rescale_acts_by_decoder_norm": False,
        "metadata": {
            "sae_lens_version": SAELENS_FORMAT_VERSION,
            "sae_lens_training_version": SAELENS_FORMAT_VERSION,
            "model_name": model_name or sae.cfg.model_name or None,
            "hook_name": _to_saelens_hook(sae.cfg.hookpoint) if sae.cfg.hookpoint else None,
            "hook_head_index": None,
            "prepend_bos": True,
            "exported_by": "steer sae.formats",
        },
    }
    return tensors, cfg


# ---------------------------------------------------------------------- import
def detect_format(folder: str | Path) -> str:
    """ "native", "sparsify" or "saelens" for an SAE folder; ValueError for anything else."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"no SAE checkpoint folder at {folder}")
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        subs = sorted(p.name for p in folder.iterdir() if (p / CONFIG_FILE).is_file())
        hint = f"; it holds SAE folders {', '.join(subs)}: pass one of them" if subs else ""
        raise ValueError(f"{folder} is not an SAE folder: {CONFIG_FILE} is missing{hint}")
    cfg = _read_json(cfg_path)
    if (folder / SAELENS_WEIGHTS_FILE).is_file() and "d_sae" in cfg:
        return "saelens"
    if (folder / WEIGHTS_FILE).is_file():
        if "n_latents" in cfg:
            return "native"
        if "num_latents" in cfg or "expansion_factor" in cfg:
            return "sparsify"
        keys = _tensor_names(folder / WEIGHTS_FILE)
        if "encoder.weight" in keys:
            return "sparsify"
        if "W_enc" in keys and "b_pre" in keys:
            return "native"
    raise ValueError(
        f"{folder} is not an SAE in a known format (native, EleutherAI sparsify, SAELens): "
        f"expected {CONFIG_FILE} with {WEIGHTS_FILE} or {SAELENS_WEIGHTS_FILE}"
    )


def load_sae(
    folder: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = torch.float32,
) -> TopKSAE:
    """Open an SAE folder in any known format (autodetected): native, sparsify or SAELens,
    any architecture. The one function to open an SAE a user names; ValueError (one line)
    when the folder is not one. `DIR@m`: level m of a (native) Matryoshka SAE."""
    folder, prefix = split_prefix(folder)
    fmt = detect_format(folder)
    if fmt == "native" or prefix is not None:
        folder = prefix_path(folder, prefix) if prefix is not None else folder
        return TopKSAE.load(folder, device=device, dtype=dtype)
    cfg = _read_json(folder / CONFIG_FILE)
    arch = "topk"
    if fmt == "sparsify":
        d, n, k, multi, t = _read_sparsify(folder, cfg)
        hookpoint, model_name = "", ""
    else:
        d, n, k, arch, t, hookpoint, model_name = _read_saelens(folder, cfg)
        multi = False
    sae_cfg = SAEConfig(
        d_in=d,
        n_latents=n,
        k=k,
        multi_topk=multi,
        input_scale=1.0,
        hookpoint=hookpoint,
        model_name=model_name,
        extra={"imported_from": fmt, "source": str(folder.resolve())},
        arch=arch,
    )
    sae = TopKSAE(sae_cfg, device="meta", dtype=dtype or t["W_dec"].dtype)
    state = dict(t)
    state["b_pre"] = state.pop("b_dec")
    sae.load_state_dict(
        {
            name: v.to(device=device, dtype=dtype or v.dtype).contiguous()
            for name, v in state.items()
        },
        assign=True,
    )
    if not all(torch.isfinite(p).all() for p in sae.parameters()):
        raise ValueError(f"SAE weights in {folder} contain NaN or Inf")
    return sae


import_sae = load_sae  # the name it had before it opened every architecture


def _read_sparsify(folder: Path, cfg: dict):
    if cfg.get("activation", "topk") != "topk":
        raise ValueError(
            f"{folder}: sparsify activation {cfg.get('activation')!r} is not supported (only topk)"
        )
    if cfg.get("transcode"):
        raise ValueError(
            f"{folder}: a sparsify transcoder is not an autoencoder; it cannot be imported"
        )
    if cfg.get("skip_connection"):
        raise ValueError(f"{folder}: sparsify SAEs with a skip connection are not supported")
    try:
        d = _int(cfg["d_in"])
        n = _int(cfg.get("num_latents") or 0) or d * _int(cfg["expansion_factor"])
        k = _int(cfg["k"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{folder / CONFIG_FILE}: bad sparsify config ({err})") from None
    raw = _load_tensors(folder / WEIGHTS_FILE)
    if "W_skip" in raw:
        raise ValueError(f"{folder}: sparsify SAEs with a skip connection are not supported")
    t = {
        "W_enc": _get(raw, "encoder.weight", (n, d), folder),
        "b_enc": _get(raw, "encoder.bias", (n,), folder),
        "W_dec": _get(raw, "W_dec", (n, d), folder),
        "b_dec": _get(raw, "b_dec", (d,), folder),
    }
    return d, n, _check_k(k, n, folder), bool(cfg.get("multi_topk", False)), t


def _saelens_arch(folder: Path, cfg: dict) -> str:
    activation = cfg.get("activation_fn") or cfg.get("activation_fn_str")
    architecture = cfg.get("architecture") or ("topk" if activation == "topk" else "standard")
    if architecture == "batchtopk":  # a training config; the inference SAE is a JumpReLU
        architecture = "jumprelu"
    if architecture not in _FROM_SAELENS_ARCH:
        raise ValueError(
            f"{folder}: SAELens architecture {architecture!r} is not supported "
            f"(supported: {', '.join(_FROM_SAELENS_ARCH)})"
        )
    if architecture == "standard" and activation not in (None, "relu"):
        raise ValueError(f"{folder}: SAELens activation {activation!r} is not supported (relu)")
    norm = cfg.get("normalize_activations", "none")
    if norm not in (None, "none", False):
        raise ValueError(
            f"{folder}: SAELens normalize_activations={norm!r} needs a scaling factor that is not "
            "in the file; fold it into the weights first (only 'none' can be imported)"
        )
    if cfg.get("reshape_activations", "none") not in (None, "none"):
        raise ValueError(
            f"{folder}: SAELens reshape_activations={cfg['reshape_activations']!r} is not supported"
        )
    if cfg.get("rescale_acts_by_decoder_norm") and architecture not in ("topk", "standard"):
        raise ValueError(
            f"{folder}: rescale_acts_by_decoder_norm with {architecture} is not supported"
        )
    return _FROM_SAELENS_ARCH[architecture]


def _read_saelens(folder: Path, cfg: dict):
    meta = cfg.get("metadata") or {}
    arch = _saelens_arch(folder, cfg)
    try:
        d, n = _int(cfg["d_in"]), _int(cfg["d_sae"])
        k = 0
        if arch == "topk":
            k = _int(cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k"))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{folder / CONFIG_FILE}: bad SAELens config ({err})") from None
    raw = _load_tensors(folder / SAELENS_WEIGHTS_FILE)
    scaling = raw.get("scaling_factor", raw.get("finetuning_scaling_factor"))
    if scaling is not None and not torch.all(scaling == 1):
        raise ValueError(f"{folder}: SAELens finetuning scaling factors are not supported")
    bias_name = "b_gate" if arch == "gated" else "b_enc"
    w_enc = _get(raw, "W_enc", (d, n), folder).T  # (n, d)
    b_enc = _get(raw, bias_name, (n,), folder)
    w_dec = _get(raw, "W_dec", (n, d), folder)
    b_dec = _get(raw, "b_dec", (d,), folder)
    extra = {name: _get(raw, name, shape, folder) for name, shape in arch_params(arch, n).items()}
    work = torch.float64  # fold in double precision, then return to the file's dtype
    if not cfg.get("apply_b_dec_to_input", True):
        # x W_enc + b = W_enc (x - b_dec) + (b + W_enc b_dec), for the gate and the magnitude
        shift = w_enc.to(work) @ b_dec.to(work)  # (n,)
        b_enc = (b_enc.to(work) + shift).to(b_enc.dtype)
        if arch == "gated":
            mag = extra["b_mag"]
            extra["b_mag"] = (mag.to(work) + extra["r_mag"].to(work).exp() * shift).to(mag.dtype)
    if cfg.get("rescale_acts_by_decoder_norm"):
        # TopK on pre·||W_dec||, decode with W_dec/||W_dec||: fold the norms into the encoder.
        norms = w_dec.to(work).norm(dim=1).clamp_min(1e-8)  # (n,)
        w_enc = (w_enc.to(work) * norms[:, None]).to(w_enc.dtype)
        b_enc = (b_enc.to(work) * norms).to(b_enc.dtype)
        w_dec = (w_dec.to(work) / norms[:, None]).to(w_dec.dtype)
    hook = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point") or ""
    model_name = meta.get("model_name") or cfg.get("model_name") or ""
    t = {"W_enc": w_enc, "b_enc": b_enc, "W_dec": w_dec, "b_dec": b_dec, **extra}
    k = _check_k(k, n, folder) if arch == "topk" else 0
    return d, n, k, arch, t, _from_saelens_hook(str(hook)), str(model_name)


def _int(value) -> int:
    """An integer from a config value; strings and floats with a fraction are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"{value!r} is not an integer")
    return int(value)


# ---------------------------------------------------------------------- helpers
def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read SAE config {path}: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"SAE config {path} is not a JSON object")
    return data


def _tensor_names(path: Path) -> set[str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return set(f.keys())
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"corrupt SAE weights {path}: {err}") from None


def _load_tensors(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise ValueError(f"SAE weights {path} are missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"corrupt SAE weights {path}: {err}") from None


def _get(raw: dict[str, Tensor], name: str, shape: tuple[int, ...], folder: Path) -> Tensor:
    if name not in raw:
        raise ValueError(f"SAE weights in {folder}: tensor {name} is missing")
    if tuple(raw[name].shape) != shape:
        raise ValueError(
            f"SAE weights in {folder}: {name} has shape {tuple(raw[name].shape)}, config implies {shape}"
        )
    return raw[name]


def _check_k(k: int, n: int, folder: Path) -> int:
    if not 0 < k <= n:
        raise ValueError(f"{folder}: k={k} must be in 1..{n}")
    return k
