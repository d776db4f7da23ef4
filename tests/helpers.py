"""Shared helpers of the test suite: render projects, run their train.py, read results."""

import ast
import csv
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import scaffold.render
from scaffold.generate import build_project
from scaffold.manifest import manifest_files
from scaffold.spec import ProjectSpec

FIXTURES = Path(__file__).parent / "fixtures"

# Small, fast defaults for runs of the tiny model (each overridable by later args).
TINY_ARGS = [
    "--n-train", "512", "--n-val", "96", "--n-test", "96",
    "--batch-size", "32", "--max-epochs", "2", "--warmup-steps", "3",
    "--lr", "0.05", "--min-lr", "0.005", "--log-every", "4",
    "--sanity-val-steps", "0", "--ckpt-every", "0",
]


def write_files(root: Path, files: dict[str, str]) -> Path:
    """Write {relative path: text} under root."""
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def render(root: Path, features=(), name: str = "proj", tiny: bool = True) -> Path:
    """Generate a project (with its .scaffold record) into root/name.

    With tiny=True the demo model.py/data.py are replaced by the tiny MLP fixtures,
    which plug in through the same contract and train in milliseconds.
    """
    spec = ProjectSpec.create(name, set(features))
    files = build_project(spec)
    project = write_files(root / name, {**files, **manifest_files(spec, files)})
    if tiny:
        (project / "model.py").write_text((FIXTURES / "tiny_model.py").read_text())
        (project / "data.py").write_text((FIXTURES / "tiny_data.py").read_text())
    return project


_RENDERS: dict[tuple[str, ProjectSpec], dict[str, str]] = {}


def cached_build(spec: ProjectSpec, template_dir: Path | None = None) -> dict[str, str]:
    """build_project, memoized per (template root, spec): renders cost ~0.1-0.3 s.
    The update tests patch scaffold.update.plan.build_project with it."""
    root = template_dir or scaffold.render.template_root()
    key = (str(root), spec)
    if key not in _RENDERS:
        _RENDERS[key] = build_project(spec, root)
    return dict(_RENDERS[key])


def train_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for generated runs: one thread per process (tests run in parallel)."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    env.update(extra or {})
    return env


def run_train(project: Path, *args: str, tiny_defaults: bool = True, check: bool = True,
              timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python train.py ARGS` in the project; fail with its output when check fails."""
    argv = [sys.executable, "train.py", *(TINY_ARGS if tiny_defaults else []), *args]
    result = subprocess.run(argv, cwd=project, capture_output=True, text=True,
                            timeout=timeout, env=train_env(env))
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}\n"
                             f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result


def run_torchrun(project: Path, nproc: int, *args: str, tiny_defaults: bool = True,
                 check: bool = True, timeout: float = 300, launcher_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `torchrun --standalone --nproc_per_node=N train.py ARGS` in the project."""
    argv = [sys.executable, "-m", "torch.distributed.run", *(launcher_args or ("--standalone",)),
            f"--nproc_per_node={nproc}", "train.py", *(TINY_ARGS if tiny_defaults else []), *args]
    result = subprocess.run(argv, cwd=project, capture_output=True, text=True,
                            timeout=timeout, env=train_env(env))
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}\n"
                             f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result


def load_checkpoint(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def render_probe(root: Path, features=(), name: str = "proj") -> Path:
    """Like render(), with the instrumented probe fixtures as model.py/data.py.

    Batches carry split/sample tags; PROBE_LOG, PROBE_SLEEP and PROBE_LOSS_MUL in the
    environment of a run switch on its record, slow it down, scale its loss (see
    tests/fixtures/tiny_model_probe.py).
    """
    project = render(root, features, name=name)
    (project / "model.py").write_text((FIXTURES / "tiny_model_probe.py").read_text())
    (project / "data.py").write_text((FIXTURES / "tiny_data_probe.py").read_text())
    return project


def config_options(*sources: str | ast.Module) -> list[str]:
    """The command-line flags of a project's Config fields, and those its parser adds
    by name (--config, which is no Config field), from train.py and train_utils.py
    (each the text or the parsed tree; either may be left out)."""
    trees = [ast.parse(s) if isinstance(s, str) else s for s in sources]
    flags = []
    for tree in trees:
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name in ("parse_config",
                                                                   "parse_dataclass"):
                flags += [call.args[0].value for call in ast.walk(node)
                          if isinstance(call, ast.Call)
                          and isinstance(call.func, ast.Attribute)
                          and call.func.attr == "add_argument" and call.args
                          and isinstance(call.args[0], ast.Constant)]
            if isinstance(node, ast.ClassDef) and node.name == "Config":
                for field in node.body:
                    if isinstance(field, ast.AnnAssign):
                        flag = "--" + field.target.id.replace("_", "-")
                        flags.append(flag)
                        if ast.unparse(field.annotation) == "bool":
                            flags.append("--no-" + flag[2:])
    return flags


@functools.cache
def reaches_the_script(flag: str) -> bool:
    """Whether torchrun's own parser hands `flag value` on to the script."""
    from torch.distributed.run import get_args_parser

    argv = ["--standalone", "--nproc_per_node=2", "train.py", flag, "1"]
    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:  # torchrun took it for one of its own options, and failed
        return False
    return args.training_script_args == [flag, "1"]


# The engine comparisons (test_ddp.py, test_fsdp.py), in a project rendered with
# --amp --clip --accumulate: every feature's effect off, then one case per feature
# that turns it back on (later options win).
PLAIN = ["--accumulate-steps", "1", "--clip-norm", "0", "--amp-dtype", "off"]


def feature_cases(accumulate: int, clip_norm: float) -> dict[str, list[str]]:
    """The options of each case, given after PLAIN."""
    return {
        "plain": [],
        "accumulate": ["--accumulate-steps", str(accumulate)],
        "clip": ["--clip-norm", str(clip_norm)],
        "bf16": ["--amp-dtype", "bf16"],
    }


# resume tests: what must be bit-identical between a straight and a resumed run
TIMING = {"samples_per_s", "tokens_per_s", "mfu", "peak_mem_gb"}  # differ between any two runs


def ckpt(project: Path, run: str, name: str = "last") -> dict:
    return load_checkpoint(project / "runs" / run / "checkpoints" / f"{name}.pt")


def assert_identical(a, b, where: str = "") -> None:
    """Nested dicts/lists/tuples of tensors and plain values are exactly equal."""
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}/{i}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def rows_after(project: Path, run: str, step: int) -> list[dict[str, str]]:
    """metrics.csv rows logged after `step`, without the timing columns."""
    return [
        {k: v for k, v in row.items() if k not in TIMING}
        for row in read_metrics(project / "runs" / run)
        if int(row["step"]) > step
    ]
