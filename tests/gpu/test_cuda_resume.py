"""Exact resume on a CUDA GPU, as tests/test_resume.py proves it on the CPU.

With --deterministic, K steps in one run end with bit-identical weights to K/2
steps, a stop, and `--resume auto` on to K: the checkpoint carries the CUDA
generators' state (dropout draws on the GPU), the optimizer, the schedule's
position and the place inside the epoch. Each run is its own `python train.py`
process. The stops: SIGKILL right after the mid-run checkpoint is written (so
the first run ends at exactly K/2 with the same options as the straight one),
and SIGTERM while training on cuda:0 (train.py saves last.pt and exits 130).
"""

import math
import re
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
    render,
    render_probe,
    rows_after,
    run_train,
    train_env,
)

try:  # collection must work without torch, and without a GPU
    import torch
except ImportError:  # pragma: no cover - the test extras hold torch
    torch = None

pytestmark = pytest.mark.skipif(
    torch is None or not torch.cuda.is_available(), reason="no CUDA GPU"
)

# Runs train.py with os.replace wrapped: once the file whose name contains
# $KILL_AFTER has taken its name (atomic_save's last act), the process kills
# itself with SIGKILL -- a run stopped right after that checkpoint.
KILL_WRAPPER = """
import os, runpy, signal, sys
real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    if os.environ["KILL_AFTER"] in str(dst):
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""

# the tiny MLP of tests/fixtures with dropout: 10 batches per epoch, 3 epochs,
# 30 steps; the checkpoint at step 15 is mid-epoch (epoch 1, batch 5)
TINY = [
    *TINY_ARGS, "--n-train", "320", "--max-epochs", "3", "--ckpt-every", "15",
    "--log-every", "5", "--dropout", "0.1",
]
# the demo transformer with dropout (attention and residual): 25 batches per
# epoch, 40 steps; the checkpoint at step 20 is mid-epoch, and the resumed run
# crosses the end of epoch 0 (validation, best.pt)
DEMO = [
    "--n-train", "3200", "--n-val", "512", "--n-test", "512", "--batch-size", "128",
    "--max-steps", "40", "--ckpt-every", "20", "--log-every", "10", "--dropout", "0.1",
    "--sanity-val-steps", "0",
]
CASES = {"tiny": (TINY, 15, 30), "demo": (DEMO, 20, 40)}

def assert_same_ending(project: Path, run: str, reference: str, rows_after_step=None) -> None:
    """Bit-identical final weights and optimizer state, the same summary; and the
    same metrics rows after `rows_after_step` when given (a step that ends a
    logging interval: an interval cut by the stop averages fewer steps)."""
    final, expected = ckpt(project, run), ckpt(project, reference)
    assert final["train_state"]["step"] == expected["train_state"]["step"]
    assert_identical(final["model"], expected["model"], "model")
    assert_identical(final["optimizer"], expected["optimizer"], "optimizer")
    if rows_after_step is not None:
        rows = rows_after(project, run, rows_after_step)
        assert rows and rows == rows_after(project, reference, rows_after_step)
    summary = read_summary(project / "runs" / run)
    assert summary == read_summary(project / "runs" / reference)
    assert all(math.isfinite(v) for v in summary.values() if isinstance(v, float))


@pytest.mark.parametrize("case", list(CASES))
def test_k_steps_straight_equal_k_half_then_resume_auto_bitwise(tmp_path, case):
    args, half, total = CASES[case]
    project = render_probe(tmp_path) if case == "tiny" else render(tmp_path, tiny=False)
    args = [*args, "--device", "cuda", "--deterministic"]
    run_train(project, *args, "--run-dir", "runs/full", tiny_defaults=False)
    assert ckpt(project, "full")["train_state"]["step"] == total

    killed = subprocess.run(
        [sys.executable, "-c", KILL_WRAPPER, *args, "--run-dir", "runs/resumed"],
        cwd=project, capture_output=True, text=True, timeout=300,
        env=train_env({"KILL_AFTER": f"step_{half:08d}.pt"}),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:] + killed.stderr[-3000:]
    newest = max(
        load_checkpoint(p)["train_state"]["step"]
        for p in (project / "runs" / "resumed" / "checkpoints").glob("*.pt")
    )
    assert newest == half  # it stopped at K/2

    result = run_train(
        project, *args, "--run-dir", "runs/resumed", "--resume", "auto", tiny_defaults=False
    )
    assert f"checkpoints/step_{half:08d}.pt at step {half}" in result.stdout, result.stdout
    assert_same_ending(project, "resumed", "full", rows_after_step=half)


def test_sigterm_on_cuda0_saves_last_and_auto_resume_ends_like_a_straight_run(tmp_path):
    project = render_probe(tmp_path)
    args = [*TINY, "--device", "cuda:0", "--deterministic"]
    run_train(project, *args, "--run-dir", "runs/full", tiny_defaults=False)

    run_dir = project / "runs" / "sigterm"
    # 0.1 s per training batch: 3 s of training, signalled after the first row
    process = subprocess.Popen(
        [sys.executable, "train.py", *args, "--run-dir", "runs/sigterm"],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=train_env({"PROBE_SLEEP": "0.1"}),
    )
    try:
        deadline = time.monotonic() + 180
        while not (run_dir / "metrics.csv").exists() or not read_metrics(run_dir):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, out[-3000:] + err[-3000:]
    assert re.search(r"^(?:world size 1 on|device) cuda:0;", out, re.MULTILINE), out
    assert "resume with: python train.py --resume auto --run-dir runs/sigterm" in out
    stopped = ckpt(project, "sigterm")["train_state"]["step"]
    assert 5 <= stopped < 30 and f"stopped at step {stopped}" in out

    result = run_train(
        project, *args, "--run-dir", "runs/sigterm", "--resume", "auto", tiny_defaults=False
    )
    assert f"at step {stopped}" in result.stdout
    assert_same_ending(project, "sigterm", "full")
