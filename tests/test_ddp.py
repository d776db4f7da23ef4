"""Distributed training with torchrun (CPU, gloo, 2 processes), proven by running it.

One project is rendered with ddp + accumulate + clip + amp; options switch each
feature's effect off where a case does not want it (`--accumulate-steps 1`,
`--clip-norm 0`, `--amp-dtype off`). The tiny MLP has no dropout, so a 2-process
run with `--batch-size B` must end where a 1-process run with `--batch-size 2B`
does: every global batch holds the same samples (rank r takes every other element
of the same permutation) and DDP averages the two ranks' mean gradients.

Runs are cached per module (`trained`): the plain 2-rank run also serves the
validation, resume, two-node and printing checks, because the options those add
(`--n-val 97`, `--ckpt-every`) change nothing about training.
"""

import ast
import importlib.util
import math
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import (
    PLAIN,
    TINY_ARGS,
    feature_cases,
    load_checkpoint,
    read_metrics,
    read_summary,
    render,
    run_torchrun,
    train_env,
)

torch = pytest.importorskip("torch")

N_TRAIN = 448  # 14 batches of 32 per epoch: also 14 per rank at --batch-size 16
N_VAL = 97  # not divisible by 2: rank 0 evaluates 49 samples, rank 1 48
N_TEST = 95
BATCH = 16  # per process under torchrun; the 1-process run uses 2 * BATCH
ACCUMULATE = 3  # 14 micro-batches = windows of 3, 3, 3, 3 and a short one of 2
CLIP_NORM = 0.3  # below the gradient norms the tiny model logs early on
CKPT_EVERY = 5  # steps 5, 10, ... of 14 per epoch: step 20 is mid-way through epoch 1
RESUME_STEP = 20
KILL_STEP = 7
FP32_ATOL = 1e-6

COMMON = [
    *TINY_ARGS, "--n-train", str(N_TRAIN), "--n-val", str(N_VAL), "--n-test", str(N_TEST),
    "--ckpt-every", str(CKPT_EVERY), "--keep-last", "100", "--dist-timeout-s", "30",
]
CASES = feature_cases(ACCUMULATE, CLIP_NORM)


# -----------------------------------------------------------------------------
# launching


def docstring_commands(project: Path) -> dict[str, list[str]]:
    """The torchrun commands of train.py's docstring, as argv: {'one-node', 'multi-node'}."""
    doc = ast.get_docstring(ast.parse((project / "train.py").read_text()))
    lines = doc.replace("\\\n", " ").splitlines()
    commands = [shlex.split(line) for line in lines if line.strip().startswith("torchrun ")]
    found = {}
    for argv in commands:
        found["multi-node" if any(a.startswith("--nnodes") for a in argv) else "one-node"] = argv
    return found


def launcher(command: list[str], **values) -> list[str]:
    """The torchrun options of a documented command, with some `--key=value` replaced."""
    assert command[0] == "torchrun" and "train.py" in command, command
    options = command[1 : command.index("train.py")]
    missing = set(values) - {a.split("=", 1)[0].lstrip("-") for a in options}
    assert not missing, f"documented command {shlex.join(command)} lacks {missing}"
    out = []
    for arg in options:
        key = arg.split("=", 1)[0].lstrip("-")
        out.append(f"--{key}={values[key]}" if key in values else arg)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dist_env() -> dict[str, str]:
    """A clean environment: nothing a launcher would otherwise read (MASTER_ADDR...)."""
    env = train_env()
    for name in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "GROUP_RANK", "TORCHELASTIC_RUN_ID"):
        env.pop(name, None)
    return env


