"""A small, standalone TopK sparse autoencoder library (torch + safetensors only)."""

from sae.train.trainer import TrainConfig, Trainer, default_lr, sae_name

from .archs import ARCHS, concat_codes
from .config import SAEConfig
from .formats import FORMATS, detect_format, export_sae, import_sae, load_sae
from .geomedian import geometric_median
from .model import EncoderOutput, ForwardOutput, TopKSAE, atomic_write, sparse_decode

__all__ = [
    "SAEConfig",
    "TopKSAE",
    "EncoderOutput",
    "ForwardOutput",
    "atomic_write",
    "sparse_decode",
    "geometric_median",
    "TrainConfig",
    "Trainer",
    "default_lr",
    "sae_name",
    "FORMATS",
    "detect_format",
    "export_sae",
    "import_sae",
    "load_sae",
    "ARCHS",
    "concat_codes",
]
