"""Exact resume, crash safety and stop signals of the generated loop (issue 3, proofs 1, 3, 4).

Every run here is its own `python train.py` process: what a resumed run knows, it
read from the checkpoint. The model has dropout (tests/fixtures/tiny_model_probe.py
with --dropout), so a resume that did not restore the RNG state, the optimizer, the
schedule position or the place inside the epoch ends with different weights.
"""

import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    TINY_ARGS,
    assert_identical,
    ckpt,
    load_checkpoint,
    read_metrics,
    read_summary,
    render_probe,
    rows_after,
    run_train,
    train_env,
)

# 10 batches per epoch, 3 epochs: N = 30 steps; a periodic checkpoint at step 15
# (epoch 1, batch 5: mid-epoch), metrics rows every 5 steps (15 and 20 are rows)
BASE_ARGS = shlex.split(
    "--n-train 320 --max-epochs 3 --ckpt-every 15 --log-every 5 --dropout 0.1"
)
# windows of 3 micro-batches: 3, 3, 3, 1 per epoch, so 4 steps per epoch and 12
# in all; step 6 is mid-epoch (epoch 1, batch 6); bf16 autocast on the CPU
COMBO_ARGS = shlex.split(
    "--n-train 320 --max-epochs 3 --accumulate-steps 3 --ckpt-every 6 --log-every 3"
    " --dropout 0.1 --amp-dtype bf16 --clip-norm 0.5"
)

def assert_same_ending(project: Path, run: str, reference: str, after: int) -> None:
    """Bit-identical final weights and optimizer; the same rows after `after`."""
    assert_identical(
        ckpt(project, run)["model"], ckpt(project, reference)["model"], "model"
    )
    assert_identical(
        ckpt(project, run)["optimizer"],
        ckpt(project, reference)["optimizer"],
        "optimizer",
    )
    rows = rows_after(project, run, after)
    assert rows and rows == rows_after(project, reference, after)
    assert read_summary(project / "runs" / run) == read_summary(
        project / "runs" / reference
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The base project, with the uninterrupted run `full` done."""
    project = render_probe(tmp_path_factory.mktemp("resume"))
    run_train(project, *BASE_ARGS, "--run-dir", "runs/full")
    assert ckpt(project, "full")["train_state"]["step"] == 30
    return project


# -----------------------------------------------------------------------------
# proof 1: N steps straight == resume from the mid-epoch checkpoint at N/2


def test_resume_from_mid_epoch_checkpoint_is_bit_identical(base):
    start = ckpt(base, "full", "step_00000015")
    assert (start["train_state"]["step"], start["train_state"]["batch_in_epoch"]) == (15, 5)
    result = run_train(
        base,
        *BASE_ARGS,
        "--run-dir",
        "runs/resumed",
        "--resume",
        "runs/full/checkpoints/step_00000015.pt",
    )
    assert "at step 15 (epoch 1, batch 5)" in result.stdout
    assert_same_ending(base, "resumed", "full", after=15)


def test_resume_with_bf16_accumulation_and_clipping_is_bit_identical(tmp_path):
    project = render_probe(tmp_path, ["amp", "clip", "accumulate"])
    run_train(project, *COMBO_ARGS, "--run-dir", "runs/full")
    rows = [r for r in read_metrics(project / "runs" / "full") if r["split"] == "train"]
    assert max(float(r["grad_norm"]) for r in rows) > 0.5  # clipping was active
    start = ckpt(project, "full", "step_00000006")
    assert (start["train_state"]["step"], start["train_state"]["batch_in_epoch"]) == (6, 6)
    result = run_train(
        project,
        *COMBO_ARGS,
        "--run-dir",
        "runs/resumed",
        "--resume",
        "runs/full/checkpoints/step_00000006.pt",
    )
    assert "at step 6 (epoch 1, batch 6)" in result.stdout
    assert_same_ending(project, "resumed", "full", after=6)


# -----------------------------------------------------------------------------
# proof 3: SIGKILL while a checkpoint is written

# Runs train.py with torch.save replaced: the save of a file whose name contains
# $CRASH_ON writes half of its bytes, then the process kills itself with SIGKILL.
CRASH_WRAPPER = """
import io, os, runpy, signal, sys, torch
real_save = torch.save
def save(obj, f, *args, **kwargs):
    if os.environ["CRASH_ON"] in str(f):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        with open(f, "wb") as out:
            out.write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = save
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def test_kill_during_checkpoint_write_leaves_previous_ones_and_auto_resume_continues(
    base,
):
    argv = [*TINY_ARGS, *BASE_ARGS, "--run-dir", "runs/crash"]
    killed = subprocess.run(
        [sys.executable, "-c", CRASH_WRAPPER, *argv],
        check=False,
        cwd=base,
        capture_output=True,
        text=True,
        timeout=300,
        env=train_env({"CRASH_ON": "step_00000030"}),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    checkpoints = base / "runs" / "crash" / "checkpoints"
    # the interrupted save never took the checkpoint's name; all named ones load
    assert not (checkpoints / "step_00000030.pt").exists()
    names = sorted(p.name for p in checkpoints.glob("*.pt"))
    assert names == ["best.pt", "last.pt", "step_00000015.pt"]
    steps = {name: load_checkpoint(checkpoints / name)["train_state"]["step"] for name in names}
    assert steps["last.pt"] == 20  # end of epoch 2
    # and a truncated file that claims to be the newest
    data = (checkpoints / "last.pt").read_bytes()
    (checkpoints / "step_99999999.pt").write_bytes(data[: len(data) // 2])

    result = run_train(base, *BASE_ARGS, "--run-dir", "runs/crash", "--resume", "auto")
    assert "ignoring unreadable step_99999999.pt" in result.stdout
    assert (
        "resume: runs/crash/checkpoints/last.pt at step 20 (epoch 2, batch 0)"
        in result.stdout
    )
    assert_same_ending(base, "crash", "full", after=0)


# -----------------------------------------------------------------------------
# proof 4: SIGTERM mid-run


def test_sigterm_saves_last_and_auto_resume_ends_like_an_uninterrupted_run(base):
    run_dir = base / "runs" / "sigterm"
    argv = [
        sys.executable,
        "train.py",
        *TINY_ARGS,
        *BASE_ARGS,
        "--run-dir",
        "runs/sigterm",
    ]
    # 0.1 s per training batch: 3 s of training, signalled after the first row
    process = subprocess.Popen(
        argv,
        cwd=base,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=train_env({"PROBE_SLEEP": "0.1"}),
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "metrics.csv").exists() or not read_metrics(run_dir):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "resume with: python train.py --resume auto --run-dir runs/sigterm" in out
    stopped = ckpt(base, "sigterm")["train_state"]["step"]
    assert 5 <= stopped < 30
    assert f"stopped at step {stopped}" in out

    result = run_train(
        base, *BASE_ARGS, "--run-dir", "runs/sigterm", "--resume", "auto"
    )
    assert f"at step {stopped}" in result.stdout
    assert_identical(
        ckpt(base, "sigterm")["model"], ckpt(base, "full")["model"], "model"
    )
    assert read_summary(run_dir) == read_summary(base / "runs" / "full")
