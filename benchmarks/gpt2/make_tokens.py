"""Write a synthetic file of token ids, in the format data.py reads.

    python benchmarks/gpt2/make_tokens.py OUT --tokens 4000000 [--vocab-size 50304]

Generated, never downloaded: a walk over the vocabulary that steps 1 to 4 ids
forward at random (seeded), wrapping around. A model can learn it (the best
loss is log 4 = 1.39 nats) but the data exists for throughput, not for quality.
"""

import argparse
from pathlib import Path

import torch
from data import token_dtype


def write_tokens(path: Path, n_tokens: int, vocab_size: int, seed: int = 0) -> Path:
    """n_tokens ids below vocab_size into path; the same file for the same arguments."""
    generator = torch.Generator().manual_seed(seed)
    steps = torch.randint(1, 5, (n_tokens,), generator=generator)
    tokens = (steps.cumsum(0) % vocab_size).to(token_dtype(vocab_size))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(tokens.untyped_storage()))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tokens", type=int, default=4_000_000)
    parser.add_argument("--vocab-size", type=int, default=50304)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_tokens(args.out, args.tokens, args.vocab_size, args.seed)
    print(f"wrote {args.tokens} tokens to {args.out}")


if __name__ == "__main__":
    main()
