"""--ema: the exponential moving average of the weights, proven by running it (issue 19).

The average is checked against a reference computed here from the weights that the
run saved after every step, for the decay schedule the feature documents
(min(decay, n / (n + 9)) at update n); then exact resume, 2 processes against 1,
the evaluation modes, inference with load_model(ema=True), buffers, and the GAN
demo's averaged generator next to the raw one.
"""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    assert_identical,
    ckpt,
    read_metrics,
    read_summary,
    render,
    render_probe,
    rows_after,
    run_torchrun,
    run_train,
    train_env,
)

torch = pytest.importorskip("torch")

DECAY = 0.9  # small, so that 16 steps make the average differ from the weights
EPS32 = torch.finfo(torch.float32).eps


def reference_average(project: Path, run: str, steps: int, every: int = 1) -> dict:
    """The average of the saved weights of every step, in float64."""
    average = None
    for n, step in enumerate(range(every, steps + 1, every)):
        weights = ckpt(project, run, f"step_{step:08d}")["model"]
        weights = {k: v.double() for k, v in weights.items()}
        decay = min(DECAY, n / (n + 9))
        if average is None:
            average = weights  # decay 0: the first update copies
        else:
            average = {k: decay * average[k] + (1 - decay) * weights[k] for k in average}
    return average


