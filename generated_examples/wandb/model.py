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
