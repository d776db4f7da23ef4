"""The demo on a GPU: throughput and peak memory with and without --amp and --compile.

    python benchmarks/gpu_demo.py [--steps 600] [--warmup 200] [--markdown FILE]

Renders four projects from the default demo (the transformer that learns to
add), one per feature set -- none, --amp, --compile, --amp --compile -- and
trains each with its own train.py for the same optimizer steps: amp in bf16
(--amp-dtype bf16), compile in its default mode. train.py itself reports what
is compared, in metrics.csv: samples/s and tokens/s of each logging interval
(timed without the logging), and on CUDA the peak memory allocated in it. The
figures are the median over the intervals after the warm-up (which holds
torch.compile's compilation) and the largest peak memory of those intervals.

A benchmark, not a test, and for a machine with a CUDA GPU: `--device cpu`
runs the same script on a CPU (to try it out; peak memory is then not known).
"""

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scaffold.generate import build_project
from scaffold.spec import ProjectSpec

SETTINGS = {
    "fp32": set(),
    "amp bf16": {"amp"},
    "compile": {"compile"},
    "amp bf16 + compile": {"amp", "compile"},
}


def device_name(device: str) -> str:
    probe = (
        "import sys, torch; d = torch.device(sys.argv[1]); "
        "name = torch.cuda.get_device_name(d) if d.type == 'cuda' else 'CPU'; "
        "print(f'{name} (torch {torch.__version__})')"
    )
    out = subprocess.run([sys.executable, "-c", probe, device], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"no usable device {device!r}:\n{out.stderr[-2000:]}")
    return out.stdout.strip()


def train(root: Path, name: str, features: set[str], args: argparse.Namespace) -> dict[str, str]:
    """Render one project, train it, and return its steady-state figures."""
    project = root / name.replace(" ", "_").replace("+", "and")
    for relative, text in build_project(ProjectSpec.create("demo", features)).items():
        path = project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    command = [
        sys.executable, "train.py", "--device", args.device, "--max-steps", str(args.steps),
        "--log-every", str(args.log_every), "--ckpt-every", "0", "--sanity-val-steps", "0",
        "--batch-size", str(args.batch_size), "--run-dir", "runs/bench",
    ]
    if "amp" in features:
        command += ["--amp-dtype", "bf16"]
    start = time.perf_counter()
    run = subprocess.run(command, cwd=project, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"{name}: train.py exited {run.returncode}:\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
    with (project / "runs/bench/metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train" and int(r["step"]) > args.warmup]
    if not rows:
        sys.exit(f"{name}: no training rows after step {args.warmup} in metrics.csv")

    def median(key: str, fmt: str) -> str:
        values = [float(r[key]) for r in rows if r.get(key)]
        return f"{statistics.median(values):{fmt}}" if values else "n/a"

    peaks = [float(r["peak_mem_gb"]) for r in rows if r.get("peak_mem_gb")]
    return {
        "samples/s": median("samples_per_s", ",.0f"),
        "tokens/s": median("tokens_per_s", ",.0f"),
        "MFU": median("mfu", ".1%"),
        "peak memory (GB)": f"{max(peaks):.2f}" if peaks else "n/a",
        "whole run (s)": f"{wall:.1f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (cuda:N), or cpu to try it out")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=200, help="steps left out of the figures")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--markdown", type=Path, help="also write the results as a RESULTS.md section")
    args = parser.parse_args()
    if not 0 <= args.warmup < args.steps - args.log_every:
        parser.error("--warmup must leave at least one logging interval of --steps")

    device = device_name(args.device)
    print(f"the demo on {device}: {args.steps} steps, batch {args.batch_size}, "
          f"first {args.warmup} left out")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, features in SETTINGS.items():
            results[name] = train(Path(tmp), name, features, args)
            print(f"  {name:<20} " + "  ".join(f"{k} {v}" for k, v in results[name].items()),
                  flush=True)
    if args.markdown:
        columns = list(next(iter(results.values())))
        lines = [
            "## The demo with --amp (bf16) and --compile, on a GPU",
            "",
            f"`python benchmarks/gpu_demo.py --device {args.device} --steps {args.steps} "
            f"--warmup {args.warmup} --batch-size {args.batch_size}`",
            "",
            f"{device}. The default demo (transformer adding numbers), batch {args.batch_size}, "
            f"{args.steps} optimizer steps per run; medians over train.py's logging intervals "
            f"after step {args.warmup} (metrics.csv), peak memory: the largest of them; one run "
            "per setting.",
            "",
            "| setting | " + " | ".join(columns) + " |",
            "|---|" + "---:|" * len(columns),
        ]
        for name, figures in results.items():
            lines.append(f"| {name} | " + " | ".join(figures.values()) + " |")
        args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