def max_diff(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.parametrize(
    "features, args, steps",
    [
        (["ema"], [], 16),
        # windows of 3 micro-batches: 6 optimizer steps per epoch, one update each
        (["ema", "accumulate"], ["--accumulate-steps", "3"], 6),
        (["ema"], ["--ema-every", "2"], 16),
        # bf16 autocast: the average stays float32, of the float32 parameters
        (["ema", "amp"], ["--amp-dtype", "bf16"], 16),
        # compiled: the average is of the plain module (no _orig_mod. keys)
        (["ema", "compile"], [], 16),
    ],
    ids=["every-step", "accumulate", "every-2", "bf16", "compile"],
)
def test_the_average_equals_a_reference_from_the_weights_of_every_step(
    tmp_path, features, args, steps
):
    project = render(tmp_path, features)
    run_train(project, "--max-epochs", "1", "--ema-decay", str(DECAY),
              "--ckpt-every", "1", "--keep-last", "1000", *args, "--run-dir", "runs/a")
    last = ckpt(project, "a")
    assert last["train_state"]["step"] == steps
    every = int(args[1]) if args[:1] == ["--ema-every"] else 1
    reference = reference_average(project, "a", steps, every)
    average = last["ema"]
    assert average.keys() == last["model"].keys()
    assert all(v.dtype == torch.float32 for v in average.values())
    scale = max(v.abs().max().item() for v in reference.values())
    # float32 rounding: one lerp per update, each off by a few ulps of the weights
    tolerance = 4 * steps * EPS32 * scale
    assert max_diff(average, reference) <= tolerance
    # the check can fail: the average is far from the last weights
    assert max_diff(average, last["model"]) > 100 * tolerance


BN_MODEL = '''
import torch
from torch import nn


def build_model(cfg):
    return nn.Sequential(
        nn.Linear(8, 32), nn.BatchNorm1d(32), nn.Tanh(), nn.Linear(32, 4)
    )


def compute_loss(model, batch):
    x, y = batch
    loss = nn.functional.cross_entropy(model(x), y)
    return loss, {"loss": loss.detach()}
'''


def test_buffers_are_copied_not_averaged(tmp_path):
    project = render(tmp_path, ["ema"])
    (project / "model.py").write_text(BN_MODEL)
    run_train(project, "--max-epochs", "1", "--ema-decay", str(DECAY), "--run-dir", "runs/a")
    last = ckpt(project, "a")
    for name in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert torch.equal(last["ema"][name], last["model"][name]), name
    assert last["ema"]["1.num_batches_tracked"].dtype == torch.int64
    # the BatchNorm's own weight is a parameter: averaged
    assert not torch.equal(last["ema"]["1.weight"], last["model"]["1.weight"])


# 10 batches per epoch, 3 epochs: a periodic checkpoint at step 15 (mid-epoch)
RESUME_ARGS = shlex.split(
    "--n-train 320 --max-epochs 3 --ckpt-every 15 --log-every 5 --dropout 0.1"
    f" --ema-decay {DECAY}"
)


def test_resume_from_mid_epoch_is_bit_identical_with_the_average(tmp_path):
    project = render_probe(tmp_path, ["ema"])
    run_train(project, *RESUME_ARGS, "--run-dir", "runs/full")
    run_train(project, *RESUME_ARGS, "--run-dir", "runs/resumed",
              "--resume", "runs/full/checkpoints/step_00000015.pt")
    for key in ("model", "optimizer", "ema"):
        assert_identical(ckpt(project, "resumed")[key], ckpt(project, "full")[key], key)
    rows = rows_after(project, "resumed", 15)
    assert any("val_ema_loss" in row for row in rows)
    assert rows == rows_after(project, "full", 15)
    assert read_summary(project / "runs" / "resumed") == read_summary(project / "runs" / "full")


@pytest.mark.slow
def test_two_processes_equal_one_process_with_double_batch_average_included(tmp_path):
    project = render(tmp_path, ["ddp", "ema"])
    args = ["--n-train", "448", "--ema-decay", str(DECAY), "--dist-timeout-s", "30"]
    run_train(project, *args, "--batch-size", "32", "--run-dir", "runs/one")
    run_torchrun(project, 2, *args, "--batch-size", "16", "--run-dir", "runs/two")
    one, two = ckpt(project, "one"), ckpt(project, "two")
    assert one["train_state"]["step"] == two["train_state"]["step"] == 28
    # float32 sums over 16 and 32 samples round differently: a few ulps per step
    assert max_diff(one["model"], two["model"]) < 1e-6
    assert max_diff(one["ema"], two["ema"]) < 1e-6
    assert max_diff(one["ema"], one["model"]) > 1e-3  # the average is its own thing


def test_ema_eval_ema_reports_the_average_under_the_plain_names(tmp_path):
    project = render(tmp_path, ["ema"])
    run_train(project, "--ema-decay", str(DECAY), "--run-dir", "runs/both")
    run_train(project, "--ema-decay", str(DECAY), "--ema-eval", "ema", "--run-dir", "runs/ema")
    both = [r for r in read_metrics(project / "runs" / "both") if r["split"] == "val"]
    only = [r for r in read_metrics(project / "runs" / "ema") if r["split"] == "val"]
    assert [r["val_ema_loss"] for r in both] == [r["val_loss"] for r in only]
    assert "val_ema_loss" not in only[0]
    assert both[-1]["val_loss"] != both[-1]["val_ema_loss"]
    summary_both = read_summary(project / "runs" / "both")
    summary_ema = read_summary(project / "runs" / "ema")
    assert summary_both["test_ema_loss"] == summary_ema["test_loss"]


def test_best_checkpoint_follows_the_averaged_metric(tmp_path):
    project = render(tmp_path, ["ema"])
    run_train(project, "--ema-decay", str(DECAY), "--monitor-metric", "val_ema_loss",
              "--run-dir", "runs/a")
    vals = [float(r["val_ema_loss"]) for r in read_metrics(project / "runs" / "a")
            if r["split"] == "val"]
    best = ckpt(project, "a", "best")
    assert best["train_state"]["best"] == pytest.approx(min(vals), rel=1e-5)


LOAD = """
import sys, torch, train
path = sys.argv[1]
saved = torch.load(path, weights_only=True)
for ema, key in ((True, "ema"), (False, "model")):
    model = train.load_model(path, ema=ema)
    state = model.state_dict()
    assert all(torch.equal(state[k], saved[key][k]) for k in state), key
    assert not model.training
print("ok")
"""


def test_load_model_with_ema_returns_the_averaged_model(tmp_path):
    project = render(tmp_path, ["ema"])
    run_train(project, "--max-epochs", "1", "--ema-decay", str(DECAY), "--run-dir", "runs/a")
    result = subprocess.run([sys.executable, "-c", LOAD, "runs/a/checkpoints/last.pt"],
                            cwd=project, capture_output=True, text=True, env=train_env())
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ema-of", "nosuch"], "--ema-of nosuch: the model has no such sub-model"),
        (["--ema-decay", "1"], "--ema-decay must be in [0, 1)"),
        (["--ema-eval", "raw"], "--ema-eval must be both or ema, not 'raw'"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, args, message):
    project = render(tmp_path, ["ema"])
    result = run_train(project, "--max-epochs", "1", *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# The GAN demo's averaged generator next to the raw one: tests/test_multi_optim.py
# (test_the_demo_gan_covers_the_modes_of_the_mixture trains the demo with --ema).
