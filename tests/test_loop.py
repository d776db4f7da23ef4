"""The generated training loop does what its options say (issue 3, proofs 2, 5, 6, 7).

Generated projects run on CPU with the probe fixtures (tests/fixtures/
tiny_{model,data}_probe.py): every batch carries tags naming its split and samples,
and the model records each compute_loss call (train/eval mode, grad mode, samples)
and the gradients of each optimizer step. Counts of batches, validation passes and
steps are read from that record and from metrics.csv, never from constants.

A train.py process spends most of its ~4 s starting (importing torch); the
configurations of one project therefore run in one process through `train.main`,
each with its own run directory. The resume tests (tests/test_resume.py) use
separate processes instead, since there the process boundary is the point.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import (
    TINY_ARGS,
    load_checkpoint,
    read_metrics,
    read_summary,
    render,
    render_probe,
    run_train,
    train_env,
)

# TINY_ARGS: 512 training samples in batches of 32, 96 validation and test samples
N_TRAIN, N_VAL, N_TEST, BATCH = 512, 96, 96, 32
BATCHES_PER_EPOCH = math.ceil(N_TRAIN / BATCH)
VAL_BATCHES = math.ceil(N_VAL / BATCH)
TEST_BATCHES = math.ceil(N_TEST / BATCH)

# Runs each job of argv[1] in this process, in order. A training job {"name",
# "argv", "env"} calls train.main with run dir runs/<name> and probe record
# probe/<name>.log; a code job {"name", "code"} runs Python code (with `train`
# imported) that sets `result`. Prints the exit codes and results as JSON.
DRIVER = """
import json, os, sys
import train
results = {}
for job in json.loads(sys.argv[1]):
    if "code" in job:
        scope = {"train": train}
        exec(job["code"], scope)
        results[job["name"]] = scope["result"]
        continue
    os.environ.update(job["env"], PROBE_LOG=f"probe/{job['name']}.log")
    results[job["name"]] = train.main(job["argv"])
    for key in job["env"]:
        del os.environ[key]
