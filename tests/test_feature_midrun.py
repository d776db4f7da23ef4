"""A feature added or removed in the middle of a run: the run resumes to its end.

A project trains part of a run (stopped by --max-steps, which leaves last.pt and
a config.json as a preemption would); then `scaffold add` or `scaffold remove`
changes its features, and `--resume auto` continues the run with the new code.
The state of a new feature starts fresh and that of a removed one is dropped,
each said in one line; where resuming cannot make sense (one optimizer into
several, files into shards and back) one line says why, with no traceback.

Every feature is covered: the single-process ones in two groups (added all at
once to a base run, removed all at once from a run that had them), the
trackers, ddp, and the four refusals (fsdp and multi-optim, each way).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import read_summary, render, run_torchrun, run_train, train_env

REPO = Path(__file__).resolve().parent.parent
# every feature that runs in one process and keeps state or options of its own
SOLO = ["amp", "ema", "early-stopping", "clip", "accumulate", "debug", "tensorboard", "slurm"]
TRACKERS = ["wandb", "mlflow"]
TRACKER_ENV = {"WANDB_SILENT": "true", "WANDB_MODE": "offline"}
PART = ["--run-dir", "runs/a", "--max-steps", "6"]
REST = ["--run-dir", "runs/a", "--resume", "auto", "--max-steps", "-1"]


def scaffold(project: Path, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scaffold", *args, "--allow-dirty"],
        cwd=project, capture_output=True, text=True, timeout=120,
        env=train_env({"PYTHONPATH": str(REPO)}),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def resume_lines(output: str) -> str:
    return "\n".join(line for line in output.splitlines() if line.startswith("resume"))


def assert_ran_to_the_end(project: Path, output: str) -> None:
    assert "at step 6 " in output, output
    assert "Traceback" not in output
    summary = read_summary(project / "runs" / "a")
    assert summary["step"] > 6 and "test_loss" in summary, summary


def test_features_added_mid_run(tmp_path: Path) -> None:
    project = render(tmp_path, [])
    run_train(project, *PART)
    scaffold(project, "add", *SOLO)
    result = run_train(project, *REST)
    lines = resume_lines(result.stdout)
    print("\nadded " + " ".join(SOLO) + ":\n" + lines)
    assert_ran_to_the_end(project, result.stdout)
    # their state, fresh: the loss scaler, the average, the patience count
    assert "a new loss scaler (--amp is new to this run)" in lines
    assert "the average, of the current weights (--ema is new to this run)" in lines
    assert "bad_validations 0" in lines
    # their options, at the defaults (none of the run's own changed)
    for option in ("amp_dtype", "ema_decay", "patience", "clip_norm", "accumulate_steps"):
        assert option in lines, option
    assert "dropped" not in lines


def test_features_removed_mid_run(tmp_path: Path) -> None:
    project = render(tmp_path, [*SOLO, "compile"])
    run_train(project, *PART)
    scaffold(project, "remove", *SOLO, "compile")
    result = run_train(project, *REST)
    lines = resume_lines(result.stdout)
    print("\nremoved " + " ".join([*SOLO, "compile"]) + ":\n" + lines)
    assert_ran_to_the_end(project, result.stdout)
    dropped = next(line for line in lines.splitlines() if "of features this train.py lacks" in line)
    for part in ("scaler", "ema", "bad_validations"):
        assert part in dropped, dropped
    options = next(line for line in lines.splitlines() if "no longer options" in line)
    for option in ("amp_dtype", "ema_decay", "patience", "clip_norm", "compile_mode"):
        assert option in options, options


@pytest.mark.parametrize("change", ["add", "remove"])
def test_trackers_added_or_removed_mid_run(tmp_path: Path, change: str) -> None:
    offline = ["--wandb-mode", "offline"]  # an option of the tracker's code only
    project = render(tmp_path, [] if change == "add" else TRACKERS)
    run_train(project, *PART, *(offline if change == "remove" else []), env=TRACKER_ENV)
    scaffold(project, change, *TRACKERS)
    result = run_train(project, *REST, *(offline if change == "add" else []), env=TRACKER_ENV)
    lines = resume_lines(result.stdout)
    print(f"\n{change} {' '.join(TRACKERS)}:\n{lines}")
    assert_ran_to_the_end(project, result.stdout)
    for field in ("wandb_run_id", "mlflow_run_id"):
        assert field in lines, lines  # a new tracker run, or the old one's id dropped
    if change == "add":  # the new W&B run logged the rest of the training
        assert (project / "runs" / "a" / "wandb_run_id").is_file()


def test_ddp_added_then_removed_mid_run(tmp_path: Path) -> None:
    project = render(tmp_path, [])
    run_train(project, *PART)
    scaffold(project, "add", "ddp")
    result = run_torchrun(project, 2, *REST[:-2], "--max-steps", "10")
    print("\nadded ddp:\n" + resume_lines(result.stdout))
    assert "saved by 1 ranks, running 2: RNG streams start afresh" in result.stdout
    assert "at step 6 " in result.stdout
    scaffold(project, "remove", "ddp")
    result = run_train(project, *REST)
    print("removed ddp:\n" + resume_lines(result.stdout))
    assert "saved by 2 processes, running one: RNG streams start afresh" in result.stdout
    assert "at step 10 " in result.stdout
    assert read_summary(project / "runs" / "a")["step"] > 10


@pytest.mark.parametrize(
    ("before", "after", "says"),
    [
        ([], ["multi-optim"], "saved with one optimizer, whose state does not divide"),
        (["multi-optim"], [], "saved with an optimizer per part of the model"),
        ([], ["fsdp"], "a checkpoint of the run without --fsdp, which --fsdp cannot continue"),
        (["fsdp"], [], "holds directories of shards, of a run begun sharded"),
    ],
    ids=["add-multi-optim", "remove-multi-optim", "add-fsdp", "remove-fsdp"],
)
def test_a_resume_that_cannot_make_sense_says_why(
    tmp_path: Path, before: list[str], after: list[str], says: str
) -> None:
    gan = "multi-optim" in before + after  # the GAN demo: the model two optimizers need
    project = render(tmp_path, before, tiny=not gan)
    small = ["--n-train", "256", "--batch-size", "64", "--max-epochs", "1"] if gan else []
    if before == ["fsdp"]:
        run_torchrun(project, 2, *PART)
    else:
        run_train(project, *small, *PART, tiny_defaults=not gan)
    scaffold(project, "add" if after else "remove", *(after or before))
    if after == ["fsdp"]:
        result = run_torchrun(project, 2, *REST, check=False)
    else:
        result = run_train(project, *REST, check=False, tiny_defaults=not gan)
    assert result.returncode != 0
    # train.py's one line (torchrun adds its own report of the failed rank)
    assert 'train.py", line' not in result.stderr, result.stderr
    assert says in result.stderr, result.stderr
    config = json.loads((project / "runs" / "a" / "config.json").read_text())
    assert config["max_steps"] == 6  # nothing of the run was overwritten
