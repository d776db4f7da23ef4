"""Runs in flight survive the code changing under them, for every released version.

tests/fixtures/legacy/<version>/<set>/ (made by tools/legacy_runs.py, never by
hand) holds a project that release generated, with a user's model in place of
the demo, and a run of it that release's train.py left in flight: a mid-epoch
periodic checkpoint, config.json and metrics.csv. Each is updated to the
current templates with `scaffold update`, as its user would, and resumed with
`--resume auto` and no other option: the run takes its options from its own
record and must end where the same run, left alone, ended under the old code.

What each resume printed is shown with `pytest -s`.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import FIXTURES, load_checkpoint, read_summary, train_env

LEGACY = FIXTURES / "legacy"
CASES = sorted(
    f"{path.parent.name}/{path.name}" for path in LEGACY.glob("*/*") if path.is_dir()
)
RELEASED = sorted({case.split("/")[0] for case in CASES})


def git(project: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=u", "-c", "user.email=u@example.com", *args],
        cwd=project, check=True, capture_output=True,
    )  # fmt: skip


def checkout(case: str, root: Path) -> tuple[Path, dict]:
    """The fixture's project in root, under git as a user keeps it, its run in
    flight at runs/inflight; and its legacy.json."""
    fixture = LEGACY / case
    project = root / "legacy"
    shutil.copytree(fixture / "project", project)
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "as generated, with my model")
    shutil.copytree(fixture / "inflight", project / "runs" / "inflight")
    return project, json.loads((fixture / "legacy.json").read_text())


def scaffold(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scaffold", *args],
        cwd=project, capture_output=True, text=True, timeout=120,
        env=train_env({"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}),
    )  # fmt: skip


def resume(project: Path, record: dict, *args: str, check: bool = True):
    """The run's own launch (torchrun for several processes), with only
    --resume auto and the run directory: every other option is the record's."""
    launch = [sys.executable]
    if "--nproc_per_node=2" in record["command"]:
        launch += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    argv = [*launch, "train.py", "--resume", "auto", "--run-dir", "runs/inflight", *args]
    result = subprocess.run(
        argv, cwd=project, capture_output=True, text=True, timeout=300, env=train_env()
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def test_every_release_has_fixtures() -> None:
    # the releases named in the maintainer tool are all here, each with its sets
    from tools.legacy_runs import FEATURE_SETS, RELEASES

    assert RELEASED == sorted(RELEASES)
    for version in RELEASES:
        sets = {case.split("/")[1] for case in CASES if case.startswith(f"{version}/")}
        assert {"base", "ddp", "multi-optim"} <= sets <= set(FEATURE_SETS), version


@pytest.mark.parametrize("case", CASES)
def test_updated_project_resumes_its_run_to_the_end(tmp_path: Path, case: str) -> None:
    project, record = checkout(case, tmp_path)
    updated = scaffold(project, "update")
    assert updated.returncode == 0, updated.stdout + updated.stderr
    conflicts = [line for line in updated.stdout.splitlines() if line.startswith("conflict")]
    assert not conflicts, updated.stdout
    # the user's model is still theirs
    assert (project / "model.py").read_text() == (
        LEGACY / case / "project" / "model.py"
    ).read_text()

    result = resume(project, record)
    step = record["in_flight_step"]
    assert f"at step {step} " in result.stdout, result.stdout
    summary = read_summary(project / "runs" / "inflight")
    assert summary["step"] == record["uninterrupted_final_step"], summary
    lines = [line for line in result.stdout.splitlines() if line.startswith("resume")]
    print(f"\n{case} ({' '.join(record['features']) or 'base'}):", *lines, sep="\n  ")
    # the run went on with its own options, renamed ones under their new name
    # (monitor -> monitor_metric), whatever today's defaults are
    began = json.loads((LEGACY / case / "inflight" / "config.json").read_text())
    config = json.loads((project / "runs" / "inflight" / "config.json").read_text())
    renamed = {"monitor": "monitor_metric"}
    for name, value in began.items():
        if name not in ("resume", "resume_anyway"):
            assert config[renamed.get(name, name)] == value, name
    if "tf32" not in began:  # begun before the option: TF32 stays off, as then
        assert config["tf32"] is False


def test_a_checkpoint_newer_than_the_code_says_so(tmp_path: Path) -> None:
    project, record = checkout("0.2.0/base", tmp_path)
    assert scaffold(project, "update").returncode == 0
    checkpoint = next((project / "runs" / "inflight" / "checkpoints").glob("*.pt"))
    saved = load_checkpoint(checkpoint)
    torch.save({**saved, "format": 99}, checkpoint)
    result = resume(project, record, check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "checkpoint format 99, newer than this train.py reads" in line, result.stderr


def test_renamed_option_reads_from_an_old_command_line(tmp_path: Path) -> None:
    # a job submitted before the rename runs its command line with today's code
    project, record = checkout("0.1.0-early/clip-early-stopping", tmp_path)
    assert scaffold(project, "update").returncode == 0
    resume(project, record, "--monitor", "val_loss", "--resume-anyway")
    config = json.loads((project / "runs" / "inflight" / "config.json").read_text())
    assert config["monitor_metric"] == "val_loss" and "monitor" not in config
