"""Maintainer tool: runs in flight of projects that released scaffolds generated.

    python tools/legacy_runs.py            # (re)make tests/fixtures/legacy/
    python tools/legacy_runs.py 0.3.0=abc1234   # add a release (run at each release)

For each release in RELEASES and each feature set in FEATURE_SETS, this renders a
project with that release's own templates (`git archive` of its commit, run as
that scaffold), puts a user's model in place of the demo (tests/fixtures'
tiny classifier, or the small GAN for --multi-optim), trains it with that
release's own train.py, and keeps the run as a preemption would have left it:
the periodic checkpoint of step IN_FLIGHT_STEP (a mid-epoch one), config.json,
command.txt and the metrics.csv rows up to it. Each fixture is
`<version>/<set>/project/` (with its .scaffold record), `inflight/` (the run
directory, which belongs at project/runs/inflight) and `legacy.json`: which
release, features and command made it, and the step at which the same run,
left alone, ended.

tests/test_legacy_runs.py updates each to the current templates and resumes it
to its end. Never edit the fixtures by hand: their value is that the released
code wrote them. Keep them small (tiny models, few steps).
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
FIXTURES = CHECKOUT / "tests" / "fixtures"
LEGACY = FIXTURES / "legacy"

# version -> the commit whose templates and tool are that release
# (0.1.0 was the version of every commit from the first to the train_utils.py
# split: its last one, and one from before the option renames and TF32, whose
# format and options differ most from today's)
RELEASES = {"0.1.0-early": "9549c2e", "0.1.0": "eb4aa88", "0.2.0": "8b636fa"}
# name -> scaffold new's feature flags
FEATURE_SETS = {
    "base": [],
    "ddp": ["ddp"],
    "amp-ema": ["amp", "ema"],
    "fsdp": ["fsdp"],
    "multi-optim": ["multi-optim"],
    "clip-early-stopping": ["clip", "early-stopping"],
    "slurm": ["slurm"],
}
PROCESSES = {"ddp": 2, "fsdp": 2}  # launched by torchrun; the rest by python
IN_FLIGHT_STEP = 4  # a mid-epoch step of every set below (8 or 16 steps an epoch)
# small and fast: 512 samples, batches of 32 per process, 2 epochs
TRAIN_ARGS = [
    "--n-train", "512", "--n-val", "64", "--n-test", "64", "--batch-size", "32",
    "--max-epochs", "2", "--warmup-steps", "3", "--lr", "0.01", "--min-lr", "0.001",
    "--log-every", "2", "--sanity-val-steps", "0", "--num-workers", "0",
    "--ckpt-every", str(IN_FLIGHT_STEP), "--keep-last", "100",
]  # fmt: skip
RUN_DIR = "runs/inflight"


def user_files(features: list[str]) -> dict[str, Path]:
    """The user's model.py and data.py that replace the demo."""
    if "multi-optim" in features:
        return {"model.py": FIXTURES / "tiny_gan/model.py", "data.py": FIXTURES / "tiny_gan/data.py"}
    return {"model.py": FIXTURES / "tiny_model.py", "data.py": FIXTURES / "tiny_data.py"}


def release_tree(commit: str, into: Path) -> Path:
    """That commit's whole tree (its scaffold package and templates)."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", commit], cwd=CHECKOUT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def train_command(features: list[str], name: str) -> list[str]:
    nproc = PROCESSES.get(name)
    if nproc:
        launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        return [*launch, "train.py", *TRAIN_ARGS, "--dist-timeout-s", "60"]
    return ["train.py", *TRAIN_ARGS]


def cut_in_flight(run_dir: Path, step: int) -> None:
    """Leave run_dir as a preemption right after step `step`'s checkpoint would."""
    checkpoints = run_dir / "checkpoints"
    keep = f"step_{step:08d}"
    for path in checkpoints.iterdir():
        if path.name.split(".")[0] != keep:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    if not any(checkpoints.iterdir()):
        raise SystemExit(f"{run_dir}: no checkpoint of step {step}")
    for name in ("summary.json", "tensorboard"):
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    metrics = run_dir / "metrics.csv"
    with metrics.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, [r for r in reader if int(r["step"]) <= step]
    with metrics.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def make_fixture(
    version: str, commit: str, name: str, source: Path, work: Path
) -> Path | None:
    features = FEATURE_SETS[name]
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1"}
    flags = [f"--{feature}" for feature in features]
    made = subprocess.run(
        [sys.executable, "-m", "scaffold", "new", "legacy", "--yes", *flags],
        cwd=work, env=env, capture_output=True, text=True,
    )
    if made.returncode != 0:  # a feature that release did not have
        print(f"{version} {name}: skipped ({made.stderr.strip()})")
        return None
    project = work / "legacy"
    for target, path in user_files(features).items():
        shutil.copyfile(path, project / target)
    command = train_command(features, name)
    if "multi-optim" in features:
        # the GAN demo's validation metric is not the user's: name theirs (the
        # option's name then depended on the release)
        renamed = "monitor_metric" in (project / "train.py").read_text()
        command += ["--monitor-metric" if renamed else "--monitor", "val_radius"]
    env.pop("PYTHONPATH")
    result = subprocess.run(
        [sys.executable, *command, "--run-dir", RUN_DIR],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0:
        raise SystemExit(f"{version} {name}: training failed\n{result.stdout}\n{result.stderr}")
    run_dir = project / RUN_DIR
    final_step = json.loads((run_dir / "summary.json").read_text())["step"]
    cut_in_flight(run_dir, IN_FLIGHT_STEP)
    for cache in project.rglob("__pycache__"):
        shutil.rmtree(cache)
    record = {
        "version": version,
        "commit": commit,
        "features": features,
        "command": " ".join(["python", *command, "--run-dir", RUN_DIR]),
        "in_flight_step": IN_FLIGHT_STEP,
        "uninterrupted_final_step": final_step,
    }
    # the run beside the project, not in it: the project's .gitignore has runs/
    target = LEGACY / version / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.move(run_dir, target / "inflight")
    shutil.rmtree(project / "runs", ignore_errors=True)
    shutil.copytree(project, target / "project")
    (target / "legacy.json").write_text(json.dumps(record, indent=2) + "\n")
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("releases", nargs="*", help="VERSION=COMMIT (default: RELEASES)")
    args = parser.parse_args()
    releases = dict(item.split("=", 1) for item in args.releases) or RELEASES
    with tempfile.TemporaryDirectory() as tmp:
        for version, commit in releases.items():
            source = release_tree(commit, Path(tmp) / f"src-{version}")
            for name in FEATURE_SETS:
                work = Path(tmp) / version / name
                work.mkdir(parents=True)
                target = make_fixture(version, commit, name, source, work)
                if target is not None:
                    print(f"{version} {name}: {target.relative_to(CHECKOUT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
