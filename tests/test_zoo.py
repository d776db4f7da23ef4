"""The zoo: real (small) models plugged into generated projects through the contract.

Each case under tests/fixtures/zoo/ is a model.py + data.py pair that a user could
have written; a project is rendered with the demo replaced by the pair (train.py
untouched), and train.py is run on it for a few steps with its defaults, except
for the small-run options in SMALL:

- cnn: BatchNorm, dropout, and random augmentation in the dataset that follows
  the data randomness rule (set_epoch; a generator seeded by seed, epoch, index);
- gpt: a character-level GPT with tied embeddings, dict batches, tokens_per_sample;
- frozen: a frozen backbone (requires_grad=False) under a trainable head;
- unused: a branch that only some samples take, so some batches leave its
  parameters without a gradient (DDP needs --find-unused-parameters);
- nometrics: compute_loss returns `loss, {}`;
- unrestored_rng: augmentation from an unseeded random.Random() -- breaks the rule;
- contract breakers: each breaks one promise of the contract (see BREAKERS).

The runs are made once per test session and shared between the tests (and the
pytest-xdist workers) that read them: see `Zoo`.
"""

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
from filelock import FileLock  # a dependency of torch
from helpers import (
    FIXTURES,
    load_checkpoint,
    read_metrics,
    read_summary,
    render,
    run_torchrun,
    run_train,
    train_env,
)

torch = pytest.importorskip("torch")

ZOO = FIXTURES / "zoo"
GOOD = ["cnn", "gpt", "frozen", "unused", "nometrics"]
# contract breakers: the function that the one-line error must start with
BREAKERS = {
    "two_datasets": "data.build_datasets",  # returns (train, val)
    "no_len": "data.build_datasets",  # a training set with __getitem__ only
    "bare_tensor": "model.compute_loss",  # returns the loss alone
    "nonscalar_loss": "model.compute_loss",  # per-sample losses
    "string_metric": "model.compute_loss",  # a metric that is a str
    "tensor_metric": "model.compute_loss",  # a metric with one value per sample
}

BATCH = 4  # per process under torchrun; a single process uses 2 * BATCH
BATCHES = 6  # training batches per epoch (--limit-train-batches)
MAX_STEPS = 12  # two epochs
CKPT_EVERY = 4  # checkpoints at steps 4, 8, 12 (all kept: --keep-last is 3)
RESUME_STEP = 8  # epoch 1, batch 2: the middle of the second epoch
SMALL = [
    "--max-steps", str(MAX_STEPS), "--limit-train-batches", str(BATCHES),
    "--limit-val-batches", "2", "--limit-test-batches", "2",
    "--warmup-steps", "2", "--log-every", "2", "--ckpt-every", str(CKPT_EVERY),
]
# a rank that fails must not leave the other waiting for train.py's default 600 s
DIST = ["--dist-timeout-s", "60"]
# Summing two ranks' gradients differs from one process's sum in the last bits
# (below 1e-7 on these weights after 12 steps); a wrong shard or average is off by
# orders of magnitude more.
DDP_ATOL = 1e-6
# per-case options of train.py: the cnn's data loads in worker processes, so its
# resume is also exact with workers
EXTRA = {"cnn": ["--num-workers", "2"]}
# the one model trained with torch.compile: compiling costs tens of seconds a
# model on a CPU, too much to do for each within the suite's time budget
COMPILED = "gpt"


# -----------------------------------------------------------------------------
# runs, made once per session


def plug(project: Path, case: str) -> Path:
    """The case's model.py/data.py into the project (contract_base's where it has none)."""
    for name in ("model.py", "data.py"):
        source = ZOO / case / name
        if not source.exists():
            source = ZOO / "contract_base" / name
        shutil.copyfile(source, project / name)
    return project


