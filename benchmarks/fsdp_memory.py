"""Per-rank memory of the model state: DDP against FSDP2, at 1, 2 and 4 processes.

    python benchmarks/fsdp_memory.py [--world-sizes 1 2 4] [--width 384] [--layers 4]

A small transformer-like stack (an embedding of 1001 tokens, --layers blocks of
attention projections and an MLP whose hidden width, 4 * width + 1, is odd, a
final norm and a 1001-way head; float32) is trained for one AdamW step under
each strategy, on the CPU with the gloo backend:

- ddp: DistributedDataParallel around the model; every rank holds all of it;
- fsdp: FSDP2, `fully_shard` over a 1-d CPU device mesh of the ranks, applied to
  each direct child holding parameters (the members of the block list each on
  their own), then to the root, as a generated --fsdp project does.

The script launches itself under `python -m torch.distributed.run --standalone
--nproc_per_node=N` once per (strategy, N). Each rank counts the bytes it holds
of three things: the parameters (of a DTensor, its local shard); the gradients
after one forward and backward (`p.grad`, local shard likewise); the optimizer
state after one AdamW step (every tensor in `optimizer.state`). Rank 0 gathers
every rank's figures and prints them as one JSON line, which this script reads.
The table gives the largest figure over the ranks and, per strategy, its ratio
to the first world size's next to the ideal 1/N: FSDP2's should fall as 1/N
(a little above it where a dimension does not divide by N: the first ranks then
hold one row more), DDP's should stay flat.

These are the bytes of the tensors themselves, counted exactly, not a reading of
the process: not DDP's gradient buckets (a second copy of the gradients, unless
`gradient_as_bucket_view=True`), not FSDP2's whole parameters gathered for the
block being computed, nor activations. The peak RSS of each process is printed
as an aside; it is mostly torch's own libraries and says little here. A
benchmark, not a test: it prints figures and asserts nothing.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

VOCAB = 1001
MARKER = "FSDP_MEMORY_RESULT "
MIB = 2**20
STRATEGIES = ("ddp", "fsdp")
KINDS = ("params", "grads", "optim")


class Block(nn.Module):
    """Pre-norm attention (fused qkv, output projection) and an MLP."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width + 1), nn.GELU(), nn.Linear(4 * width + 1, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        q, k, v = (
            t.view(batch, seq, self.heads, -1).transpose(1, 2) for t in (q, k, v)
        )
        att = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(batch, seq, width))
        return x + self.mlp(self.norm2(x))


class TinyLM(nn.Module):
    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.blocks = nn.ModuleList(Block(width, heads=6) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def local_bytes(tensor: torch.Tensor) -> int:
    """Bytes this rank holds of a tensor: a DTensor's local shard, else all of it."""
    if hasattr(tensor, "to_local"):
        tensor = tensor.to_local()
    return tensor.numel() * tensor.element_size()


def shard(model: nn.Module, world: int) -> None:
    """FSDP2: each direct child holding parameters (a ModuleList's members one by
    one), then the root, over a 1-d CPU mesh of all ranks."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    units: list[nn.Module] = []
    for child in model.children():
        units += list(child) if isinstance(child, nn.ModuleList) else [child]
    for unit in units:
        if any(True for _ in unit.parameters()):
            fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)


def measure(strategy: str, width: int, layers: int, seed: int = 0) -> dict[str, int]:
    """This rank's bytes of parameters, gradients and AdamW state, and its peak RSS."""
    torch.manual_seed(seed)
    model: nn.Module = TinyLM(width, layers)
    if strategy == "fsdp":
        shard(model, dist.get_world_size())
    else:
        model = nn.parallel.DistributedDataParallel(model)
    figures = {"params": sum(local_bytes(p) for p in model.parameters())}

    tokens = torch.randint(
        0, VOCAB, (2, 33), generator=torch.Generator().manual_seed(1)
    )
    logits = model(tokens[:, :-1])
    loss = nn.functional.cross_entropy(
        logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1)
    )
    loss.backward()
    figures["grads"] = sum(
        local_bytes(p.grad) for p in model.parameters() if p.grad is not None
    )

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    optimizer.step()
    figures["optim"] = sum(
        local_bytes(value)
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    )
    figures["rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return figures


def worker(strategy: str, width: int, layers: int) -> None:
    """One rank under torchrun: measure, gather on rank 0, print one JSON line."""
    dist.init_process_group("gloo")
    try:
        figures = measure(strategy, width, layers)
        gathered: list[dict[str, int] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, figures)
        if dist.get_rank() == 0:
            print(MARKER + json.dumps(gathered), flush=True)
    finally:
        dist.destroy_process_group()


def launch(strategy: str, world: int, args: argparse.Namespace) -> list[dict[str, int]]:
    """Run the workers of one (strategy, world size) and return every rank's figures."""
    argv = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={world}", str(Path(__file__).resolve()),
        "--worker", strategy, "--width", str(args.width), "--layers", str(args.layers),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=args.timeout
    )
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    sys.exit(
        f"{strategy} at {world} processes exited {done.returncode} without figures:\n"
        f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )


