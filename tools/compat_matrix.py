"""Which torch and Python the generated code runs on: for one interpreter (with its
torch installed), render the base project and every single-feature project, and run
each under that interpreter: a fast-dev-run, then an exact mid-epoch resume (a run
resumed from a mid-epoch checkpoint ends with the same weights, bit for bit, as the
uninterrupted run).

    python -m tools.compat_matrix /tmp/v310/bin/python --json results/py310-t26.json
    python -m tools.compat_matrix --venv /tmp/v310-t26 --base-python python3.10 \
        --torch 2.6.0 --json results/py310-t26.json      # make that venv first
    python -m tools.compat_matrix --table results/*.json   # the README's table

scaffold itself renders under the interpreter that runs this script; only the
generated code runs under the given one, which needs torch (numpy too for --fsdp).
A feature whose extra package (tensorboard, mlflow) that interpreter lacks is
reported "n/a", not run. TORCH_FLOORS is the oldest torch each feature needs, which
every generated requirements.txt states (tests/test_compat.py checks that).
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# The oldest torch that each feature's code needs; "base" is what every project
# needs. Each is the oldest release that this script ran the feature on (the
# README's table has the runs):
# - clip, debug: torch.nn.utils.get_total_norm is new in 2.6
# - fsdp: fully_shard is public in torch.distributed.fsdp from 2.6, but FSDP2 on a
#   CPU (gloo) fails in 2.6 ('Stream' object has no attribute 'record_event'); 2.7 runs
TORCH_FLOORS: dict[str, str] = {"base": "2.4", "clip": "2.6", "debug": "2.6", "fsdp": "2.7"}

# packages that a feature imports besides torch, and the option that runs it without
EXTRAS: dict[str, str] = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
FEATURE_ARGS: dict[str, list[str]] = {"wandb": ["--wandb-mode", "disabled"]}
# rows that run a feature's other code path: (the feature, its options)
VARIANTS: dict[str, tuple[str, list[str]]] = {"clip-value": ("clip", ["--clip-value", "0.5"])}

# a few steps of the demo model: 4 batches an epoch, 2 epochs (as the project's own
# tests/test_train.py runs it)
SHORT = (
    "--batch-size 8 --limit-train-batches 4 --limit-val-batches 2 "
    "--limit-test-batches 2 --max-epochs 2 --warmup-steps 2 --log-every 2 "
    "--sanity-val-steps 0 --ckpt-every 0"
).split()

SAME_WEIGHTS = """
import sys, torch
a, b = (torch.load(p, map_location="cpu", weights_only=True)["model"] for p in sys.argv[1:])
sys.exit(0 if a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) else 1)
"""


def version_tuple(version: str) -> tuple[int, ...]:
    """(2, 6) of "2.6", (2, 6, 0) of "2.6.0+cu124": the release numbers only."""
    return tuple(int(part) for part in version.split("+")[0].split(".") if part.isdigit())


def torch_floor(features) -> str:
    """The oldest torch that a project with these features needs."""
    floors = [TORCH_FLOORS["base"], *(TORCH_FLOORS.get(f, "0") for f in features)]
    return max(floors, key=version_tuple)


def all_features() -> list[str]:
    """scaffold's feature names, in its order."""
    from scaffold.features import FEATURES

    return [f.name for f in FEATURES]


def render(root: Path, features: list[str]) -> Path:
    """Generate a project with these features (and those they require) under root."""
    from scaffold.generate import build_project
    from scaffold.spec import ProjectSpec

    spec = ProjectSpec.create("proj", set(features))
    project = root / "proj"
    for relative, text in build_project(spec).items():
        path = project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return project


