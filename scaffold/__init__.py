"""scaffold: generate explicit PyTorch training projects you own, and keep them current."""

__version__ = "0.3.0"
