{% if cookiecutter.multi_optim == "y" %}
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
{% else %}
"""A small transformer that learns to add multi-digit numbers.

This file is yours. The training loop only relies on `build_model(cfg)`,
`compute_loss(model, batch)` and the model's `flops_per_sample()`; change
everything else freely.

The model is a bidirectional (encoder-only) transformer. It reads both
operands and `n + 1` empty query slots (see data.py) and fills every slot
with one digit of the sum, all at once. Carries are what make the task
interesting: digit `i` of the sum depends on every lower digit of both
operands, so the model must learn to route that information through
attention rather than read it from one place.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# Input tokens are the digits 0-9 plus the query token; keep in sync with data.py.
VOCAB_SIZE = 11


class SelfAttention(nn.Module):
    """Multi-head self-attention in which every position sees every other."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        assert d_model % n_heads == 0, "d_model must be divisible by n_heads"
        self.n_heads = n_heads
        self.dropout = dropout
        # One matmul projects to queries, keys and values for all heads.
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        # (B, T, 3C) -> three tensors of shape (B, n_heads, T, head_dim).
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        # No mask: the answer slots may look at any digit, and the operand
        # digits may look ahead to the answer slots, which is harmless
        # because the slots hold no information about the answer.
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.proj(y))


class Block(nn.Module):
    """Pre-norm transformer block: attention, then an MLP, each on a residual.

    Normalising the input of each branch rather than its output keeps the
    residual stream an untouched sum, which makes training stable without
    careful tuning of warmup or learning rate.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model),
            nn.GELU(),
            nn.Linear(4 * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return x


class Adder(nn.Module):
    """Encoder-only transformer that predicts the answer digits in parallel.

    Input: token ids of shape (batch, 3 * n_digits + 1), laid out as in
    data.py. Output: digit logits of shape (batch, n_digits + 1, 10), one row
    per answer slot, least-significant digit first.
    """

    def __init__(
        self,
        n_digits: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        dropout: float,
    ):
        super().__init__()
        self.n_out = n_digits + 1  # the sum can have one more digit
        self.seq_len = 2 * n_digits + self.n_out
        # A position is described by two learned embeddings: which number it
        # belongs to (a, b or the answer) and which place (1s, 10s, ...) it
        # holds. Sharing the place between the three numbers means "answer
        # digit i needs the operand digits at place i and below" is one
        # pattern to learn, not n + 1 separate ones. With an embedding per
        # raw position instead, some seeds never learn to route one of the
        # answer digits and stall at ~10% exact-match accuracy.
        places = torch.cat([torch.arange(n_digits)] * 2 + [torch.arange(self.n_out)])
        numbers = torch.tensor([0] * n_digits + [1] * n_digits + [2] * self.n_out)
        self.register_buffer("places", places, persistent=False)
        self.register_buffer("numbers", numbers, persistent=False)
        self.tok_emb = nn.Embedding(VOCAB_SIZE, d_model)
        self.place_emb = nn.Embedding(self.n_out, d_model)
        self.number_emb = nn.Embedding(3, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, dropout) for _ in range(n_layers)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, 10)  # one logit per digit

        self.apply(self._init_weights)
        # Scale down the layers that write into the residual stream, so that
        # its variance does not grow with depth at initialisation (GPT-2).
        for name, p in self.named_parameters():
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layers))

    @staticmethod
    def _init_weights(module: nn.Module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.place_emb(self.places) + self.number_emb(self.numbers)
        h = self.drop(self.tok_emb(x) + pos)
        for block in self.blocks:
            h = block(h)
        # Only the answer slots are read out; the operand positions just
        # serve as working memory for the layers above them.
        return self.head(self.ln_f(h[:, -self.n_out :]))

    def flops_per_sample(self) -> float:
        """Approximate training FLOPs (forward + backward) for one sample.

        Each weight does a multiply and an add per token on the forward pass
        and twice that on the backward pass: 6 FLOPs per weight per token.
        Embedding lookups are not matmuls and are left out; the attention
        scores and weighted sums add 12 * d_model * seq_len per token per
        layer. The head only runs on the answer slots.
        """
        d_model = self.tok_emb.embedding_dim
        body = sum(p.numel() for p in self.blocks.parameters())
        body += sum(p.numel() for p in self.ln_f.parameters())
        head = sum(p.numel() for p in self.head.parameters())
        attention = 12 * len(self.blocks) * d_model * self.seq_len
        return float(self.seq_len * (6 * body + attention) + self.n_out * 6 * head)

    def tokens_per_sample(self) -> int:
        """Tokens in one sample, for the tokens/s of the progress line."""
        return self.seq_len
{% if cookiecutter.fsdp == "y" %}

    def fsdp_blocks(self) -> list[nn.Module]:
        """What --fsdp shards one by one: each block gathers its whole parameters
        for its own forward and backward only. The embeddings, the final norm and
        the head are few parameters: they are sharded together, with the root."""
        return list(self.blocks)
{% endif %}


def build_model(cfg) -> Adder:
    """Build the model for `cfg.n_digits`-digit addition."""
    return Adder(
        n_digits=cfg.n_digits,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        dropout=cfg.dropout,
    )


def compute_loss(model: nn.Module, batch):
    """Cross-entropy over all answer digits, plus accuracy metrics.

    Returns the loss to backpropagate and a dict of detached scalar tensors
    (train.py reports the loss itself: loss, val_loss, test_loss). Nothing
    here calls `.item()`, so the device never has to wait on the host.
    """
    x, y = batch
    logits = model(x)
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    correct = logits.argmax(dim=-1) == y
    metrics = {
        # A sum is right only if every digit is: this is the number to watch.
        "acc": correct.all(dim=-1).float().mean(),
        # Per-digit accuracy rises long before `acc` does; it shows progress
        # early on and which digits (usually those after a carry) lag behind.
        "digit_acc": correct.float().mean(),
    }
    return loss, metrics
{% endif %}
