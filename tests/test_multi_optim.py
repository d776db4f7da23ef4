"""--multi-optim: several optimizers stepping at their own intervals, proven by running it.

The project is rendered with multi-optim + ddp + accumulate + clip + amp, and runs
the GAN demo itself at toy sizes (`--hidden 16`, a few hundred points): a step
takes well under a millisecond, and the demo's latents are part of its data, so
a run is a function of the batch order (no random draws) and a 2-process run
with `--batch-size B` must end where a 1-process run with `--batch-size 2B` does.
Options switch the other features' effects off where a case does not want them.

1. the demo with its defaults learns the mixture (slow: about a minute);
2. with intervals (1, 3) each optimizer's own step counter, in every checkpoint,
   is what the intervals say (Adam's own step count agrees), and an optimizer not
   due leaves its parameters and its state bit-identical;
3. a resume from a mid-epoch checkpoint ends bit-identical, both optimizers
   included, also with accumulation, clipping and fp16 grad scalers;
4. 2 gloo processes equal one process with a double batch, and each sub-model's
   DDP all-reduces exactly once per step of its own optimizer.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    load_checkpoint,
    read_metrics,
    read_summary,
    render,
    run_torchrun,
    run_train,
    train_env,
)
from test_cookiecutter import cookiecutter_render

from scaffold.generate import build_project
from scaffold.spec import ProjectSpec

torch = pytest.importorskip("torch")

N_TRAIN = 448  # 14 batches of 32 per epoch: also 14 per rank at --batch-size 16
BATCH = 16  # per process under torchrun; one process uses 2 * BATCH
G_EVERY = 3  # intervals (1, 3): the discriminator every step, the generator every 3rd
EPOCHS = 2
STEPS = EPOCHS * N_TRAIN // (2 * BATCH)  # 28 without accumulation
ACCUMULATE = 3  # 14 micro-batches = windows of 3, 3, 3, 3 and a short one of 2
CLIP_NORM = 0.05  # below the gradient norms the toy GAN logs early on
RESUME_STEP = 20  # step 6 of the second epoch; the generator is due at 21
FP32_ATOL = 1e-6

COMMON = [
    "--n-train", str(N_TRAIN), "--n-val", "64", "--n-test", "64", "--hidden", "16",
    "--g-every", str(G_EVERY), "--max-epochs", str(EPOCHS), "--warmup-steps", "3",
    "--lr", "0.01", "--min-lr", "0.001", "--log-every", "4", "--sanity-val-steps", "0",
    "--ckpt-every", "1", "--keep-last", "100", "--dist-timeout-s", "30",
]
# every other feature's effect off; a case turns some back on (later options win)
PLAIN = ["--accumulate-steps", "1", "--clip-norm", "0", "--amp-dtype", "off"]
CASES = {
    "plain": [],
    "accumulate-clip": ["--accumulate-steps", str(ACCUMULATE), "--clip-norm", str(CLIP_NORM)],
    "fp16": ["--accumulate-steps", str(ACCUMULATE), "--clip-norm", str(CLIP_NORM),
             "--amp-dtype", "fp16"],
}
NAMES = ("discriminator", "generator")

COUNT_SYNCS = '''
"""Run train.main with DDP communication hooks counting each DDP's all-reduce rounds."""
import os
import sys
from pathlib import Path

from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

import train

rounds = []  # one counter per DDP, in the order they are built


def init_with_hook(self, *args, **kwargs):
    init(self, *args, **kwargs)
    index = len(rounds)
    rounds.append(0)

    def counting_allreduce(state, bucket):
        if bucket.is_last():  # one round of a backward pass may span several buckets
            rounds[index] += 1
        return default_hooks.allreduce_hook(state, bucket)  # the default: mean over ranks

    self.register_comm_hook(None, counting_allreduce)


init = DistributedDataParallel.__init__
DistributedDataParallel.__init__ = init_with_hook
code = train.main(sys.argv[1:])
run_dir = Path(sys.argv[sys.argv.index("--run-dir") + 1])
(run_dir / f"syncs_rank{os.environ['RANK']}.json").write_text(str(rounds))
sys.exit(code)
'''

CHECK_GRADS = '''
"""Run train.main checking, at every optimizer step, the gradients it steps with.

They must be exactly the mean of the gradients of its own compute_loss calls since
its previous step (the window's micro-batches), taken separately with
autograd.grad; every parameter of the other optimizers must have no gradient.
"""
import sys
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import train