print("RESULTS " + json.dumps(results))
"""


def probe_project(root: Path, features=()) -> Path:
    project = render_probe(root, features)
    (project / "probe").mkdir()
    return project


def job(name: str, options: str = "", env: dict[str, str] | None = None) -> dict:
    """A training job: TINY_ARGS, then `options` (split at spaces)."""
    return {
        "name": name,
        "argv": [*TINY_ARGS, "--run-dir", f"runs/{name}", *options.split()],
        "env": env or {},
    }


def drive(project: Path, jobs: list[dict]) -> dict:
    """Run the jobs in one process; every training job must end with exit code 0."""
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(jobs)],
        check=False,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env=train_env(),
    )
    out = f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
    assert result.returncode == 0, out
    results = json.loads(result.stdout.rsplit("RESULTS ", 1)[1])
    codes = {j["name"]: results[j["name"]] for j in jobs if "argv" in j}
    assert codes == {name: 0 for name in codes}, out
    return results


class Run:
    """What one job left behind: metrics.csv, summary.json, checkpoints, probe record."""

    def __init__(self, project: Path, name: str):
        self.dir = project / "runs" / name
        self.events = [
            line.split()
            for line in (project / "probe" / f"{name}.log").read_text().splitlines()
        ]

    @property
    def rows(self) -> list[dict[str, str]]:
        return read_metrics(self.dir)

    def val_steps(self) -> list[int]:
        """The step of each validation pass logged in metrics.csv."""
        return [int(r["step"]) for r in self.rows if r["split"] == "val"]

    def train_losses(self) -> list[float]:
        return [float(r["loss"]) for r in self.rows if r["split"] == "train"]

    @property
    def summary(self) -> dict:
        return read_summary(self.dir)

    def checkpoint(self, name: str = "last") -> dict:
        return load_checkpoint(self.dir / "checkpoints" / f"{name}.pt")

    def batches(self, split: int | None = None) -> list[list[int]]:
        """compute_loss calls: [training, grad enabled, split, size, first tag, last tag]."""
        calls = [[int(v) for v in e[1:]] for e in self.events if e[0] == "B"]
        return [c for c in calls if split is None or c[2] == split]

    def passes(self, split: int) -> list[int]:
        """Batches of each evaluation pass over `split` (a pass starts at sample 0)."""
        runs = []
        for call in self.batches(split):
            if call[0]:  # a training batch
                continue
            if call[4] == split * 1_000_000:
                runs.append(0)
            runs[-1] += 1
        return runs

    def steps(self) -> list[tuple[float, float]]:
        """(global grad norm, largest |grad|) of each optimizer step taken."""
        return [(float(e[1]), float(e[2])) for e in self.events if e[0] == "S"]


# -----------------------------------------------------------------------------
# proof 5: validation, limit and epoch controls (one process for all of them)

# Without a sanity check, train.py still evaluates one validation batch before
# step 1, to learn the metric names and check --monitor-metric against them.
METRIC_CHECK = 1

CONTROL_JOBS = [
    job("val_every_3", "--val-every-epochs 3 --max-epochs 4"),
    job("val_half_epoch", "--val-check-interval 0.5"),
    job("val_3_steps", "--val-check-interval 3"),
    job("limit_train_half", "--limit-train-batches 0.5"),
    job("limit_train_5", "--limit-train-batches 5"),
    job("limit_val", "--limit-val-batches 2 --limit-test-batches 2"),
    job("limit_val_half", "--limit-val-batches 0.5 --limit-test-batches 0.5"),
    job("max_steps", "--max-steps 10 --max-epochs 3"),
    job("keep_last", "--ckpt-every 3 --keep-last 2 --max-epochs 1"),
    job("sanity_0", "--dropout 0.2 --sanity-val-steps 0"),
    job("sanity_2", "--dropout 0.2 --sanity-val-steps 2"),
    job("fast_dev_run", "--fast-dev-run"),
    job("overfit", "--overfit-batches 2 --max-epochs 40 --log-every 2"),
    # lr 0: the weights never change, so the monitored metric never improves
    job("es_flat", "--lr 0 --min-lr 0 --patience 2 --max-epochs 10"),
    job(
        "es_min_epochs", "--lr 0 --min-lr 0 --patience 2 --min-epochs 5 --max-epochs 10"
    ),
    # no change of val_loss can be larger than min_delta
    job(
        "es_min_delta",
        "--monitor-mode min --min-delta 1e9 --patience 2 --max-epochs 10",
    ),
    # worst-is-best: val_loss with mode max keeps an early checkpoint as best.pt
    job(
        "best_max_loss",
        "--monitor-metric val_loss --monitor-mode max --val-check-interval 0.5",
    ),
    # each logged row covers one step, so its lr is that step's
    job("schedule", "--log-every 1 --max-epochs 1"),
]


LR_AT = """
import json
result = {}
for schedule in ("cosine", "constant"):
    cfg = train.parse_config(["--lr", "1.0", "--min-lr", "0.1", "--warmup-steps", "4",
                              "--schedule", schedule])
    forward = [train.lr_at(s, cfg, 20) for s in range(21)]
    backward = [train.lr_at(s, cfg, 20) for s in reversed(range(21))][::-1]
    result[schedule] = [forward, backward]
