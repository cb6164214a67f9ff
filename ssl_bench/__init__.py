"""ssl-bench: a plugin-based benchmark of self-supervised pretraining for medical images."""

__version__ = "0.1.0"
