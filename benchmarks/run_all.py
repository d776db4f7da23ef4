"""Run every benchmark and write benchmarks/RESULTS.md.

    python benchmarks/run_all.py [--quick] [--output benchmarks/RESULTS.md]

Runs cli_speed.py, loop_overhead.py, log_every.py, fsdp_memory.py and, where
torch sees a CUDA GPU, gpu_demo.py and gpu_gpt.py one after the other, each as
its own process exactly as it runs alone (each writes its section with
--markdown), and puts the sections under a header that names the machine (CPU
model, cores, memory), the Python and torch versions, and the date. --quick runs
fewer repeats and steps (fsdp_memory.py: 1 and 2 processes only), for trying the
scripts out: figures from it are too noisy to quote. For quotable figures run it
on a quiet machine (the load average is recorded in each section).
"""

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

FULL = {
    "cli_speed.py": ["--repeats", "10"],
    "loop_overhead.py": ["--repeats", "7", "--paired-repeats", "5", "--steps", "1000",
                         "--warmup", "100"],
    "log_every.py": ["--repeats", "3"],
    "fsdp_memory.py": ["--world-sizes", "1", "2", "4"],
    "gpu_demo.py": [],
    "gpu_gpt.py": [],
}
QUICK = {
    "cli_speed.py": ["--repeats", "2"],
    "loop_overhead.py": ["--repeats", "1", "--paired-repeats", "1", "--steps", "300",
                         "--warmup", "50"],
    "log_every.py": ["--repeats", "1", "--steps", "300", "--warmup", "100"],
    "fsdp_memory.py": ["--world-sizes", "1", "2"],
    "gpu_demo.py": ["--steps", "150", "--warmup", "50"],
    "gpu_gpt.py": ["--rounds", "1", "--steps", "30", "--warmup", "10"],
}
NEEDS_CUDA = {"gpu_demo.py", "gpu_gpt.py"}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return "unknown"


def cuda_available() -> bool:
    probe = [sys.executable, "-c", "import sys, torch; sys.exit(not torch.cuda.is_available())"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def versions() -> str:
    probe = ("import torch, importlib.metadata as m; "
             "print(torch.__version__, m.version('black'), m.version('typer'), m.version('jinja2'))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    torch, black, typer, jinja = (out.stdout.split() + ["?"] * 4)[:4]
    return f"torch {torch}, black {black}, typer {typer}, jinja2 {jinja}"


def header(quick: bool) -> str:
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = [
        "# Benchmark results",
        "",
        "Written by `python benchmarks/run_all.py" + (" --quick" if quick else "") + "`; "
        "every figure is the median [min-max] over the number of runs given in its "
        "section. See benchmarks/README.md for what each measures.",
        "",
        f"- date: {now}",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores, {memory_gib()} memory, "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; {versions()}",
    ]
    if quick:
        lines.append("- **--quick**: few runs, short runs; not figures to quote")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few, short runs (to try it out)")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()

    sections = [header(args.quick)]
    cuda = cuda_available()
    with tempfile.TemporaryDirectory() as tmp:
        for script, script_args in (QUICK if args.quick else FULL).items():
            if script in NEEDS_CUDA and not cuda:
                sections.append(f"## {script}\n\nNot run: torch sees no CUDA GPU on this machine "
                                f"(run `python benchmarks/{script}` where it does).\n")
                continue
            section = Path(tmp) / f"{script}.md"
            argv = [sys.executable, str(HERE / script), *script_args, "--markdown", str(section)]
            print(f"$ {' '.join(argv[1:])}", flush=True)
            code = subprocess.run(argv).returncode
            if code != 0:
                sections.append(f"## {script}\n\nfailed with exit code {code}.\n")
                continue
            sections.append(section.read_text())
    args.output.write_text("\n".join(sections))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