def torchrun(options: list[str], script: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *options, script, *args]


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if result.returncode != 0:
        raise AssertionError(f"{shlex.join(result.args)} exited {result.returncode}\n"
                             f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result


def run(argv: list[str], project: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=timeout,
                          env=dist_env(), check=False)


def weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


# -----------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return render(tmp_path_factory.mktemp("ddp"), ["ddp", "accumulate", "clip", "amp"])


@pytest.fixture(scope="module")
def trained(project):
    """trained(case, nproc) -> (run dir, completed process), each run made once per module.

    nproc=2 runs the documented one-node command (`torchrun --standalone
    --nproc_per_node=N train.py`) with N=2 and --batch-size B; nproc=1 runs
    `python train.py --batch-size 2B`.
    """
    cache: dict[tuple[str, int], tuple[Path, subprocess.CompletedProcess]] = {}

    def get(case: str, nproc: int) -> tuple[Path, subprocess.CompletedProcess]:
        if (case, nproc) not in cache:
            run_dir = project / "runs" / f"{case}-{nproc}"
            args = [*COMMON, *PLAIN, *CASES[case], "--run-dir", str(run_dir)]
            if nproc == 1:
                argv = [sys.executable, "train.py", *args, "--batch-size", str(2 * BATCH)]
            else:
                options = launcher(docstring_commands(project)["one-node"], nproc_per_node=nproc)
                argv = torchrun(options, "train.py", [*args, "--batch-size", str(BATCH)])
            cache[case, nproc] = run_dir, check(run(argv, project))
        return cache[case, nproc]

    return get


def load_project_module(project: Path, name: str):
    spec = importlib.util.spec_from_file_location(f"ddp_test_{name}", project / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -----------------------------------------------------------------------------
# 1. equivalence: 2 processes x B == 1 process x 2B


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_equal_one_process_with_double_batch(trained, case):
    (one, _), (two, _) = trained(case, 1), trained(case, 2)
    steps = load_checkpoint(two / "checkpoints" / "last.pt")["train_state"]["step"]
    assert steps == load_checkpoint(one / "checkpoints" / "last.pt")["train_state"]["step"]
    batches_per_epoch = N_TRAIN // (2 * BATCH)
    if case == "bf16":
        # bf16 autocast rounds each rank's weight gradient (a sum over B samples)
        # to 8 significant bits, where one process rounds the sum over 2B: the two
        # runs' gradients differ by up to ~2^-8 relative, and AdamW (whose update is
        # about lr in size whatever the gradient's scale) turns that into about
        # lr * 2^-8 per parameter per step. The budget is that, summed over all
        # steps: a few 1e-3 here, against weights of order 1 -- a wrong sharding
        # or averaging changes every step's gradient wholesale and lands far outside.
        atol = steps * float(TINY_ARGS[TINY_ARGS.index("--lr") + 1]) * 2**-8
        # The feature really ran: bf16 moves the weights away from fp32 training
        # by far more than the fp32 tolerance.
        assert max_diff(weights(one), weights(trained("plain", 1)[0])) > 100 * FP32_ATOL
    else:
        atol = FP32_ATOL
    if case == "accumulate":
        # optimizer steps count windows of ACCUMULATE micro-batches, the last one short
        assert steps == 2 * math.ceil(batches_per_epoch / ACCUMULATE)
    else:
        assert steps == 2 * batches_per_epoch
    if case == "clip":
        # the logged pre-clip norm exceeds the limit, so clipping changed steps
        norms = [float(row["grad_norm"]) for row in read_metrics(two) if row["split"] == "train"]
        assert max(norms) > CLIP_NORM
    a, b = weights(one), weights(two)
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=atol), (
            f"{case}: {name} differs by {(a[name] - b[name]).abs().max().item():.3g} > {atol:.3g}"
        )


# -----------------------------------------------------------------------------
# 2. one gradient all-reduce per optimizer step with accumulation

COUNT_SYNCS = '''
"""Run train.main with a DDP communication hook that counts all-reduce rounds."""
import os
import sys
from pathlib import Path

from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

import train

rounds = 0


def counting_allreduce(state, bucket):
    global rounds
    if bucket.is_last():  # one round of a backward pass may span several buckets
        rounds += 1
    return default_hooks.allreduce_hook(state, bucket)  # the default: mean over ranks


init = DistributedDataParallel.__init__


def init_with_hook(self, *args, **kwargs):
    init(self, *args, **kwargs)
    self.register_comm_hook(None, counting_allreduce)


DistributedDataParallel.__init__ = init_with_hook
code = train.main(sys.argv[1:])
# main() destroyed the process group: gloo's worker threads must be gone (a group
# still referenced somewhere keeps them running into interpreter shutdown)
threads = [(Path("/proc/self/task") / t / "comm").read_text().strip() for t in os.listdir("/proc/self/task")]
rank = os.environ["RANK"]
Path(f"syncs_rank{rank}.txt").write_text(str(rounds))
Path(f"threads_rank{rank}.txt").write_text(",".join(threads))
sys.exit(code)
'''


@pytest.mark.slow
def test_one_gradient_allreduce_per_optimizer_step(project):
    (project / "count_syncs.py").write_text(COUNT_SYNCS)
    run_dir = project / "runs" / "count-syncs"
    args = [*COMMON, *PLAIN, "--accumulate-steps", str(ACCUMULATE), "--batch-size", str(BATCH),
            "--run-dir", str(run_dir)]
    check(run(torchrun(["--standalone", "--nproc_per_node=2"], "count_syncs.py", args), project))
    steps = load_checkpoint(run_dir / "checkpoints" / "last.pt")["train_state"]["step"]
    micro_batches = 2 * (N_TRAIN // (2 * BATCH))
    assert steps < micro_batches  # accumulation really happened
    for rank in (0, 1):
        assert int((project / f"syncs_rank{rank}.txt").read_text()) == steps
        # destroy_process_group() really freed the group (see train.py's imports)
        threads = (project / f"threads_rank{rank}.txt").read_text().split(",")
        assert not [t for t in threads if "gloo" in t], threads


# -----------------------------------------------------------------------------
# 3. validation over 2 ranks == one process over the whole set


@pytest.mark.slow
def test_validation_metrics_under_two_ranks_match_one_process(project, trained):
    two, _ = trained("plain", 2)
    summary = read_summary(two)
    # evaluate the very weights the summary reports on (best.pt) in this process
    model_py, data_py = load_project_module(project, "model"), load_project_module(project, "data")
    cfg = SimpleNamespace(n_train=N_TRAIN, n_val=N_VAL, n_test=N_TEST, data_seed=0)
    _, val_set, test_set = data_py.build_datasets(cfg)
    model = model_py.build_model(cfg)
    model.load_state_dict(load_checkpoint(two / "checkpoints" / "best.pt")["model"])
    model.eval()
    for split, dataset in (("val", val_set), ("test", test_set)):
        assert len(dataset) % 2 == 1
        with torch.no_grad():
            _, metrics = model_py.compute_loss(model, dataset.tensors)
        for name, value in metrics.items():
            assert summary[f"{split}_{name}"] == pytest.approx(value.item(), rel=1e-5, abs=1e-6), (split, name)


# -----------------------------------------------------------------------------
# 4. resume under 2 ranks from a mid-epoch checkpoint


@pytest.mark.slow
def test_resume_mid_epoch_under_two_ranks_is_bit_identical(project, trained):
    straight, _ = trained("plain", 2)
    checkpoint = straight / "checkpoints" / f"step_{RESUME_STEP:08d}.pt"
    state = load_checkpoint(checkpoint)["train_state"]
    assert 0 < state["batch_in_epoch"] < N_TRAIN // (2 * BATCH), state  # mid-epoch
    resumed = project / "runs" / "resumed-2"
    args = [*COMMON, *PLAIN, "--batch-size", str(BATCH), "--run-dir", str(resumed),
            "--resume", str(checkpoint)]
    result = check(run(torchrun(["--standalone", "--nproc_per_node=2"], "train.py", args), project))
    assert f"at step {RESUME_STEP}" in result.stdout
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert a["train_state"] == b["train_state"]
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for p, q in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(p[k], q[k]) for k in p)
    # and the training logged after the resume point is the same, row for row
    def after_resume(run_dir: Path) -> list[list[str]]:
        rows = read_metrics(run_dir)
        keys = ("step", "loss", "acc", "lr")
        return [[r[k] for k in keys] for r in rows if r["split"] == "train" and int(r["step"]) > RESUME_STEP]

    assert after_resume(straight) == after_resume(resumed)


# -----------------------------------------------------------------------------
# 5. two "nodes" on loopback


@pytest.mark.slow
def test_two_nodes_on_loopback_equal_one_node(project, trained):
    one_node, _ = trained("plain", 2)
    run_dir = project / "runs" / "two-nodes"
    command = docstring_commands(project)["multi-node"]
    port = free_port()
    env = dist_env()
    # no MASTER_ADDR / MASTER_PORT anywhere: the c10d rendezvous endpoint is enough
    assert not {"MASTER_ADDR", "MASTER_PORT"} & set(env)
    args = [*COMMON, *PLAIN, "--batch-size", str(BATCH), "--run-dir", str(run_dir)]
    nodes = []
    for node_rank in (0, 1):
        options = launcher(command, nproc_per_node=1, node_rank=node_rank,
                           rdzv_endpoint=f"127.0.0.1:{port}")
        options.append(f"--rdzv_id=test-{port}")
        assert not any(o.startswith("--master") for o in options)
        nodes.append(subprocess.Popen(torchrun(options, "train.py", args), cwd=project, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for node in nodes:
            outputs.append(node.communicate(timeout=240))
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    for node, (out, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, f"--- stdout\n{out}\n--- stderr\n{err}"
    assert sum("world size 2" in out for out, _ in outputs) == 1  # one rank 0 in all
    a, b = weights(one_node), weights(run_dir)
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=FP32_ATOL), name


# -----------------------------------------------------------------------------
# 6. a rank that dies; only rank 0 prints

KILL_RANK_1 = '''
"""Run train.main; rank 1 kills itself (SIGKILL: no cleanup) before optimizer step KILL_STEP."""
import os
import signal
import sys

import train

lr_at = train.lr_at


def lr_at_or_die(step, cfg, total_steps):
    if os.environ["RANK"] == "1" and step == int(os.environ["KILL_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return lr_at(step, cfg, total_steps)


train.lr_at = lr_at_or_die
sys.exit(train.main(sys.argv[1:]))
'''


@pytest.mark.slow
def test_killed_rank_ends_the_job_and_keeps_the_last_checkpoint_loadable(project):
    (project / "kill_rank_1.py").write_text(KILL_RANK_1)
    run_dir = project / "runs" / "killed"
    args = [*COMMON, *PLAIN, "--ckpt-every", "2", "--batch-size", str(BATCH), "--run-dir", str(run_dir)]
    argv = torchrun(["--standalone", "--nproc_per_node=2"], "kill_rank_1.py", args)
    # bounded: a hang until the test's timeout raises TimeoutExpired and fails
    result = subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=120,
                            env={**dist_env(), "KILL_STEP": str(KILL_STEP)}, check=False)
    assert result.returncode != 0
    # torchrun's own failure report names the signal that killed the rank
    assert "SIGKILL" in result.stderr, result.stderr
    saved = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    assert saved, "no periodic checkpoint was written before the kill"
    newest = load_checkpoint(saved[-1])
    assert 0 < newest["train_state"]["step"] <= KILL_STEP
    model = load_project_module(project, "model").build_model(None)
    model.load_state_dict(newest["model"])  # loads cleanly: no missing or `module.` keys


@pytest.mark.slow
def test_only_rank_0_prints(trained):
    _, result = trained("plain", 2)
    lines = result.stdout.splitlines()
    # the model summary, the world line and the final line: once each, not per rank
    for marker in ("module", "world size 2", "final (best checkpoint)"):
        assert sum(line.startswith(marker) for line in lines) == 1, (marker, result.stdout)
    assert len(lines) == len(set(lines)), result.stdout


# -----------------------------------------------------------------------------
# the documented commands


def test_docstring_shows_one_node_and_multi_node_commands(project):
    from torch.distributed.run import get_args_parser

    commands = docstring_commands(project)
    assert set(commands) == {"one-node", "multi-node"}
    one = get_args_parser().parse_args(commands["one-node"][1:])
    assert one.standalone and one.training_script == "train.py"
    multi = get_args_parser().parse_args(commands["multi-node"][1:])
    assert (multi.nnodes, multi.rdzv_backend, multi.training_script) == ("2", "c10d", "train.py")
    assert multi.node_rank == 0 and ":" in multi.rdzv_endpoint
    # both are what test_ddp actually launches (see `trained` and the two-node test)
    launcher(commands["one-node"], nproc_per_node=2)
    launcher(commands["multi-node"], nproc_per_node=1, node_rank=1, rdzv_endpoint="127.0.0.1:1")


# -----------------------------------------------------------------------------
# --overfit-batches counts global batches


@pytest.mark.slow
def test_overfit_batches_under_two_ranks_gives_each_rank_n_batches(project):
    run_dir = project / "runs" / "overfit-2"
    args = [*COMMON, *PLAIN, "--batch-size", str(BATCH), "--run-dir", str(run_dir),
            "--overfit-batches", "2", "--max-epochs", "2", "--log-every", "1"]
    check(run(torchrun(["--standalone", "--nproc_per_node=2"], "train.py", args), project))
    steps = [int(r["step"]) for r in read_metrics(run_dir) if r["split"] == "train"]
    # 2 optimizer steps per epoch, as in one process: not 1 (the 2 batches split
    # between the ranks)
    assert steps == [1, 2, 3, 4], steps


# -----------------------------------------------------------------------------
# torch alone: a project's requirements.txt installs no numpy (torch does not)


def test_checkpoints_and_resume_under_torchrun_without_numpy(tmp_path):
    # dist.all_gather_object and broadcast_object_list stop with "Numpy is not
    # available" where numpy is missing; the ranks' RNG states, the resume path and
    # the EMA travel as byte tensors instead. A numpy that fails to import stands
    # in for one that is not installed.
    hidden = tmp_path / "no_numpy" / "numpy"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ModuleNotFoundError('numpy', name='numpy')\n")
    env = {"PYTHONPATH": str(hidden.parent)}
    project = render(tmp_path, ["ddp", "ema"])
    args = ("--run-dir", "runs/bare", "--ckpt-every", "2", "--batch-size", "8")
    run_torchrun(project, 2, *args, "--max-steps", "4", env=env)
    resumed = run_torchrun(project, 2, *args, "--max-steps", "6", "--resume", "auto", env=env)
    assert "resume: runs/bare/checkpoints/last.pt at step 4" in resumed.stdout
    assert "Numpy is not available" not in resumed.stderr
    # every rank's RNG state is in the checkpoint, as gathered
    assert len(load_checkpoint(project / "runs/bare/checkpoints/last.pt")["rng"]) == 2
