"""steer: a feature-steering playground for language models, built on TopK SAEs."""

__version__ = "0.1.0"
