"""The defaults hold for every model: a foreign model (a regressor with metrics of its
own) trains with train.py's defaults, single and under torchrun; a monitored metric
that names nothing fails before the first step; misused options are one line; and
every option of train.py, in every feature set, reaches train.py through torchrun's
own argument parser (the last for every feature set in tests/test_render_matrix.py,
which renders them all)."""

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    FIXTURES,
    config_options,
    reaches_the_script,
    read_metrics,
    read_summary,
    render,
    run_torchrun,
    run_train,
)

FOREIGN = FIXTURES / "foreign"


def foreign_project(root: Path, features=()) -> Path:
    project = render(root, features, tiny=False)
    for name in ("model.py", "data.py"):
        shutil.copy(FOREIGN / name, project / name)
    return project


def test_a_foreign_model_trains_with_the_defaults(tmp_path):
    project = foreign_project(tmp_path)
    result = run_train(project, tiny_defaults=False)  # `python train.py`, nothing else
    summary = read_summary(project / "runs" / "proj")
    for name in ("val_loss", "val_mse", "val_mae", "test_loss", "test_mse", "test_mae"):
        assert math.isfinite(summary[name]), (name, summary)
    # the default monitor is the validation loss, lower is better
    assert summary["best"] == pytest.approx(min(
        float(row["val_loss"]) for row in read_metrics(project / "runs" / "proj")
        if row["split"] == "val"
    ), rel=1e-5)  # metrics.csv rounds
    assert "final (best checkpoint)" in result.stdout


def test_a_foreign_model_trains_with_the_defaults_under_torchrun(tmp_path):
    project = foreign_project(tmp_path, ["ddp"])
    result = run_torchrun(project, 2, tiny_defaults=False)
    summary = read_summary(project / "runs" / "proj")
    assert math.isfinite(summary["val_loss"]) and math.isfinite(summary["test_mse"])
    assert "world size 2" in result.stdout


@pytest.mark.parametrize("sanity", ["0", "2"])
def test_a_monitored_metric_that_names_nothing_fails_before_the_first_step(tmp_path, sanity):
    project = foreign_project(tmp_path)
    result = run_train(project, "--monitor-metric", "val_acc", "--sanity-val-steps", sanity,
                       "--run-dir", "run", tiny_defaults=False, check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "--monitor-metric val_acc: validation reports val_loss, val_mae, val_mse"
    ]
    assert "step 1/" not in result.stdout and "Traceback" not in result.stderr
    assert not [row for row in read_metrics(project / "run") if row["split"] == "train"]


@pytest.mark.parametrize("args, message", [
    (["--device", "gpu"], "--device gpu: not auto, cpu, cuda, cuda:N or mps"),
    (["--device", "cuda"], "--device cuda: this torch sees no CUDA GPU"),
    (["--epochs", "3"], "unrecognized arguments: --epochs 3"),
    (["--batch-size", "many"], "argument --batch-size: invalid int value: 'many'"),
])
def test_misused_options_are_one_line_without_a_traceback(tmp_path, args, message):
    if args == ["--device", "cuda"]:
        import torch

        if torch.cuda.is_available():  # the message is about a machine without one
            args, message = ["--device", "gpu"], "--device gpu: not auto"
    project = foreign_project(tmp_path)
    result = run_train(project, *args, tiny_defaults=False, check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]


# -----------------------------------------------------------------------------
# every option reaches train.py under torchrun


def test_the_parser_test_catches_what_torchrun_intercepts():
    # the option this check was written for, and a prefix of torchrun's own options
    assert not reaches_the_script("--monitor")
    assert not reaches_the_script("--nproc")
    assert reaches_the_script("--monitor-metric")


@pytest.mark.parametrize("features", [(), ("ddp", "amp", "clip", "accumulate", "early-stopping",
                                           "compile", "slurm", "tensorboard", "debug"),
                                      ("multi-optim", "ddp")],
                         ids=["base", "all-but-multi-optim", "multi-optim+ddp"])
def test_the_options_read_from_config_are_those_train_py_help_lists(tmp_path, features):
    project = render(tmp_path, features, tiny=False)
    result = subprocess.run([sys.executable, "train.py", "--help"], cwd=project,
                            capture_output=True, text=True, check=True)
    listed = {word.strip(",[]") for word in result.stdout.split() if word.startswith(("--", "[--"))}
    listed.discard("--help")
    assert listed == set(config_options(*((project / name).read_text()
                                                 for name in ("train.py", "train_utils.py"))))
    assert len(listed) > 30