def load_fixture(case: str, name: str):
    """Import a fixture's model.py or data.py as a module of its own."""
    path = ZOO / case / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"zoo_{case}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Zoo:
    """Projects and runs, each made once per session, shared by all workers.

    pytest-xdist hands consecutive tests to different workers, so a module-scoped
    fixture would be made once per worker; here each one is made by the first
    worker that needs it, under a file lock, in the session's shared directory.
    A failure is recorded, and reported again to every test that needs it.
    """

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def once(self, key: str, make) -> Path:
        place = self.root / key
        with FileLock(str(self.root / f"{key}.lock")):
            if (place / ".error").exists():
                raise AssertionError(f"(made earlier) {(place / '.error').read_text()}")
            if not (place / ".done").exists():
                shutil.rmtree(place, ignore_errors=True)
                place.mkdir(parents=True)
                started = time.perf_counter()
                try:
                    make(place)
                except Exception as exc:
                    (place / ".error").write_text(
                        "".join(traceback.format_exception_only(exc))
                    )
                    raise
                # how long it took: for whoever keeps this file within its time budget
                (place / ".done").write_text(f"{time.perf_counter() - started:.1f} s\n")
        return place

    def project(self, case: str, features: tuple[str, ...] = ()) -> Path:
        key = f"{case}-{'-'.join(features) or 'plain'}"
        place = self.once(key, lambda p: plug(render(p, features, tiny=False), case))
        return place / "proj"

    def run(self, case: str, features: tuple[str, ...], name: str, *args: str,
            nproc: int = 1, script: str = "train.py") -> dict:
        """{run_dir, returncode, stdout, stderr} of a run of train.py (or of `script`)
        in the case's project with the features; checked for exit status 0 unless
        the name says it is expected to fail ("fail" in it)."""
        project = self.project(case, features)
        run_dir = project / "runs" / name
        check = "fail" not in name

        def make(place: Path) -> None:
            argv = [*args, "--run-dir", str(run_dir)]
            if script != "train.py":
                result = subprocess.run(
                    [sys.executable, "-m", "torch.distributed.run", "--standalone",
                     f"--nproc_per_node={nproc}", script, *argv],
                    cwd=project, capture_output=True, text=True, timeout=300,
                    env=train_env())
                if check and result.returncode != 0:
                    raise AssertionError(f"{script} exited {result.returncode}\n"
                                         f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
            elif nproc == 1:
                result = run_train(project, *argv, tiny_defaults=False, check=check)
            else:
                result = run_torchrun(project, nproc, *argv, tiny_defaults=False, check=check)
            (place / "result.json").write_text(json.dumps({
                "run_dir": str(run_dir), "returncode": result.returncode,
                "stdout": result.stdout, "stderr": result.stderr}))

        key = f"run-{case}-{'-'.join(features) or 'plain'}-{name}"
        result = json.loads((self.once(key, make) / "result.json").read_text())
        result["run_dir"] = Path(result["run_dir"])
        return result

    # the runs that several tests read

    def single(self, case: str) -> dict:
        """One process, batch 2 * BATCH, in the --ddp project: the reference run."""
        return self.run(case, ("ddp",), "one", *SMALL, *EXTRA.get(case, []),
                        "--batch-size", str(2 * BATCH))

    def two_ranks(self, case: str, *args: str, name: str = "two") -> dict:
        return self.run(case, ("ddp",), name, *SMALL, *DIST, "--batch-size", str(BATCH),
                        *args, nproc=2)

    def project_tests(self, case: str, features: tuple[str, ...], *args: str) -> dict:
        """`python -m pytest -q ARGS` inside the case's project: its tests/test_train.py."""
        project = self.project(case, features)
        key = f"pytest-{case}-{'-'.join(features) or 'plain'}"

        def make(place: Path) -> None:
            env = {k: v for k, v in train_env().items() if not k.startswith("PYTEST_")}
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "--basetemp", str(place / "tmp"), *args],
                cwd=project, capture_output=True, text=True, timeout=600, env=env)
            (place / "result.json").write_text(json.dumps({
                "returncode": result.returncode, "output": result.stdout + result.stderr}))

        return json.loads((self.once(key, make) / "result.json").read_text())


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> Zoo:
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this session
    return Zoo(root / "zoo")


