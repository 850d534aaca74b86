"""A small, standalone TopK sparse autoencoder library (torch + safetensors only)."""

from .config import SAEConfig
from .model import EncoderOutput, ForwardOutput, TopKSAE, atomic_write

__all__ = ["SAEConfig", "TopKSAE", "EncoderOutput", "ForwardOutput", "atomic_write"]
