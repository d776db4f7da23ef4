"""Tests of this project's training loop: run them with `python -m pytest`.

They run train.py for real, on the CPU, with a model and data small enough to take
seconds. Keep them passing as you edit the loop: they catch the classic bugs of
hand-written training code (a resumed run that silently differs from an
uninterrupted one).
"""

import os
import subprocess
import sys
from pathlib import Path

import torch

PROJECT = Path(__file__).resolve().parent.parent

# a model and data set small enough for a test; any option of train.py works here
SMALL = (
    "--n-train 384 --n-val 64 --n-test 64 --d-model 32 --n-layers 1 --n-heads 2 "
    "--batch-size 32 --max-epochs 2 --warmup-steps 2 --log-every 4 "
    "--sanity-val-steps 0 --ckpt-every 0"
).split()


def run(*args: str, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, *launcher, "train.py", *SMALL, *args]
    result = subprocess.run(
        command, cwd=PROJECT, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    return checkpoint["model"]


def test_fast_dev_run_writes_nothing(tmp_path):
    run("--fast-dev-run", "--run-dir", str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_training_writes_checkpoints_metrics_and_summary(tmp_path):
    run("--run-dir", str(tmp_path))
    for name in (
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "metrics.csv",
        "summary.json",
        "config.json",
    ):
        assert (tmp_path / name).is_file(), name


def test_resume_mid_epoch_is_exact(tmp_path):
    # 12 batches per epoch, 24 steps: step 6 is in the middle of the first epoch
    run(
        "--run-dir", str(tmp_path / "straight"), "--ckpt-every", "6", "--keep-last", "9"
    )
    middle = tmp_path / "straight" / "checkpoints" / "step_00000006.pt"
    run("--run-dir", str(tmp_path / "resumed"), "--resume", str(middle))
    straight = final_weights(tmp_path / "straight")
    resumed = final_weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