calls = {}  # optimizer name -> (its sub-model's parameters, [grads of each call])
checked = []


def compute_loss_recorded(model, batch, name):
    loss, metrics = compute_loss(model, batch, name)
    if model.training:
        params = list(getattr(model, name).parameters())
        grads = torch.autograd.grad(loss, params, retain_graph=True)
        calls.setdefault(name, (params, []))[1].append(grads)
    return loss, metrics


def check_step(optimizer, args, kwargs):
    stepped = [p for group in optimizer.param_groups for p in group["params"]]
    name = next(n for n, (params, _) in calls.items() if params[0] is stepped[0])
    params, grads = calls.pop(name)
    for i, p in enumerate(params):
        expected = sum(g[i] for g in grads) / len(grads)
        assert torch.allclose(p.grad, expected, rtol=1e-5, atol=1e-7), (name, i)
    for other, (others, _) in calls.items():
        assert all(q.grad is None for q in others), (name, other)
    checked.append(name)


compute_loss = train.compute_loss
train.compute_loss = compute_loss_recorded
register_optimizer_step_pre_hook(check_step)
code = train.main(sys.argv[1:])
run_dir = Path(sys.argv[sys.argv.index("--run-dir") + 1])
(run_dir / "checked.txt").write_text(" ".join(checked))
sys.exit(code)
'''


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(result.args)} exited {result.returncode}\n"
                             f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result


def states(checkpoint: dict, name: str) -> list[dict]:
    """Optimizer `name`'s per-parameter state (Adam's step, exp_avg, exp_avg_sq)."""
    return list(checkpoint["optimizers"][name]["state"].values())


def part(weights: dict, name: str) -> dict:
    return {k: v for k, v in weights.items() if k.startswith(name + ".")}


def assert_identical(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}: {key} differs"


def assert_same_state(a: list[dict], b: list[dict], what: str) -> None:
    assert len(a) == len(b), what
    for p, q in zip(a, b, strict=True):
        assert p.keys() == q.keys()
        for key in p:
            assert torch.equal(p[key], q[key]), f"{what}: {key} differs"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    project = render(tmp_path_factory.mktemp("multi_optim"),
                     ["multi-optim", "ddp", "accumulate", "clip", "amp"], tiny=False)
    (project / "count_syncs.py").write_text(COUNT_SYNCS)
    (project / "check_grads.py").write_text(CHECK_GRADS)
    return project


@pytest.fixture(scope="module")
def trained(project):
    """trained(case, nproc) -> run dir; each run made once per module.

    nproc=1: `python train.py --batch-size 2B`; nproc=2: `torchrun --standalone
    --nproc_per_node=2 count_syncs.py --batch-size B` (train.py's main, with
    all-reduce rounds counted per DDP).
    """
    cache: dict[tuple[str, int], Path] = {}

    def get(case: str, nproc: int) -> Path:
        if (case, nproc) not in cache:
            run_dir = project / "runs" / f"{case}-{nproc}"
            args = [*COMMON, *PLAIN, *CASES[case], "--run-dir", str(run_dir)]
            if nproc == 1:
                run_train(project, *args, "--batch-size", str(2 * BATCH), tiny_defaults=False)
            else:
                argv = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2", "count_syncs.py", *args,
                        "--batch-size", str(BATCH)]
                env = train_env()
                for name in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
                    env.pop(name, None)
                check(subprocess.run(argv, cwd=project, capture_output=True, text=True,
                                     timeout=300, env=env))
            cache[case, nproc] = run_dir
        return cache[case, nproc]

    return get


# -----------------------------------------------------------------------------
# 1. the demo learns the mixture


@pytest.mark.slow
def test_the_demo_gan_covers_the_modes_of_the_mixture(tmp_path):
    """Rendered with --ema too (one training of the demo for both): the averaged
    generator's coverage and quality are reported beside the raw one's."""
    project = render(tmp_path, ["multi-optim", "ema"], tiny=False)
    # the README's advice for the demo: best.pt by how well the samples cover the modes
    result = run_train(project, "--run-dir", str(tmp_path / "run"),
                       "--monitor-metric", "val_mode_tv", tiny_defaults=False,
                       timeout=600)
    summary = read_summary(tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert f"test_modes {summary['test_modes']:.4f}" in result.stdout  # printed
    # measured with the defaults: all 8 modes in every test batch, ~0.9 of the samples
    # within 3 std of a mode; a collapsed or untrained generator covers few modes
    # and puts most samples far from any
    assert summary["test_modes"] >= config["n_modes"] - 0.5
    assert summary["test_quality"] > 0.8
    assert summary["test_mode_tv"] < 0.2
    # --ema-of generator (the default of a multi-optim project): the average holds
    # the generator's weights only, and is tested beside the raw generator
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    generator = {k.removeprefix("generator.") for k in last["model"] if k.startswith("generator.")}
    assert set(last["ema"]) == generator
    for metric in ("modes", "quality", "mode_tv"):
        raw, averaged = summary[f"test_{metric}"], summary[f"test_ema_{metric}"]
        print(f"GAN demo test_{metric}: raw generator {raw:.4f}, averaged {averaged:.4f}")
    assert summary["test_ema_modes"] >= config["n_modes"] - 0.5
    assert summary["test_ema_quality"] > 0.8


# -----------------------------------------------------------------------------
# 2. interval semantics


def test_each_optimizer_steps_at_its_interval_and_a_skipped_one_is_untouched(trained):
    run_dir = trained("plain", 1)
    checkpoints = [load_checkpoint(run_dir / "checkpoints" / f"step_{n:08d}.pt")
                   for n in range(1, STEPS + 1)]
    for n, checkpoint in enumerate(checkpoints, start=1):
        expected = {"discriminator": n, "generator": n // G_EVERY}
        assert checkpoint["train_state"]["optimizer_steps"] == expected, n
        # Adam's own count of the steps it took agrees
        for name in NAMES:
            assert all(s["step"].item() == expected[name] for s in states(checkpoint, name)), n
    for n in range(1, STEPS):
        before, after = checkpoints[n - 1], checkpoints[n]  # steps n and n + 1
        # the discriminator is due every step: it always moves
        d_before, d_after = part(before["model"], "discriminator"), part(after["model"], "discriminator")
        assert any(not torch.equal(d_before[k], d_after[k]) for k in d_before), n + 1
        g_before, g_after = part(before["model"], "generator"), part(after["model"], "generator")
        if (n + 1) % G_EVERY:
            # not due: weights and Adam's moments bit-identical
            assert_identical(g_before, g_after, f"generator at step {n + 1}")
            assert_same_state(states(before, "generator"), states(after, "generator"),
                              f"generator state at step {n + 1}")
        else:
            assert any(not torch.equal(g_before[k], g_after[k]) for k in g_before), n + 1
    # each optimizer's LR follows the schedule on its own step counter: the
    # generator is still warming up (3 steps) when the discriminator is past it
    rows = [r for r in read_metrics(run_dir) if r["split"] == "train"]
    first = rows[0]  # step 4: the discriminator took 4 steps, the generator 1
    assert float(first["lr_discriminator"]) == pytest.approx(0.01, rel=1e-4)
    assert float(first["lr_generator"]) == pytest.approx(0.01 * 1 / 4, rel=1e-4)


def test_each_optimizer_steps_with_the_gradients_of_its_own_loss_only(project):
    # The generator's loss flows through the discriminator: a plain backward()
    # would leave its gradients in the discriminator's next step. With windows
    # of 3 micro-batches (the last of each epoch 2), each step must use the mean
    # over its own window.
    run_dir = project / "runs" / "check-grads"
    args = [*COMMON, *PLAIN, "--accumulate-steps", str(ACCUMULATE), "--g-every", "1",
            "--batch-size", str(2 * BATCH), "--run-dir", str(run_dir)]
    check(subprocess.run([sys.executable, "check_grads.py", *args], cwd=project,
                         capture_output=True, text=True, timeout=300, env=train_env()))
    checked = (run_dir / "checked.txt").read_text().split()
    # every step of both optimizers was checked, in the order of build_optimizers
    assert checked == list(NAMES) * (EPOCHS * 5)


# -----------------------------------------------------------------------------
# 3. exact resume


@pytest.mark.parametrize("case", ["plain", "fp16"])
def test_resume_mid_epoch_is_bit_identical_with_both_optimizers(project, trained, case):
    straight = trained(case, 1)
    # mid-epoch, at a log step (a resumed run's first log averages from there);
    # fp16 has 5 steps per epoch (windows of 3, 3, 3, 3, 2)
    step = RESUME_STEP if case == "plain" else 8
    checkpoint = straight / "checkpoints" / f"step_{step:08d}.pt"
    saved = load_checkpoint(checkpoint)
    assert 0 < saved["train_state"]["batch_in_epoch"] < N_TRAIN // (2 * BATCH)  # mid-epoch
    resumed = project / "runs" / f"{case}-resumed"
    run_train(project, *COMMON, *PLAIN, *CASES[case], "--batch-size", str(2 * BATCH),
              "--run-dir", str(resumed), "--resume", str(checkpoint), tiny_defaults=False)
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert a["train_state"] == b["train_state"]
    assert_identical(a["model"], b["model"], "weights")
    for name in NAMES:
        assert states(a, name), f"{name} never stepped"
        assert_same_state(states(a, name), states(b, name), f"{name} state")
        assert a["optimizers"][name]["param_groups"] == b["optimizers"][name]["param_groups"]
    if case == "fp16":
        # one scaler per optimizer, each saved and restored
        assert a["scalers"].keys() == b["scalers"].keys() == set(NAMES)
        assert a["scalers"] == b["scalers"]
        assert saved["scalers"]["generator"]["scale"] > 0
    # and the training logged after the resume point is the same, row for row
    def after_resume(run_dir: Path) -> list[dict]:
        rows = read_metrics(run_dir)
        return [{k: v for k, v in r.items() if k != "samples_per_s"}
                for r in rows if r["split"] == "train" and int(r["step"]) > step]

    assert after_resume(straight) == after_resume(resumed)


# -----------------------------------------------------------------------------
# 4. DDP: 2 processes x B == 1 process x 2B, one all-reduce per own step


@pytest.mark.slow
@pytest.mark.parametrize("case", ["plain", "accumulate-clip"])
def test_two_processes_equal_one_process_with_double_batch(project, trained, case):
    one, two = trained(case, 1), trained(case, 2)
    a = load_checkpoint(one / "checkpoints" / "last.pt")
    b = load_checkpoint(two / "checkpoints" / "last.pt")
    # the best val_loss (a float) is compared with the weights, below
    best_a, best_b = a["train_state"].pop("best"), b["train_state"].pop("best")
    assert a["train_state"] == b["train_state"]
    assert best_a == pytest.approx(best_b, rel=1e-5)
    steps = b["train_state"]["step"]
    if case == "plain":
        assert steps == STEPS
    else:
        assert steps == EPOCHS * 5  # windows of 3, 3, 3, 3, 2 per epoch
        # the logged pre-clip norms exceed the limit, so clipping changed steps
        rows = [r for r in read_metrics(two) if r["split"] == "train"]
        assert max(float(r["grad_norm_generator"]) for r in rows if r["grad_norm_generator"]) > CLIP_NORM
        assert max(float(r["grad_norm_discriminator"]) for r in rows) > CLIP_NORM
    # Summing gradients in another order changes the last bits (fp32); Adam's
    # division by sqrt(v) can amplify that on near-zero gradients, so the runs are
    # close, not bit-identical. A wrong sharding, averaging or a sub-model whose
    # gradients were not all-reduced changes every step's update wholesale: about
    # lr = 1e-2 per parameter per step, four orders of magnitude above this bound.
    for name in a["model"]:
        assert torch.allclose(a["model"][name], b["model"][name], rtol=0, atol=FP32_ATOL), (
            f"{name} differs by {(a['model'][name] - b['model'][name]).abs().max().item():.3g}"
        )
    # each sub-model's DDP all-reduced once per step of its own optimizer: never
    # in the other's steps, never for the micro-batches before a window's last
    own_steps = b["train_state"]["optimizer_steps"]
    for rank in (0, 1):
        rounds = json.loads((two / f"syncs_rank{rank}.json").read_text())
        assert rounds == [own_steps["discriminator"], own_steps["generator"]], rank


# -----------------------------------------------------------------------------
# the rest of the features around it, and the project's own tests


def test_fast_dev_run_with_every_other_feature_under_torchrun(tmp_path):
    features = ("multi-optim", "ddp", "amp", "clip", "accumulate", "early-stopping",
                "slurm", "tensorboard", "debug")
    project = render(tmp_path, features, tiny=False)
    result = run_torchrun(project, 2, "--fast-dev-run", "--amp-dtype", "bf16", "--hidden", "16",
                          "--g-every", "2", "--accumulate-steps", "1", tiny_defaults=False)
    assert "world size 2" in result.stdout
    assert "optimizers: discriminator every 1 step(s)" in result.stdout
    assert "test_modes" in result.stdout


@pytest.mark.slow
def test_compiled_gan_trains_both_optimizers_and_saves_plain_weights(tmp_path):
    """--compile wraps the whole model; each optimizer still steps its own
    sub-model's parameters, and checkpoints hold the plain module's names."""
    args = ("--max-steps", "2", "--max-epochs", "1", "--hidden", "8", "--log-every", "1",
            "--sanity-val-steps", "0", "--run-dir", "run")
    weights, steps = {}, {}
    for features in (["multi-optim"], ["multi-optim", "compile"]):
        project = render(tmp_path / "-".join(features), features, tiny=False)
        run_train(project, *args, tiny_defaults=False, timeout=600)
        last = load_checkpoint(project / "run" / "checkpoints" / "last.pt")
        weights[len(features)] = last["model"]
        steps[len(features)] = {name: [float(s["step"]) for s in states(last, name)]
                                for name in ("discriminator", "generator")}
    plain, compiled = weights[1], weights[2]
    assert compiled.keys() == plain.keys()
    assert not any("_orig_mod" in key for key in compiled)
    assert steps[2] == steps[1]
    assert all(counts and min(counts) > 0 for counts in steps[2].values()), steps


def test_a_broken_build_optimizers_contract_is_one_clear_error(tmp_path):
    project = render(tmp_path, ["multi-optim"], tiny=False)
    model_py = project / "model.py"
    source = model_py.read_text()
    assert '("generator", adam(model.generator), cfg.g_every)' in source
    # the generator's optimizer under a name that is not its sub-model
    model_py.write_text(source.replace('("generator", adam(model.generator)',
                                       '("gen", adam(model.generator)'))
    result = run_train(project, "--fast-dev-run", "--hidden", "8", tiny_defaults=False,
                       check=False)
    assert result.returncode != 0
    assert "build_optimizers: 'gen' must name a sub-model of the model (model.gen)" in result.stderr


@pytest.mark.slow
def test_the_projects_own_tests_pass(tmp_path):
    project = render(tmp_path, ["multi-optim", "ddp"], tiny=False)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project, capture_output=True, text=True, timeout=600, env=train_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout and "skipped" not in result.stdout


def test_cookiecutter_gives_the_same_files(tmp_path):
    spec = ProjectSpec.create("my-gan", {"multi-optim", "ddp", "amp", "accumulate"})
    ours = build_project(spec)
    theirs = cookiecutter_render(spec, tmp_path)
    assert sorted(theirs) == sorted(ours)
    for path in ours:
        assert theirs[path] == ours[path], f"{path} differs"


# -----------------------------------------------------------------------------
# fp16 overflow under --debug: GradScaler's business, not a reason to stop

# Runs train.main with every GradScaler starting at 2**24 instead of 2**16: the
# scaled fp16 gradients then overflow in the first steps, as they do in any fp16
# run while GradScaler searches for its scale, only surely.
HIGH_SCALE = '''
import sys

