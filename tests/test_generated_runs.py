"""Generated projects run: fast-dev-run of representative feature sets (DDP under
torchrun included), and the demo learns. (A project's own tests run with each zoo
model plugged in, tests/test_zoo.py, and after `scaffold add`, tests/test_update.py.)"""

import subprocess
import sys

import pytest
from helpers import read_summary, render, run_torchrun, run_train, train_env

REPRESENTATIVE = [
    (),
    ("amp", "clip", "accumulate"),
    ("early-stopping", "tensorboard", "debug"),
    ("slurm",),
]


@pytest.mark.parametrize("features", REPRESENTATIVE, ids=lambda f: "+".join(f) or "base")
def test_fast_dev_run_with_the_demo_model(tmp_path, features):
    project = render(tmp_path, features, tiny=False)
    result = run_train(project, "--fast-dev-run", "--run-dir", "run", tiny_defaults=False)
    assert "final (best checkpoint)" in result.stdout
    assert not (project / "run").exists(), "fast-dev-run must write nothing"


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_fast_dev_run_of_every_feature_under_torchrun(tmp_path, strategy):
    # tests/test_feature_pairs.py runs ddp's pairs with the features left out here
    # (tests/test_fsdp.py: fsdp's, compile); ema does not go with fsdp
    features = ("amp", "clip", "accumulate", "early-stopping", "slurm", "tensorboard",
                "debug", *(("ema",) if strategy == "ddp" else ()))
    project = render(tmp_path, (strategy, *features), tiny=False)
    result = run_torchrun(project, 2, "--fast-dev-run", "--amp-dtype", "bf16",
                          "--d-model", "32", "--n-layers", "1", tiny_defaults=False)
    assert "world size 2" in result.stdout


@pytest.mark.slow
def test_the_demo_learns_addition_with_default_settings(tmp_path):
    project = render(tmp_path, (), tiny=False)
    # the documented command with default settings; one thread, as every run of the
    # suite: the other pytest-xdist worker keeps the second core busy
    result = subprocess.run([sys.executable, "train.py"], cwd=project,
                            capture_output=True, text=True, timeout=900, env=train_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = read_summary(project / "runs" / "proj")
    assert summary["test_acc"] >= 0.95, summary