# the schedule of the run "schedule": one epoch of optimizer steps
cfg = train.Config(**json.load(open("runs/schedule/config.json")))
result["schedule_run"] = [train.lr_at(s, cfg, STEPS) for s in range(STEPS)]
""".replace("STEPS", str(BATCHES_PER_EPOCH))

LOAD_MODEL = """
import torch
path = "runs/max_steps/checkpoints/last.pt"
model = train.load_model(path)
saved = torch.load(path, weights_only=True)["model"]
state = model.state_dict()
same = state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)
result = {"training": model.training, "same_weights": same}
"""


class Runs:
    def __init__(self, project: Path, results: dict):
        self.project, self.results = project, results

    def __getitem__(self, name: str) -> Run:
        return Run(self.project, name)


@pytest.fixture(scope="module")
def controls(tmp_path_factory) -> Runs:
    project = probe_project(tmp_path_factory.mktemp("controls"), ["early-stopping"])
    jobs = []
    for j in CONTROL_JOBS:
        # early stopping only where a job asks for it (patience is given then)
        if "--patience" not in j["argv"]:
            j = {**j, "argv": [*j["argv"], "--patience", "1000"]}
        jobs.append(j)
    jobs += [
        {"name": "lr_at", "code": LR_AT},
        {"name": "load_model", "code": LOAD_MODEL},
    ]
    return Runs(project, drive(project, jobs))


def test_val_every_epochs_validates_every_nth_epoch_and_the_last(controls):
    run = controls["val_every_3"]
    # epochs 3 and 4 (the last epoch is always evaluated)
    assert run.val_steps() == [3 * BATCHES_PER_EPOCH, 4 * BATCHES_PER_EPOCH]
    assert run.summary["step"] == 4 * BATCHES_PER_EPOCH


def test_val_check_interval_fraction_validates_inside_the_epoch(controls):
    run = controls["val_half_epoch"]
    half = BATCHES_PER_EPOCH // 2
    assert run.val_steps() == [half, 2 * half, 3 * half, 4 * half]
    # the metric check (one batch, before step 1), passes over the whole
    # validation set, then the final pass and the test
    assert run.passes(1) == [METRIC_CHECK] + [VAL_BATCHES] * 5
    assert run.passes(2) == [TEST_BATCHES]


def test_metrics_csv_gives_each_row_the_epoch_of_its_step(controls):
    # step S is the S-th optimizer step: it belongs to epoch (S - 1) // batches
    for name in ("val_half_epoch", "val_every_3", "max_steps"):
        rows = controls[name].rows
        assert {"val", "test"} <= {r["split"] for r in rows}, name
        for row in rows:
            expected = (int(row["step"]) - 1) // BATCHES_PER_EPOCH
            assert int(row["epoch"]) == expected, (name, row)


def test_val_check_interval_steps_validates_every_n_steps_and_at_epoch_ends(controls):
    run = controls["val_3_steps"]
    total = 2 * BATCHES_PER_EPOCH
    expected = set(range(3, total + 1, 3)) | {BATCHES_PER_EPOCH, total}
    assert run.val_steps() == sorted(expected)


def test_evaluation_runs_in_eval_mode_without_grad_and_training_resumes_in_train_mode(
    controls,
):
    run = controls["val_half_epoch"]
    calls = run.batches()
    evaluation = [c for c in calls if c[2] != 0]
    training = [c for c in calls if c[2] == 0]
    assert evaluation and all(c[0] == 0 and c[1] == 0 for c in evaluation)
    assert training and all(c[0] == 1 and c[1] == 1 for c in training)
    # training batches follow the metric check, then validation passes inside
    # an epoch
    kinds = "".join("t" if c[2] == 0 else "e" for c in calls)
    assert kinds.startswith("et") and kinds.count("et") == 4


def test_limit_train_batches_fraction_and_count(controls):
    for name, per_epoch in [
        ("limit_train_half", BATCHES_PER_EPOCH // 2),
        ("limit_train_5", 5),
    ]:
        run = controls[name]
        assert len(run.batches(0)) == 2 * per_epoch, name
        assert run.val_steps() == [per_epoch, 2 * per_epoch], name
        assert run.summary["step"] == 2 * per_epoch, name


def test_limit_val_and_test_batches_fraction_and_count(controls):
    run = controls["limit_val"]
    # the metric check, two epoch-end passes and the final one
    assert run.passes(1) == [METRIC_CHECK, 2, 2, 2]
    assert run.passes(2) == [2]
    run = controls["limit_val_half"]
    half_val, half_test = int(VAL_BATCHES * 0.5), int(TEST_BATCHES * 0.5)
    assert run.passes(1) == [METRIC_CHECK] + [half_val] * 3
    assert run.passes(2) == [half_test]
    # the limited passes see the first samples, in order
    first = run.batches(1)[0]
    assert first[4] == 1_000_000 and first[3] == BATCH


def test_max_steps_stops_after_exactly_that_many_steps_and_evaluates_the_last(controls):
    run = controls["max_steps"]
    assert len(run.batches(0)) == 10
    assert run.summary["step"] == 10
    assert run.val_steps()[-1] == 10
    assert run.checkpoint()["train_state"]["step"] == 10


def test_keep_last_prunes_periodic_checkpoints(controls):
    run = controls["keep_last"]
    names = sorted(p.name for p in (run.dir / "checkpoints").glob("*.pt"))
    saved = list(range(3, BATCHES_PER_EPOCH + 1, 3))
    kept = [f"step_{s:08d}.pt" for s in saved[-2:]]
    assert names == sorted(["best.pt", "last.pt", *kept])
    for name in kept:
        assert run.checkpoint(name.removesuffix(".pt"))["train_state"]["step"] == int(name[5:13])


def test_sanity_val_steps_run_before_training_without_touching_the_training_rng(
    controls,
):
    with_sanity, without = controls["sanity_2"], controls["sanity_0"]
    first_train = next(i for i, c in enumerate(with_sanity.batches()) if c[2] == 0)
    assert [c[2] for c in with_sanity.batches()[:first_train]] == [1, 1]
    # without it, one validation batch still checks --monitor-metric
    assert [c[2] for c in without.batches()[:2]] == [1, 0]
    # dropout draws from the training RNG stream: equal weights prove it untouched
    a, b = with_sanity.checkpoint()["model"], without.checkpoint()["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fast_dev_run_runs_two_batches_of_each_split_and_writes_nothing(controls):
    run = controls["fast_dev_run"]
    assert not run.dir.exists()
    assert len(run.batches(0)) == 2
    # the metric check, the end of the epoch, then the final pass
    assert run.passes(1) == [METRIC_CHECK, 2, 2]
    assert run.passes(2) == [2]


def test_overfit_batches_trains_and_validates_on_the_same_few_batches(controls):
    run = controls["overfit"]
    tags = {t for c in run.batches(0) for t in (c[4], c[5])}
    assert max(tags) < 2 * BATCH  # the first 2 batches only
    assert not run.batches(1)  # validation passes, too, use the training batches
    # the metric check, 40 epoch ends and the final pass
    assert run.passes(0) == [METRIC_CHECK] + [2] * 41
    losses = run.train_losses()
    assert losses[-1] < 0.05 * losses[0], losses
    assert float(run.rows[-2]["val_loss"]) < 0.05 * losses[0]


def test_early_stopping_stops_after_patience_validations_without_improvement(controls):
    run = controls["es_flat"]
    # the first validation sets the best, the next `patience` (2) do not improve
    assert len(run.val_steps()) == 3
    assert run.summary["epoch"] == 3


def test_early_stopping_waits_for_min_epochs(controls):
    run = controls["es_min_epochs"]
    assert len(run.val_steps()) == 5
    assert run.summary["epoch"] == 5


def test_early_stopping_counts_only_improvements_larger_than_min_delta(controls):
    run = controls["es_min_delta"]
    val_rows = [r for r in run.rows if r["split"] == "val"]
    losses = [float(r["val_loss"]) for r in val_rows]
    assert len(losses) == 3
    # a later pass improved on the first, by less than min_delta: not counted
    # towards patience, but still the best checkpoint
    assert min(losses[1:]) < losses[0]
    best_row = val_rows[losses.index(min(losses))]
    assert run.checkpoint("best")["train_state"]["step"] == int(best_row["step"])


def test_best_checkpoint_follows_the_monitor_and_the_final_test_uses_it(controls):
    run = controls["best_max_loss"]
    val_rows = [r for r in run.rows if r["split"] == "val"]
    best_row = max(val_rows, key=lambda r: float(r["val_loss"]))
    best = run.checkpoint("best")
    assert best["train_state"]["step"] == int(best_row["step"])
    assert best["train_state"]["step"] != run.checkpoint()["train_state"]["step"]  # else this proves nothing
    summary = run.summary
    assert summary["best"] == pytest.approx(float(best_row["val_loss"]), rel=1e-5)
    # the final validation reproduces the best pass: it ran on best.pt's weights
    assert summary["val_loss"] == pytest.approx(float(best_row["val_loss"]), rel=1e-5)
    assert summary["val_acc"] == pytest.approx(float(best_row["val_acc"]), rel=1e-5)


def test_each_optimizer_step_uses_lr_at_of_its_step(controls):
    run = controls["schedule"]
    rows = [r for r in run.rows if r["split"] == "train"]
    # one row per step (log_every 1): the lr that step used, 0-based step - 1
    assert [int(r["step"]) for r in rows] == list(range(1, BATCHES_PER_EPOCH + 1))
    expected = controls.results["lr_at"]["schedule_run"]
    assert [float(r["lr"]) for r in rows] == pytest.approx(expected, rel=1e-5)
    assert float(rows[0]["lr"]) > 0


def test_lr_at_is_a_pure_function_of_the_step(controls):
    (cosine, cosine_again), (constant, constant_again) = (
        controls.results["lr_at"][k] for k in ("cosine", "constant")
    )
    assert cosine == cosine_again and constant == constant_again
    # warmup 4, lr 1: lr/(warmup+1) at step 0, the full lr at the end of warmup
    assert cosine[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert cosine[5:] == sorted(cosine[5:], reverse=True)
    assert cosine[12] == pytest.approx(0.55)  # halfway: the mean of lr and min_lr
    assert cosine[20] == pytest.approx(0.1)  # min_lr at the end
    assert constant[:5] == cosine[:5]
    assert constant[5:] == [1.0] * 16


def test_load_model_rebuilds_the_trained_model_for_inference(controls):
    assert controls.results["load_model"] == {"training": False, "same_weights": True}


# -----------------------------------------------------------------------------
# proofs 2 and 6: accumulation, clipping, fp16 loss scaling (one process)

# 7 micro-batches of 16 with K=2 are windows of 2, 2, 2 and 1: the same samples,
# in the same order, as batches of 32, 32, 32 and 16
ACCUMULATION = "--n-train 112 --max-epochs 1 --amp-dtype off --clip-norm 0"
# one batch per optimizer step, each step's pre-clip norm logged
PER_STEP = "--accumulate-steps 1 --max-epochs 1 --log-every 1"
FP16_LOSS_MUL = "1000"  # overflows fp16 gradients at GradScaler's initial scale

COMBO_JOBS = [
    job("accumulate_2x16", f"{ACCUMULATION} --batch-size 16 --accumulate-steps 2"),
    job("batch_32", f"{ACCUMULATION} --batch-size 32 --accumulate-steps 1"),
    job("no_clip", f"{PER_STEP} --amp-dtype off --clip-norm 0"),
    job("clip_norm", f"{PER_STEP} --amp-dtype off --clip-norm 0.3"),
    job("clip_value", f"{PER_STEP} --amp-dtype off --clip-value 0.01"),
    job(
        "fp16",
        f"{PER_STEP} --amp-dtype fp16 --clip-norm 0.3",
        env={"PROBE_LOSS_MUL": FP16_LOSS_MUL},
    ),
]


@pytest.fixture(scope="module")
def combo(tmp_path_factory) -> Runs:
    project = probe_project(
        tmp_path_factory.mktemp("combo"), ["amp", "clip", "accumulate"]
    )
    return Runs(project, drive(project, COMBO_JOBS))


def logged_grad_norms(run: Run) -> list[float]:
    """The pre-clip global grad norm of each step (one train row per step)."""
    rows = [r for r in run.rows if r["split"] == "train"]
    assert [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
    return [float(r["grad_norm"]) for r in rows]


def test_accumulation_equals_one_big_batch_also_for_a_short_last_window(combo):
    small, big = combo["accumulate_2x16"], combo["batch_32"]
    assert [c[3] for c in small.batches(0)] == [16] * 7
    assert [c[3] for c in big.batches(0)] == [32, 32, 32, 16]
    # the schedule counts optimizer steps: 4 in both runs
    assert len(small.steps()) == len(big.steps()) == 4
    # every step's gradient is the same, the short last window's included
    norms = [torch.tensor([s[0] for s in r.steps()]) for r in (small, big)]
    torch.testing.assert_close(norms[0], norms[1], rtol=1e-5, atol=0)
    a, b = small.checkpoint()["model"], big.checkpoint()["model"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)


def test_the_probe_sees_the_logged_grad_norm_when_nothing_clips(combo):
    run = combo["no_clip"]
    post = [s[0] for s in run.steps()]
    assert post == pytest.approx(logged_grad_norms(run), rel=1e-4)


def test_clip_norm_bounds_the_norm_the_optimizer_steps_with(combo):
    run = combo["clip_norm"]
    pre, post = logged_grad_norms(run), [s[0] for s in run.steps()]
    assert len(pre) == len(post) == BATCHES_PER_EPOCH
    assert max(pre) > 0.3  # else nothing was clipped
    assert post == pytest.approx([min(p, 0.3) for p in pre], rel=1e-4)


def test_clip_value_bounds_every_gradient_element(combo):
    run = combo["clip_value"]
    largest = [s[1] for s in run.steps()]
    assert len(largest) == BATCHES_PER_EPOCH
    assert max(largest) <= 0.01 * (1 + 1e-6)
    assert max(largest) == pytest.approx(0.01, rel=1e-6)  # the clamp was active
    pre, post = logged_grad_norms(run), [s[0] for s in run.steps()]
    assert all(q <= p * (1 + 1e-4) for p, q in zip(pre, post, strict=True))


def test_fp16_grad_scaler_skips_overflowed_steps_and_clips_unscaled_gradients(combo):
    run = combo["fp16"]
    pre = logged_grad_norms(run)
    skipped = [not math.isfinite(p) for p in pre]
    # the first steps overflow at the initial scale, later ones do not
    assert 0 < sum(skipped) < len(pre)
    taken = [p for p, s in zip(pre, skipped, strict=True) if not s]
    post = [s[0] for s in run.steps()]
    # clipping after unscale_: the norm is min(pre, clip), not clip / scale
    assert post == pytest.approx([min(p, 0.3) for p in taken], rel=1e-3)
    # each skipped step halved the scale (growth comes only after 2000 good steps)
    scaler = run.checkpoint()["scaler"]
    assert scaler["scale"] == 65536.0 * 0.5 ** sum(skipped)


# -----------------------------------------------------------------------------
# proof 7: bad input fails before training, in one line

BAD_INPUT = [
    (["--max-steps", "-5"], "--max-steps"),
    (["--accumulate-steps", "0"], "--accumulate-steps"),
    (["--amp-dtype", "fp8"], "--amp-dtype"),
    (["--resume", "no/such/file.pt"], "--resume"),
    (["--resume", "notes.txt"], "--resume"),  # a text file
    (["--resume", "weights.pt"], "--resume"),  # torch.save'd, but not a checkpoint
]


@pytest.mark.parametrize(
    "args, option", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT]
)
def test_bad_input_is_one_clear_line_before_training(combo, args, option):
    project = combo.project
    (project / "notes.txt").write_text("not a checkpoint\n")
    torch.save({"head.weight": torch.zeros(2)}, project / "weights.pt")
    result = run_train(project, *args, "--run-dir", "runs/bad", check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert option in last, result.stderr
    assert not (project / "runs" / "bad").exists()


# -----------------------------------------------------------------------------
# GOTCHA 9: with --compile, checkpoints hold the plain module's weights


@pytest.mark.slow
def test_compiled_model_checkpoints_hold_plain_weights(tmp_path):
    project = render(tmp_path, ["compile"])  # the plain tiny model
    results = drive(
        project,
        [
            job("compiled", "--max-steps 2 --max-epochs 1"),
            {"name": "load_model", "code": LOAD_MODEL.replace("max_steps", "compiled")},
        ],
    )
    checkpoints = project / "runs" / "compiled" / "checkpoints"
    expected = {"body.0.weight", "body.0.bias", "head.weight", "head.bias"}
    for name in ("last.pt", "best.pt"):
        assert set(load_checkpoint(checkpoints / name)["model"]) == expected
    assert results["load_model"] == {"training": False, "same_weights": True}
