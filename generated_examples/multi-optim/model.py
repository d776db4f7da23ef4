"""A small GAN that learns the mixture of Gaussians of data.py.

This file is yours. The training loop relies on three names here:

- `build_model(cfg)`: the model; each network an optimizer trains is a
  sub-model (an attribute), here `model.generator` and `model.discriminator`.
- `build_optimizers(model, cfg)`: a list of `(name, optimizer, every_n_steps)`.
  `name` is the attribute of the sub-model the optimizer trains, and the
  optimizer holds exactly that sub-model's parameters. train.py steps each one
  on every `every_n_steps`-th training step, in the order of the list.
- `compute_loss(model, batch, name)`: the loss of optimizer `name` and a dict of
  metrics, called once per optimizer due at a step (and for every name on
  validation batches). train.py backpropagates the loss into `model.<name>`
  only, so the generator's loss, which flows through the discriminator, leaves
  the discriminator's gradients alone.

Both networks are small MLPs; the losses are the standard (non-saturating) GAN
losses. The metrics judge the generated samples against the true mixture (see
`sample_quality`): how many modes they cover, how many land near a mode, and
how far their distribution over the modes is from the true one.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from data import mode_centres


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_out),
    )


class GAN(nn.Module):
    """A generator (latent -> point) and a discriminator (point -> real logit)."""

    def __init__(self, latent_dim: int, hidden: int, n_modes: int, mode_std: float):
        super().__init__()
        self.generator = mlp(latent_dim, hidden, 2)
        self.discriminator = mlp(2, hidden, 1)
        # The true mixture, for the metrics only; a function of the config, so
        # it is not saved in checkpoints.
        self.register_buffer("centres", mode_centres(n_modes), persistent=False)
        self.mode_std = mode_std


def build_model(cfg) -> GAN:
    return GAN(cfg.latent_dim, cfg.hidden, cfg.n_modes, cfg.mode_std)


def build_optimizers(model: GAN, cfg):
    """Adam with beta1 = 0.5 for both networks, as GANs usually train.

    A smaller beta1 lets each network follow the other's recent moves; the
    default 0.9 makes the two oscillate around each other. `cfg.g_every`
    steps the generator less often than the discriminator, which then stays a
    good judge.
    """

    def adam(module: nn.Module) -> torch.optim.Optimizer:
        # fused on CUDA (one kernel for all parameters), foreach elsewhere
        on_cuda = next(module.parameters()).is_cuda
        return torch.optim.Adam(
            module.parameters(),
            lr=cfg.lr,
            betas=(0.5, 0.999),
            foreach=not on_cuda,
            fused=on_cuda,
        )

    return [
        ("discriminator", adam(model.discriminator), 1),
        ("generator", adam(model.generator), cfg.g_every),
    ]


def compute_loss(model: GAN, batch, name: str):
    """The loss of optimizer `name`, with detached metrics (no `.item()` here).

    train.py logs the loss itself as loss_<name>, and validation reports
    val_loss_<name> and their sum, val_loss.
    """
    x, z = batch
    if name == "discriminator":
        # Real points should score 1, generated ones 0. The generator only
        # supplies samples here: no graph through it.
        with torch.no_grad():
            fake = model.generator(z)
        real_logits = model.discriminator(x)
        fake_logits = model.discriminator(fake)
        real_loss = F.binary_cross_entropy_with_logits(
            real_logits, torch.ones_like(real_logits)
        )
        fake_loss = F.binary_cross_entropy_with_logits(
            fake_logits, torch.zeros_like(fake_logits)
        )
        loss = real_loss + fake_loss
        # how often it tells real from generated: 0.5 when the generator fools it
        accuracy = (
            (real_logits > 0).float().mean() + (fake_logits < 0).float().mean()
        ) / 2
        return loss, {"d_acc": accuracy}
    if name == "generator":
        # The non-saturating loss: make the discriminator call the samples
        # real. Minimising log(1 - D(G(z))) instead has a vanishing gradient
        # exactly when the discriminator wins, early in training.
        fake = model.generator(z)
        fake_logits = model.discriminator(fake)
        loss = F.binary_cross_entropy_with_logits(
            fake_logits, torch.ones_like(fake_logits)
        )
        quality = sample_quality(fake.detach().float(), model.centres, model.mode_std)
        return loss, quality
    raise ValueError(f"compute_loss: no loss for optimizer {name!r}")


def sample_quality(fake: torch.Tensor, centres: torch.Tensor, std: float):
    """How well a batch of generated points matches the mixture.

    A point is *good* when it lies within 3 standard deviations of a mode's
    centre, where a 2-D Gaussian puts 1 - exp(-4.5) = 98.9 % of its mass.

    - `modes`: modes that get at least a quarter of their fair share of the
      batch; a generator that collapsed onto a few modes scores low.
    - `quality`: the fraction of good points.
    - `mode_tv`: the total variation distance between the batch's histogram
      over (mode 1, ..., mode n, no mode) and the true mixture's; 0 is
      perfect, up to sampling noise (about 0.07 for 256 points and 8 modes).
    """
    n_modes = len(centres)
    distance, nearest = torch.cdist(fake, centres).min(dim=1)
    good = (distance < 3 * std).float()
    # good points per mode; index_add_ keeps this on the device, where boolean
    # indexing and bincount wait for the GPU to learn their output's size
    counts = torch.zeros(n_modes, device=fake.device).index_add_(0, nearest, good)
    share = torch.cat([counts, (1 - good).sum().view(1)]) / len(fake)
    inside = 1 - math.exp(-4.5)
    target = torch.full_like(share, inside / n_modes)
    target[-1] = 1 - inside
    return {
        "modes": (counts >= 0.25 * len(fake) / n_modes).float().sum(),
        "quality": good.mean(),
        "mode_tv": 0.5 * (share - target).abs().sum(),
    }