def rows(results: dict[tuple[str, int], list[dict[str, int]]]) -> list[list[str]]:
    """Table rows: the largest figure over the ranks, in MiB, and the ratios."""
    table = []
    for strategy in STRATEGIES:
        runs = sorted((w, r) for (s, w), r in results.items() if s == strategy)
        if not runs:
            continue
        first_world, first = runs[0]
        first_total = max(sum(rank[k] for k in KINDS) for rank in first)
        for world, ranks in runs:
            worst = [max(rank[k] for rank in ranks) / MIB for k in KINDS]
            total = max(sum(rank[k] for k in KINDS) for rank in ranks)
            table.append(
                [strategy, str(world)]
                + [f"{mib:.3f}" for mib in worst]
                + [f"{total / MIB:.3f}", f"{total / first_total:.4f}"]
                + [f"{first_world / world:.4f}"]
            )
    return table


def header(first_world: int) -> list[str]:
    base = f"{first_world} process" + ("es" if first_world > 1 else "")
    return [
        "strategy", "processes", "params MiB", "grads MiB", "optim MiB",
        "total MiB", f"ratio to {base}", "ideal",
    ]  # fmt: skip


def print_table(head: list[str], table: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [head, *table]) for i in range(len(head))]
    for row in [head, *table]:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))


def asides(results: dict[tuple[str, int], list[dict[str, int]]]) -> list[str]:
    """The bytes summed over all ranks, and each process's peak RSS."""
    runs = sorted(results.items())
    summed = [
        f"{s} x{w} {sum(r[k] for r in ranks for k in KINDS) / MIB:.3f}"
        for (s, w), ranks in runs
    ]
    rss = [
        f"{s} x{w} {max(r['rss_kib'] for r in ranks) / 1024:.0f}"
        for (s, w), ranks in runs
    ]
    return [
        "total MiB summed over all ranks: " + ", ".join(summed) + ".",
        "aside, peak RSS per process in MiB (max over ranks; mostly torch's own "
        "libraries): " + ", ".join(rss) + ".",
    ]


def markdown(
    args: argparse.Namespace,
    head: list[str],
    table: list[list[str]],
    notes: list[str],
    after: list[str],
) -> str:
    sizes = " ".join(str(w) for w in args.world_sizes)
    lines = [
        "## fsdp_memory.py",
        "",
        f"`python benchmarks/fsdp_memory.py --world-sizes {sizes} "
        f"--width {args.width} --layers {args.layers}`",
        "",
        "\n\n".join(notes),
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
        *("| " + " | ".join(row) + " |" for row in table),
        "",
        "\n\n".join(after),
    ]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--width", type=int, default=384, help="a multiple of 6")
    parser.add_argument("--layers", type=int, default=4, help="transformer blocks")
    parser.add_argument("--timeout", type=float, default=300, help="s per launch")
    parser.add_argument("--markdown", type=Path, help="also write a RESULTS.md section")
    parser.add_argument("--worker", choices=STRATEGIES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.width % 6:
        parser.error("--width must be a multiple of 6 (the heads)")
    args.world_sizes = sorted(set(args.world_sizes))
    return args


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args.worker, args.width, args.layers)
        return
    load_before = os.getloadavg()[0]
    results: dict[tuple[str, int], list[dict[str, int]]] = {}
    for strategy in STRATEGIES:
        for world in args.world_sizes:
            print(f"  {strategy} at {world} processes ...", flush=True)
            results[strategy, world] = launch(strategy, world, args)
    load_after = os.getloadavg()[0]

    head, table = header(args.world_sizes[0]), rows(results)
    notes = [
        f"Width {args.width}, {args.layers} blocks, vocabulary {VOCAB}, MLP hidden "
        f"{4 * args.width + 1}, float32; CPU, gloo, one forward and backward (batch "
        "2, 32 tokens) and one AdamW step. Bytes of the tensors each rank holds, "
        "the largest over the ranks; ratio: total against the first world size's; "
        "ideal: 1/N of it.",
        "DDP's gradient buckets, a second copy of the gradients, are not counted.",
        f"Run {datetime.date.today()} ({platform.system()}, {os.cpu_count()} "
        f"cores); load average (1 min) before/after: {load_before:.2f} / "
        f"{load_after:.2f}. The figures are counts of bytes: the load does not move "
        "them, only the time the run takes.",
    ]
    after = asides(results)
    print()
    print_table(head, table)
    print()
    print("\n".join(notes + after))
    if args.markdown:
        args.markdown.write_text(markdown(args, head, table, notes, after))


if __name__ == "__main__":
    main()
