"""No host synchronisation inside a training step, counted on a CPU.

A CUDA step that reads a value back (`.item()`, `if tensor:`, `.tolist()`, a
host copy) makes the host wait for the GPU, and the GPU then idles while the host
launches the next kernels. train.py reads the training metrics back once per
log (Meter.means) and nowhere else. tests/fixtures/count_syncs.py runs a
generated train.py and counts every such call between two log steps (see its
docstring for what it counts and what a CPU cannot show); tests/gpu/
test_host_sync.py checks the same window under torch.cuda.set_sync_debug_mode
("error") on a GPU.

Every feature that runs on one device is counted: alone or with the features it
is used with. Left out: --compile (compiling takes tens of seconds on a CPU;
the GPU test runs it), W&B and MLflow (they only act in log_row, which is the
log step; TensorBoard, counted here, takes the same path). --slurm runs in the
"everything" case (outside a SLURM job: its stop and requeue checks are there). --debug checks the gradients for NaN/inf at every step: one sync a
step by design, which the test pins to exactly that.
"""

import json
import sys
from pathlib import Path

import pytest
from helpers import FIXTURES, TINY_ARGS, render, train_env

pytest.importorskip("torch")

COUNTER = FIXTURES / "count_syncs.py"
LOG_EVERY = 6
# 32 batches an epoch (16 steps with --accumulate): the window, steps 7-12,
# stays inside the first epoch
WINDOW_ARGS = ["--n-train", "1024", "--log-every", str(LOG_EVERY), "--max-steps", "13",
               "--ckpt-every", "0", "--sanity-val-steps", "0"]
CASES = {
    "base": ([], []),
    "clip-value": (["clip"], ["--clip-value", "0.5"]),
    "ema (every 2 steps, of a sub-model)": (["ema"], ["--ema-every", "2", "--ema-of", "body"]),
    "early-stopping+tensorboard": (["early-stopping", "tensorboard"], []),
    "ddp (1 process)": (["ddp"], []),
    "fsdp (1 process)": (["fsdp", "amp", "clip"], ["--amp-dtype", "bf16"]),
    "everything on one device": (
        ["amp", "clip", "accumulate", "ema", "early-stopping", "slurm"], ["--amp-dtype", "bf16"]
    ),
}


def count_syncs(project: Path, *args: str, tiny_defaults: bool = True) -> dict:
    import subprocess

    out = project / "syncs.json"
    argv = [sys.executable, str(COUNTER), str(out), *(TINY_ARGS if tiny_defaults else []),
            *WINDOW_ARGS, *args]
    done = subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=300,
                          env=train_env())
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    result = json.loads(out.read_text())
    # the window held training steps: a count of zero means something
    assert result["logs"] == 2 and result["steps"] >= LOG_EVERY - 1, result
    return result


@pytest.mark.parametrize("case", list(CASES))
def test_no_host_sync_between_two_log_steps(tmp_path, case):
    features, args = CASES[case]
    project = render(tmp_path, features)
    result = count_syncs(project, *args)
    assert result["syncs"] == 0, json.dumps(result["sites"], indent=2)


def test_no_host_sync_with_several_optimizers(tmp_path):
    # the GAN demo: its own model and data, two optimizers stepping in turn
    project = render(tmp_path, ["multi-optim", "amp", "clip"], tiny=False)
    result = count_syncs(project, "--n-train", "4096", "--n-val", "256", "--n-test", "256",
                         "--batch-size", "64", "--amp-dtype", "bf16", tiny_defaults=False)
    assert result["syncs"] == 0, json.dumps(result["sites"], indent=2)


def test_debug_syncs_once_a_step_by_design(tmp_path):
    # the NaN/inf check of --debug reads one flag per parameter back each step
    project = render(tmp_path, ["debug"])
    result = count_syncs(project)
    assert result["syncs"] == result["steps"], result
    assert all("isfinite" in site for site in result["sites"]), result["sites"]


def test_the_counter_finds_syncs_in_a_step(tmp_path):
    """A compute_loss that reads its loss back three ways: each is counted at
    every step of the window, at its line of model.py."""
    project = render(tmp_path)
    model = (project / "model.py").read_text().replace(
        "def compute_loss(model, batch):", "def compute_loss_plain(model, batch):")
    model += '''

def compute_loss(model, batch):
    loss, metrics = compute_loss_plain(model, batch)
    if loss.isnan():  # a branch on a device value
        raise FloatingPointError("nan")
    metrics["loss_copy"] = float(loss.detach())  # a scalar read
    metrics["on_host"] = loss.detach().cpu()  # a host copy
    metrics["a_number"] = 1.0  # the contract allows it: checked_loss makes it a tensor
    return loss, metrics
'''
    (project / "model.py").write_text(model)
    result = count_syncs(project)
    assert result["syncs"] == 3 * result["steps"], result
    assert {site.split(" at ")[0] for site in result["sites"]} == {
        "aten::_local_scalar_dense", "Tensor.cpu"}, result["sites"]
    # all of them in model.py: checked_loss turns the number into a device
    # tensor without a copy from the host
    assert all(" at model.py:" in site for site in result["sites"]), result["sites"]


def test_the_gpu_count_takes_what_cuda_reports_in_the_window_only(tmp_path):
    """The GPU mode of the counter (COUNT_SYNCS_CUDA=1), without a GPU: a shim
    stands in for torch.cuda.set_sync_debug_mode (recording the modes set), and
    the model warns as CUDA would at each training forward and each evaluation
    forward. Only the training steps inside the window count, and CUDA's check
    is on ("warn") exactly while the counter counts."""
    import subprocess

    project = render(tmp_path)
    model = (project / "model.py").read_text().replace(
        "def compute_loss(model, batch):", "def compute_loss_plain(model, batch):")
    model += '''

def compute_loss(model, batch):
    import warnings

    warnings.warn("called a synchronizing CUDA operation")  # as TORCH_WARN does
    return compute_loss_plain(model, batch)
'''
    (project / "model.py").write_text(model)
    (project / "shim.py").write_text(f'''
import json
import runpy
import sys

import torch

modes = []
torch.cuda.set_sync_debug_mode = modes.append
sys.argv = sys.argv[1:]
try:
    runpy.run_path({str(COUNTER)!r}, run_name="__main__")
finally:
    with open("modes.json", "w") as f:
        json.dump(modes, f)
''')
    out = project / "syncs.json"
    done = subprocess.run(
        [sys.executable, "shim.py", str(COUNTER), str(out), *TINY_ARGS, *WINDOW_ARGS,
         "--val-check-interval", "8"],  # a validation inside the window: not counted
        cwd=project, capture_output=True, text=True, timeout=300,
        env=train_env({"COUNT_SYNCS_CUDA": "1"}))
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert result["logs"] == 2 and result["steps"] == LOG_EVERY, result
    assert result["syncs"] == result["steps"], result
    assert list(result["sites"]) == [s for s in result["sites"] if " at model.py:" in s]
    modes = json.loads((project / "modes.json").read_text())
    # on at the window's start, off and on again around the validation at step 8,
    # off at its end
    assert modes == ["warn", "default", "warn", "default"], modes
