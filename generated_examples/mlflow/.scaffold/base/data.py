"""Data for the demo task: adding two multi-digit numbers.

This file is yours. The training loop only relies on `build_datasets(cfg)`
returning three map-style datasets whose items are tuples of tensors; replace
the addition problems with your own data and keep that contract.

Every problem `a + b = c` with `n`-digit operands becomes a fixed-length
sequence of `3n + 1` tokens, and the target is the `n + 1` digits of `c`:

    a (n digits) | b (n digits) | n + 1 query tokens  ->  c (n + 1 digits)

All numbers are written least-significant digit first, so position `i` of
every number is its 10^i place. For n = 3, 123 + 958 = 1081 reads

    x = [3 2 1  8 5 9  Q Q Q Q]    y = [1 8 0 1]

The query tokens `Q` are empty slots where the model writes the answer. Since
every problem has the same length, no padding or attention mask is needed.
"""

import torch
from torch.utils.data import TensorDataset

# Token ids 0-9 are the digits themselves; the query token comes after them.
QUERY = 10
VOCAB_SIZE = 11


def to_digits(n: torch.Tensor, n_digits: int) -> torch.Tensor:
    """Least-significant-first decimal digits of each integer in `n`.

    Returns a tensor of shape `(*n.shape, n_digits)`; higher places are cut off.
    """
    places = 10 ** torch.arange(n_digits)
    return n.unsqueeze(-1) // places % 10


def encode(a: torch.Tensor, b: torch.Tensor, n_digits: int):
    """Turn the problems `a[i] + b[i]` into model inputs `x` and targets `y`."""
    query = torch.full((len(a), n_digits + 1), QUERY)
    x = torch.cat([to_digits(a, n_digits), to_digits(b, n_digits), query], dim=1)
    y = to_digits(a + b, n_digits + 1)
    return x, y


def sample_problems(n: int, n_digits: int, generator: torch.Generator):
    """Draw `n` distinct pairs of operands `(a, b)`, uniformly at random.

    Distinct pairs let us cut the result into splits that share no problem,
    so validation and test accuracy measure generalisation, not recall.
    """
    high = 10**n_digits
    if n > high * high // 2:
        # Rejection sampling below would crawl, and a split this large would
        # leave too few unseen problems to test on anyway.
        raise ValueError(f"{n} problems is too many for {n_digits}-digit operands")
    seen = set()
    pairs = []
    while len(pairs) < n:
        # Draw a little more than we are missing; duplicates are rare when the
        # problem space is large, so this loop almost always runs once.
        k = (n - len(pairs)) * 5 // 4 + 16
        a = torch.randint(high, (k,), generator=generator)
        b = torch.randint(high, (k,), generator=generator)
        for pair in zip(a.tolist(), b.tolist()):
            if pair not in seen and len(pairs) < n:
                seen.add(pair)
                pairs.append(pair)
    a, b = torch.tensor(pairs).unbind(dim=1)
    return a, b


def build_datasets(cfg):
    """Return disjoint `(train, val, test)` datasets of addition problems.

    The problems come from a generator seeded with `cfg.data_seed`, not from
    the global RNG, so every call, and every training seed, sees the same
    data: runs with different seeds differ only in the model and the order
    of batches.
    """
    generator = torch.Generator().manual_seed(cfg.data_seed)
    sizes = [cfg.n_train, cfg.n_val, cfg.n_test]
    a, b = sample_problems(sum(sizes), cfg.n_digits, generator)
    x, y = encode(a, b, cfg.n_digits)
    # TensorDataset items are `(x[i], y[i])`; it also accepts a tensor of
    # indices and then returns a whole batch at once.
    return tuple(
        TensorDataset(xs, ys)
        for xs, ys in zip(x.split(sizes), y.split(sizes), strict=True)
    )
