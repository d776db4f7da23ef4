"""What logging every step costs: the generated loop with --log-every 1 vs 50.

    python benchmarks/log_every.py [--steps 600] [--repeats 3] [--threads 1]

Renders a base project, swaps in a 784-256-256-10 MLP on random data, and runs
train.py alternately with --log-every 1 and --log-every 50 (A B A B ...), so
that drifting machine load hits both alike. A benchmark, not a test: it prints
figures and asserts nothing.

Step time, two ways:
- wall: the time between progress lines as they arrive on the pipe, from the
  first line at or after the warm-up to the last, divided by the steps between
  them. It includes everything a step costs, logging (the host sync, the print,
  the CSV row) included. This is the figure to compare.
- csv: batch_size / samples_per_s of the metrics.csv rows after the warm-up.
  train.py times each logging interval without the logging itself, so this
  shows the training work alone.
"""

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scaffold.generate import build_project
from scaffold.spec import ProjectSpec

MODEL = '''"""A 784-256-256-10 MLP (MNIST-sized) for the logging benchmark."""

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):
        return self.net(x)

    def flops_per_sample(self) -> float:
        return 6.0 * sum(p.numel() for p in self.parameters())


def build_model(cfg):
    return MLP()


def compute_loss(model, batch):
    x, y = batch
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y)
    return loss, {"loss": loss.detach(), "acc": (logits.argmax(-1) == y).float().mean()}
'''

DATA = '''"""Random 784-feature inputs with a learnable linear labelling."""

import torch
from torch.utils.data import TensorDataset


def _make(n, seed):
    x = torch.randn(n, 784, generator=torch.Generator().manual_seed(seed))
    w = torch.randn(784, 10, generator=torch.Generator().manual_seed(0))
    return TensorDataset(x, (x @ w).argmax(-1))


def build_datasets(cfg):
    return _make(cfg.n_train, 1), _make(cfg.n_val, 2), _make(cfg.n_test, 3)
'''


def make_project(root: Path) -> Path:
    project = root / "bench"
    files = build_project(ProjectSpec.create("bench", set()))
    files.update({"model.py": MODEL, "data.py": DATA})
    for relative, text in files.items():
        path = project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return project


def run(project: Path, log_every: int, args: argparse.Namespace, tag: str) -> tuple[float, float]:
    """One training run; (wall ms per step, csv ms per step) after the warm-up."""
    run_dir = project / "runs" / tag
    argv = [
        sys.executable, "train.py", "--run-dir", str(run_dir), "--log-every", str(log_every),
        "--batch-size", str(args.batch_size), "--n-train", str(args.batch_size * args.steps),
        "--n-val", "256", "--n-test", "256", "--max-epochs", "1", "--max-steps", str(args.steps),
        "--sanity-val-steps", "0", "--ckpt-every", "0", "--warmup-steps", "10", "--lr", "1e-3",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    arrivals: list[tuple[int, float]] = []
    with subprocess.Popen(argv, cwd=project, stdout=subprocess.PIPE, text=True, env=env) as proc:
        for line in proc.stdout:
            now = time.perf_counter()
            if line.startswith("step ") and "/" in line.split()[1]:
                arrivals.append((int(line.split()[1].split("/")[0]), now))
    if proc.returncode != 0:
        sys.exit(f"train.py exited {proc.returncode}")
    steady = [(step, t) for step, t in arrivals if step >= args.warmup]
    (s0, t0), (s1, t1) = steady[0], steady[-1]
    wall_ms = 1000 * (t1 - t0) / (s1 - s0)
    with (run_dir / "metrics.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train" and int(r["step"]) > args.warmup]
    csv_ms = statistics.median(1000 * args.batch_size / float(r["samples_per_s"]) for r in rows)
    return wall_ms, csv_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=100, help="steps left out of the figures")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each setting (alternating)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the runs")
    parser.add_argument("--markdown", type=Path, help="also write the results as a RESULTS.md section")
    args = parser.parse_args()
    if args.steps % 50 or args.warmup % 50 or args.warmup >= args.steps:
        parser.error("--steps and --warmup must be multiples of 50, warmup < steps")

    results: dict[int, list[tuple[float, float]]] = {1: [], 50: []}
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(Path(tmp))
        print(f"784-256-256-10 MLP, batch {args.batch_size}, {args.steps} steps per run, first {args.warmup} "
              f"left out, OMP_NUM_THREADS={args.threads}, {args.repeats} runs each (alternating)")
        for repeat in range(args.repeats):
            for log_every in (1, 50):
                wall, from_csv = run(project, log_every, args, f"every{log_every}_{repeat}")
                results[log_every].append((wall, from_csv))
                print(f"  run {repeat + 1}  --log-every {log_every:<3} wall {wall:7.3f} ms/step   csv {from_csv:7.3f} ms/step")

    print("\nmedian steady-state step time")
    print(f"{'':16}{'wall (ms)':>12}{'csv (ms)':>12}")
    medians = {}
    for log_every, runs in results.items():
        medians[log_every] = statistics.median(w for w, _ in runs)
        print(f"--log-every {log_every:<4}{medians[log_every]:12.3f}{statistics.median(c for _, c in runs):12.3f}")
    extra = medians[1] - medians[50]
    print(f"logging every step costs {extra:+.3f} ms per step ({100 * extra / medians[50]:+.1f}% of a step)")
    if args.markdown:
        args.markdown.write_text(markdown(results, args, extra / medians[50]))


def markdown(results: dict[int, list[tuple[float, float]]], args: argparse.Namespace, extra: float) -> str:
    def fmt(values: list[float]) -> str:
        return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"

    lines = [
        "## Logging every step vs every 50 steps (generated train.py)",
        "",
        f"`python benchmarks/log_every.py --steps {args.steps} --warmup {args.warmup} "
        f"--repeats {args.repeats} --batch-size {args.batch_size} --threads {args.threads}`",
        "",
        f"784-256-256-10 MLP, batch {args.batch_size}, {args.steps} steps per run (first "
        f"{args.warmup} left out), OMP_NUM_THREADS={args.threads}; median [min-max] over "
        f"{args.repeats} runs each, alternating.",
        "",
        "| setting | wall ms/step | csv ms/step |",
        "|---|---:|---:|",
    ]
    for log_every, runs in results.items():
        lines.append(f"| --log-every {log_every} | {fmt([w for w, _ in runs])} | {fmt([c for _, c in runs])} |")
    lines += ["", f"Logging every step costs {100 * extra:+.1f}% of a step (ratio of median wall times)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