def weights(run_dir: Path, name: str = "last") -> dict:
    return load_checkpoint(run_dir / "checkpoints" / f"{name}.pt")["model"]


def assert_finite_losses(run_dir: Path) -> dict:
    summary = read_summary(run_dir)
    for name in ("val_loss", "test_loss"):
        assert name in summary, f"summary.json lacks {name}: {sorted(summary)}"
        assert math.isfinite(summary[name]), (name, summary[name])
    return summary


def assert_identical(a, b, where: str) -> None:
    """Nested dicts/lists of tensors and plain values are exactly equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}/{i}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# -----------------------------------------------------------------------------
# the generated project's own tests, with the zoo's models plugged in

# the cnn's project has --ddp (its DDP test then checks what it can for a model
# with BatchNorm)
PROJECT_FEATURES = {"cnn": ("ddp",)}
# The project's tests with the models that stress them most: BatchNorm and seeded
# augmentation under DDP (cnn), dropout and tokens (gpt). The frozen and metric-less models train in the other tests
# here; their runs of the project's tests (half a minute each on 2 cores) were
# left out to keep the suite within its time, and so was the unused branch's: its
# project has no --ddp, so its tests are the smoke run and the resume that every
# other case runs too (its branch is tested under DDP below).
PROJECT_TEST_CASES = ["cnn", "gpt"]


@pytest.mark.parametrize("case", PROJECT_TEST_CASES)
def test_project_tests_pass(zoo, case):
    result = zoo.project_tests(case, PROJECT_FEATURES.get(case, ()))
    assert result["returncode"] == 0, result["output"]
    assert " passed" in result["output"] and "failed" not in result["output"]


def test_project_resume_test_catches_unrestored_data_rng(zoo):
    result = zoo.project_tests("unrestored_rng", (), "-k", "resume")
    assert result["returncode"] != 0, result["output"]
    assert "1 failed" in result["output"], result["output"]
    # its message points at the data randomness rule
    assert "set_epoch" in result["output"] and "generator" in result["output"], result["output"]


# -----------------------------------------------------------------------------
# torch.compile, once (it compiles for tens of seconds with a cold cache)


def test_trains_with_torch_compile(zoo):
    run = zoo.run(COMPILED, ("compile",), "compile", *SMALL, "--batch-size", str(2 * BATCH))
    assert_finite_losses(run["run_dir"])
    # the checkpoint holds the plain module's weights: they load into a fresh model
    model = load_fixture(COMPILED, "model").build_model(None)
    model.load_state_dict(weights(run["run_dir"]))


# -----------------------------------------------------------------------------
# single process: every good model trains and reports its losses
# (these make the reference runs that most later tests read, so they come before
# those: pytest-xdist hands tests out in file order)


@pytest.mark.parametrize("case", GOOD)
def test_trains_to_finite_val_and_test_loss(zoo, case):
    run = zoo.single(case)
    summary = assert_finite_losses(run["run_dir"])
    rows = read_metrics(run["run_dir"])
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows and all(math.isfinite(float(r["loss"])) for r in train_rows)
    assert load_checkpoint(run["run_dir"] / "checkpoints" / "last.pt")["train_state"]["step"] == MAX_STEPS
    reported = {k for k in summary if k.startswith(("val_", "test_"))}
    if case == "nometrics":
        assert reported == {"val_loss", "test_loss"}
    else:
        assert reported == {"val_loss", "test_loss", "val_acc", "test_acc"}


# -----------------------------------------------------------------------------
# two processes (gloo) with batch B == one process with batch 2B


@pytest.mark.parametrize("case", ["gpt", "frozen", "nometrics"])
def test_two_processes_equal_one_with_double_batch(zoo, case):
    one, two = zoo.single(case), zoo.two_ranks(case)
    assert "world size 2" in two["stdout"]
    a, b = weights(one["run_dir"]), weights(two["run_dir"])
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=DDP_ATOL), (
            f"{case}: {name} differs by {(a[name] - b[name]).abs().max().item():.3g}"
        )
    assert_finite_losses(two["run_dir"])


# Runs train.main with every rank keeping its model's parameters after each
# optimizer step (a global post-step hook), written to rank<R>_weights.pt in the
# run directory when main returns. Only rank 0 writes checkpoints, and at the end
# every rank loads best.pt: this shows what each rank trained.
RANK_WEIGHTS = '''
import os
import sys
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.optimizer import register_optimizer_step_post_hook

import train

held = {}
init = DistributedDataParallel.__init__


def init_and_hold(self, module, *args, **kwargs):
    init(self, module, *args, **kwargs)
    held["module"] = module


def after_step(optimizer, args, kwargs):
    held["weights"] = {n: p.detach().clone() for n, p in held["module"].named_parameters()}


DistributedDataParallel.__init__ = init_and_hold
register_optimizer_step_post_hook(after_step)
code = train.main(sys.argv[1:])
run_dir = Path(sys.argv[sys.argv.index("--run-dir") + 1])
torch.save(held["weights"], run_dir / f"rank{os.environ['RANK']}_weights.pt")
sys.exit(code)
'''


def test_cnn_under_two_processes_trains_and_the_ranks_agree(zoo):
    # The cnn cannot equal one process with the double batch, by design: in
    # training mode each rank's BatchNorm normalises by the statistics of its own
    # half batch (SyncBatchNorm would share them, but needs a GPU backend), and
    # each rank draws its own dropout masks (seed + rank). What DDP does promise:
    # gradients averaged over the ranks, so every rank steps to the same weights.
    project = zoo.project("cnn", ("ddp",))
    (project / "zoo_rank_weights.py").write_text(RANK_WEIGHTS)
    run = zoo.run("cnn", ("ddp",), "two-weights", *SMALL, *DIST, "--batch-size", str(BATCH),
                  nproc=2, script="zoo_rank_weights.py")
    run_dir = run["run_dir"]
    summary = assert_finite_losses(run_dir)
    # best.pt scores what validation said it did: the ranks evaluate with rank 0's
    # running statistics, the ones saved, not with each rank's own last update
    assert summary["val_loss"] == summary["best"], summary
    rank0 = torch.load(run_dir / "rank0_weights.pt", weights_only=True)
    rank1 = torch.load(run_dir / "rank1_weights.pt", weights_only=True)
    saved = weights(run_dir)
    assert rank0.keys() == rank1.keys() and rank0
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), f"ranks differ in {name}"
        # last.pt holds what the ranks trained (it is written after the last step)
        assert torch.equal(rank0[name], saved[name]), name
    # and training moved them on after the first checkpoint
    early = weights(run_dir, f"step_{CKPT_EVERY:08d}")
    assert any(not torch.equal(saved[n], early[n]) for n in rank0)


# -----------------------------------------------------------------------------
# unused parameters under DDP


def unused_names() -> list[str]:
    model = load_fixture("unused", "model").build_model(None)
    return [f"branch.{n}" for n, _ in model.branch.named_parameters()]


def test_unused_branch_without_the_flag_fails_with_one_line_naming_it(zoo):
    run = zoo.two_ranks("unused", name="two-no-flag-fails")
    assert run["returncode"] != 0
    output = run["stdout"] + run["stderr"]
    lines = [line for line in output.splitlines() if "--find-unused-parameters" in line]
    assert len(lines) == 1, output
    for name in unused_names():
        assert name in lines[0], (name, lines[0])
    assert not (run["run_dir"] / "summary.json").exists()


def test_unused_branch_without_the_flag_no_rank_prints_a_traceback(zoo):
    # The rank that finds the unused parameter exits with its one line; the other
    # rank, waiting for it in the gradient all-reduce, must not add a traceback.
    # (torchrun's own failure report, lines without a "[rank" prefix, is not
    # train.py's to control.)
    run = zoo.two_ranks("unused", name="two-no-flag-fails")
    assert run["returncode"] != 0
    ranks = [line for line in run["stderr"].splitlines() if line.startswith("[rank")]
    assert not [line for line in ranks if "Traceback" in line or "Error" in line], (
        run["stderr"]
    )


def test_unused_branch_with_the_flag_equals_one_process(zoo):
    one = zoo.single("unused")
    two = zoo.two_ranks("unused", "--find-unused-parameters", name="two-flag")
    a, b = weights(one["run_dir"]), weights(two["run_dir"])
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=DDP_ATOL), (
            f"{name} differs by {(a[name] - b[name]).abs().max().item():.3g}"
        )
    # the branch did learn (some batches took it)
    init = load_checkpoint(two["run_dir"] / "checkpoints" / "step_00000004.pt")["model"]
    assert not torch.equal(b["branch.weight"], init["branch.weight"])


# -----------------------------------------------------------------------------
# resume in the middle of an epoch: bit-identical


@pytest.mark.parametrize("case", GOOD)
def test_resume_mid_epoch_is_bit_identical(zoo, case):
    straight = zoo.single(case)["run_dir"]
    start = straight / "checkpoints" / f"step_{RESUME_STEP:08d}.pt"
    state = load_checkpoint(start)["train_state"]
    assert (state["epoch"], state["batch_in_epoch"]) == (1, RESUME_STEP - BATCHES), state
    resumed = zoo.run(case, ("ddp",), "resumed", *SMALL, *EXTRA.get(case, []),
                      "--batch-size", str(2 * BATCH), "--resume", str(start))
    assert f"at step {RESUME_STEP}" in resumed["stdout"]
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed["run_dir"] / "checkpoints" / "last.pt")
    assert_identical(a["model"], b["model"], "model")
    assert_identical(a["optimizer"], b["optimizer"], "optimizer")
    assert read_summary(straight) == read_summary(resumed["run_dir"])


# -----------------------------------------------------------------------------
# with the features that change the arithmetic


@pytest.mark.parametrize("case", GOOD)
def test_trains_with_bf16_autocast(zoo, case):
    run = zoo.run(case, ("amp",), "bf16", *SMALL, "--batch-size", str(2 * BATCH),
                  "--amp-dtype", "bf16")
    assert_finite_losses(run["run_dir"])
    # bf16 was really on: the weights differ from the fp32 run's
    fp32 = weights(zoo.single(case)["run_dir"])
    assert any(not torch.equal(w, fp32[n]) for n, w in weights(run["run_dir"]).items())


@pytest.mark.parametrize("case", GOOD)
def test_trains_with_gradient_accumulation(zoo, case):
    run = zoo.run(case, ("accumulate",), "accumulate", *SMALL, "--batch-size", str(BATCH),
                  "--accumulate-steps", "2")
    assert_finite_losses(run["run_dir"])
    # 6 micro-batches an epoch make 3 optimizer steps: 12 steps take 4 epochs
    last = load_checkpoint(run["run_dir"] / "checkpoints" / "last.pt")
    assert (last["train_state"]["step"], last["train_state"]["epoch"]) == (MAX_STEPS, 4)


# -----------------------------------------------------------------------------
# what particular models need


def test_frozen_optimizer_holds_only_the_head_and_the_checkpoint_the_whole_model(zoo):
    checkpoint = load_checkpoint(zoo.single("frozen")["run_dir"] / "checkpoints" / "last.pt")
    model = load_fixture("frozen", "model").build_model(None)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight", "head.bias"]
    held = [i for group in checkpoint["optimizer"]["param_groups"] for i in group["params"]]
    assert len(held) == len(trainable)
    assert len(checkpoint["optimizer"]["state"]) == len(trainable)
    saved = checkpoint["model"]
    assert saved.keys() == model.state_dict().keys()  # the backbone is saved too
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(saved[f"backbone.{name}"], value), f"backbone.{name} changed"
    assert not torch.equal(saved["head.weight"], model.head.weight.detach())  # trained


def test_gpt_tied_embeddings_stay_tied_after_loading(zoo):
    checkpoint = load_checkpoint(zoo.single("gpt")["run_dir"] / "checkpoints" / "last.pt")
    saved = checkpoint["model"]
    assert torch.equal(saved["lm_head.weight"], saved["tok_emb.weight"])
    model = load_fixture("gpt", "model").build_model(None)
    before = model.tok_emb.weight.detach().clone()
    model.load_state_dict(saved)
    assert model.lm_head.weight is model.tok_emb.weight  # still one parameter
    assert torch.equal(model.lm_head.weight, saved["tok_emb.weight"])
    assert not torch.equal(model.tok_emb.weight, before)  # trained
    # the optimizer holds the tied weight once
    held = [i for group in checkpoint["optimizer"]["param_groups"] for i in group["params"]]
    assert len(held) == len(list(model.parameters()))


def test_gpt_logs_tokens_per_second(zoo):
    rows = [r for r in read_metrics(zoo.single("gpt")["run_dir"]) if r["split"] == "train"]
    assert rows
    for row in rows:
        tokens_per_s, samples_per_s = float(row["tokens_per_s"]), float(row["samples_per_s"])
        # metrics.csv rounds to 6 significant digits
        assert tokens_per_s == pytest.approx(16 * samples_per_s, rel=1e-5), row


# -----------------------------------------------------------------------------
# contract breakers: one line on stderr, naming the function, before training


@pytest.mark.parametrize("case", list(BREAKERS))
def test_contract_breaker_fails_with_one_line(zoo, case):
    run = zoo.run(case, (), "fail", *SMALL, "--batch-size", str(2 * BATCH))
    assert run["returncode"] != 0, run["stdout"]
    lines = [line for line in run["stderr"].splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in run["stderr"], run["stderr"]
    assert lines[0].startswith(BREAKERS[case]), lines[0]
    # before training: no optimizer step was taken
    assert not (run["run_dir"] / "checkpoints" / "last.pt").exists()
    assert "step 1/" not in run["stdout"] and "step 2/" not in run["stdout"]


# -----------------------------------------------------------------------------
# the zoo sharded: --fsdp on two processes trains each model as --ddp does


@pytest.mark.slow
@pytest.mark.parametrize("case", ["gpt", "cnn"])
def test_fsdp_on_two_processes_equals_ddp(zoo, case):
    # The two models that stress sharding most (test_fsdp.py has the rest). Same
    # batches, same seeds per rank (dropout), gradients averaged over the ranks
    # by a reduce-scatter instead of an all-reduce: the weights agree up to the last
    # bits, as two processes agree with one (DDP_ATOL). The gpt ties its embeddings
    # (sharded together, with the root); the cnn's BatchNorm: rank 0 updates its
    # running statistics with its own half batch under both, and both save rank 0's.
    # (The unused branch, taken by some ranks only, cannot be sharded: see the
    # fsdp explanation.)
    ddp = zoo.two_ranks(case)  # the run that test_two_processes_equal_one... reads
    fsdp = zoo.run(case, ("fsdp",), "two", *SMALL, *DIST, "--batch-size", str(BATCH), nproc=2)
    assert "world size 2" in fsdp["stdout"]
    a, b = weights(fsdp["run_dir"], "final"), weights(ddp["run_dir"])
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=DDP_ATOL), (
            f"{case}: {name} differs by {(a[name] - b[name]).abs().max().item():.3g}"
        )
    summary = assert_finite_losses(fsdp["run_dir"])
    assert summary["val_loss"] == summary["best"], summary  # best.pt is what validated