import torch

import train

init = torch.amp.GradScaler.__init__


def high_scale(self, *args, **kwargs):
    init(self, *args, **{**kwargs, "init_scale": 2.0**24})


torch.amp.GradScaler.__init__ = high_scale
sys.exit(train.main(sys.argv[1:]))
'''


@pytest.mark.parametrize("features", [("multi-optim",), ()], ids=["multi-optim", "single"])
def test_an_fp16_overflow_is_skipped_not_stopped_under_debug(tmp_path, features):
    project = render(tmp_path, [*features, "amp", "debug"], tiny=False)
    (project / "high_scale.py").write_text(HIGH_SCALE)
    run_dir = tmp_path / "run"
    args = ["--max-steps", "8", "--amp-dtype", "fp16", "--on-nonfinite", "stop",
            "--sanity-val-steps", "0", "--run-dir", str(run_dir)]
    args += COMMON[:6] if features else ["--n-train", "256", "--n-val", "64", "--n-test", "64"]
    result = subprocess.run([sys.executable, "high_scale.py", *args], cwd=project,
                            capture_output=True, text=True, timeout=300, env=train_env())
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "non-finite" not in result.stdout + result.stderr
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    scalers = checkpoint["scalers"].values() if features else [checkpoint["scaler"]]
    # the overflow happened: each scaler lowered its scale (halved once per skipped step)
    for scaler in scalers:
        assert scaler["scale"] < 2.0**24, scaler
    assert checkpoint["train_state"]["step"] == 8
    assert (run_dir / "summary.json").exists()
