"""Tests of this project's training loop with your model and data: run them with
`python -m pytest tests`.

They run train.py for real, on the CPU, for a few steps of whatever model.py and
data.py hold, with options that every project has. Keep them passing as you change
the model, the data or the loop: they catch the classic bugs of hand-written
training code (a resumed run that silently differs from an uninterrupted one, a
multi-process run that does not match one process).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

PROJECT = Path(__file__).resolve().parent.parent

# A few steps of the real model: 4 batches an epoch, 2 epochs.
SHORT = (
    "--batch-size 8 --limit-train-batches 4 --limit-val-batches 2 "
    "--limit-test-batches 2 --max-epochs 2 --warmup-steps 2 --log-every 2 "
    "--accumulate-steps 2 "
    "--wandb-mode offline "  # W&B runs of the tests stay in their run directories
    "--sanity-val-steps 0 --ckpt-every 0"
).split()
# 2 steps an epoch (2 micro-batches each): step 1 ends in the middle of the first
MIDDLE = 1


def run(*args: str, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, *launcher, "train.py", *SHORT, *args]
    result = subprocess.run(
        command, cwd=PROJECT, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)
    return checkpoint["model"]


def test_fast_dev_run_writes_nothing(tmp_path):
    run("--fast-dev-run", "--run-dir", str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_training_writes_checkpoints_metrics_and_summary(tmp_path):
    run("--run-dir", str(tmp_path))
    for name in (
        "checkpoints/last/meta.pt",
        "checkpoints/final.pt",
        "checkpoints/best.pt",
        "metrics.csv",
        "summary.json",
        "config.json",
    ):
        assert (tmp_path / name).is_file(), name
    summary = json.loads((tmp_path / "summary.json").read_text())
    for name in ("val_loss", "test_loss"):
        assert math.isfinite(summary[name]), (name, summary[name])


def test_resume_mid_epoch_is_exact(tmp_path):
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    run("--run-dir", str(straight_dir), "--ckpt-every", str(MIDDLE), "--keep-last", "9")
    middle = straight_dir / "checkpoints" / f"step_{MIDDLE:08d}"
    run("--run-dir", str(resumed_dir), "--resume", str(middle))
    straight = final_weights(straight_dir)
    resumed = final_weights(resumed_dir)
    assert straight.keys() == resumed.keys()
    differ = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert not differ, (
        f"a resumed run ends with other weights than an uninterrupted one "
        f"({', '.join(differ[:3])}). If data.py draws random numbers, it must draw "
        "them from a torch generator seeded by (seed, epoch, index), with set_epoch "
        "on the training dataset: see 'Randomness in data' in README.md"
    )


def batch_coupled_or_random() -> list[str]:
    """The model's BatchNorm and dropout layers: with them, each process normalises
    by the statistics of its own share of the batch and draws its own dropout
    masks, so two processes cannot equal one by design."""
    sys.path.insert(0, str(PROJECT))
    import train

    model = train.build_model(train.parse_config([]))
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
        or (isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0)
    ]


def test_two_processes_match_one_with_double_batch(tmp_path):
    run("--run-dir", str(tmp_path / "one"), "--batch-size", "8")
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    run("--run-dir", str(tmp_path / "two"), "--batch-size", "4", launcher=torchrun)
    one, two = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    assert one.keys() == two.keys()
    if batch_coupled_or_random():
        # what can be compared: both trained to finite losses
        for run_dir in (tmp_path / "one", tmp_path / "two"):
            summary = json.loads((run_dir / "summary.json").read_text())
            assert math.isfinite(summary["val_loss"]), summary
        return
    # Summing gradients in another order changes the last bits; Adam's division by
    # sqrt(v) amplifies that on near-zero gradients, hence not bit-identical.
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-4), name
