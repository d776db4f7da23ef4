"""Data for the demo: points of a mixture of Gaussians on a ring, for a GAN.

This file is yours. The training loop only relies on `build_datasets(cfg)`
returning three map-style datasets whose items are tuples of tensors; replace
the mixture with your own data and keep that contract.

The target distribution is `n_modes` Gaussians of standard deviation
`mode_std`, evenly spaced on a circle of radius 2: the classic test of whether a
GAN spreads its samples over every mode or collapses onto a few of them.

Each item is `(x, z)`: a point of the mixture and a latent vector, the
generator's input. Both are drawn once from `cfg.data_seed`, so the generator's
noise is data like any other: a run depends only on the order of the batches
(an exact resume, two processes equal to one), and evaluation draws no random
numbers and judges every checkpoint on the same latents. Drawing fresh noise
every step instead (`torch.randn_like(z)` in `compute_loss` while
`model.training`) works too: it uses each process's random stream, which
train.py checkpoints.
"""

import math

import torch
from torch.utils.data import TensorDataset

RADIUS = 2.0


def mode_centres(n_modes: int) -> torch.Tensor:
    """The centres of the mixture's Gaussians: shape `(n_modes, 2)`."""
    angles = 2 * math.pi * torch.arange(n_modes) / n_modes
    return RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1)


def sample_mixture(n: int, n_modes: int, std: float, generator: torch.Generator):
    """`n` points of the mixture, each mode equally likely."""
    which = torch.randint(n_modes, (n,), generator=generator)
    return mode_centres(n_modes)[which] + std * torch.randn(n, 2, generator=generator)


def build_datasets(cfg):
    """Return `(train, val, test)` datasets of `(point, latent)` pairs.

    Everything comes from a generator seeded with `cfg.data_seed`, not from the
    global RNG: every call, and every training seed, sees the same data.
    """
    generator = torch.Generator().manual_seed(cfg.data_seed)
    sizes = [cfg.n_train, cfg.n_val, cfg.n_test]
    x = sample_mixture(sum(sizes), cfg.n_modes, cfg.mode_std, generator)
    z = torch.randn(sum(sizes), cfg.latent_dim, generator=generator)
    return tuple(
        TensorDataset(xs, zs)
        for xs, zs in zip(x.split(sizes), z.split(sizes), strict=True)
    )