def run(python: str, project: Path, args: list[str], timeout: float) -> str | None:
    """Run train.py; None if it exited 0, else its last line of output."""
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(project)}
    try:
        result = subprocess.run([python, "train.py", *args], cwd=project, env=env,
                                capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    if result.returncode == 0:
        return None
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit {result.returncode}"


def check_feature(python: str, row: str, timeout: float) -> dict[str, str]:
    """{"fast_dev_run": ..., "resume": ...}, each "ok", "n/a (...)" or "fails: ...",
    of a feature (or "base", or a row of VARIANTS)."""
    feature, variant_args = VARIANTS.get(row, (row, []))
    features = [] if feature == "base" else [feature]
    extra = EXTRAS.get(feature)
    if extra and subprocess.run([python, "-c", f"import {extra}"],
                                capture_output=True).returncode != 0:
        return {"fast_dev_run": f"n/a (no {extra})", "resume": f"n/a (no {extra})"}
    with tempfile.TemporaryDirectory() as tmp:
        project = render(Path(tmp), features)
        accumulate = "accumulate" in features
        args = [*SHORT, *(["--accumulate-steps", "2"] if accumulate else []),
                *FEATURE_ARGS.get(feature, []), *variant_args]
        # 4 steps an epoch (2 with windows of 2): this step ends mid-epoch
        middle = 1 if accumulate else 2
        fast = run(python, project, [*args, "--fast-dev-run"], timeout)
        out = {"fast_dev_run": "ok" if fast is None else f"fails: {fast}"}
        failed = run(python, project, [*args, "--run-dir", "straight", "--ckpt-every",
                                       str(middle), "--keep-last", "9"], timeout)
        ext = "" if feature == "fsdp" else ".pt"
        start = project / "straight" / "checkpoints" / f"step_{middle:08d}{ext}"
        failed = failed or run(python, project, [*args, "--run-dir", "resumed",
                                                 "--resume", str(start)], timeout)
        if failed:
            out["resume"] = f"fails: {failed}"
            return out
        last = "final.pt" if feature == "fsdp" else "last.pt"
        same = subprocess.run([python, "-c", SAME_WEIGHTS,
                               *(project / run_dir / "checkpoints" / last
                                 for run_dir in ("straight", "resumed"))],
                              capture_output=True, text=True)
        out["resume"] = "ok" if same.returncode == 0 else "fails: other weights"
        return out


def make_venv(venv: Path, base_python: str, torch_version: str) -> str:
    """A virtual environment with this torch (and numpy, tensorboard) from the
    package index; its interpreter. Linux wheels of torch from PyPI bring their CUDA
    libraries: several GB."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([base_python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"torch=={torch_version}",
                    "numpy", "tensorboard"], check=True)
    return str(python)


def interpreter(python: str) -> dict[str, str]:
    """The Python and torch versions of an interpreter."""
    code = "import sys, torch; print(sys.version.split()[0], torch.__version__)"
    version, torch_version = subprocess.run([python, "-c", code], capture_output=True,
                                            text=True, check=True).stdout.split()
    return {"python": version, "torch": torch_version}


def short(cell: str) -> str:
    """A result without the rank prefix and the file path of an exception."""
    return re.sub(r" \(/[^)]*\)$", "", cell.replace("[rank0]: ", ""))


def table(results: list[dict]) -> str:
    """A markdown table: a row per feature, a column per (Python, torch); results
    of the same interpreter (several runs of this script) share a column."""
    merged: dict[tuple[str, str], dict] = {}
    for r in results:
        column = merged.setdefault((r["python"], r["torch"]), {**r, "features": {}})
        for feature, cell in r["features"].items():
            # a run with the extra package installed wins over one without
            if feature not in column["features"] or not cell["resume"].startswith("n/a"):
                column["features"][feature] = cell
    results = sorted(merged.values(), key=lambda r: (version_tuple(r["python"]),
                                                      version_tuple(r["torch"])))
    columns = [f"Python {r['python']}, torch {r['torch']}" for r in results]
    known = ["base", *all_features(), *VARIANTS]
    features = sorted({f for r in results for f in r["features"]},
                      key=lambda f: known.index(f) if f in known else len(known))
    lines = ["| feature (floor) | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns)]
    for feature in features:
        cells = []
        for r in results:
            cell = r["features"].get(feature)
            if cell is None:
                cells.append("not run")
            elif cell["fast_dev_run"] == cell["resume"] == "ok":
                cells.append("ok")
            elif cell["fast_dev_run"] == cell["resume"]:
                cells.append(short(cell["fast_dev_run"]))
            else:
                cells.append(f"fast-dev-run: {short(cell['fast_dev_run'])}; "
                             f"resume: {short(cell['resume'])}")
        feature_of_row = VARIANTS.get(feature, (feature,))[0]
        floor = torch_floor([] if feature_of_row == "base" else [feature_of_row])
        lines.append(f"| {feature} (>={floor}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("python", nargs="?", help="the interpreter to run projects with")
    parser.add_argument("--features", nargs="*", help="default: base and every feature")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--table", nargs="*", help="print the table of these results")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    parser.add_argument("--venv", help="make this venv (--base-python, --torch) and use it")
    parser.add_argument("--base-python", default="python3", help="the venv's Python")
    parser.add_argument("--torch", help="the torch version to install into --venv")
    args = parser.parse_args(argv)
    if args.table:
        print(table([json.loads(Path(p).read_text()) for p in args.table]))
        return 0
    if args.venv:
        if not args.torch:
            parser.error("--venv needs --torch VERSION")
        args.python = make_venv(Path(args.venv), args.base_python, args.torch)
    if not args.python:
        parser.error("give an interpreter, --venv, or --table FILES")
    result = {**interpreter(args.python), "features": {}}
    for feature in args.features or ["base", *all_features(), *VARIANTS]:
        result["features"][feature] = check_feature(args.python, feature, args.timeout)
        print(feature, result["features"][feature], flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(table([result]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
