"""Generated projects with --slurm, run by a real (local, single-node) SLURM cluster.

Each test submits a rendered project's own slurm/*.sbatch with sbatch and checks
what the generated code does there: a job trains like a direct run; USR1
(preemption, time limit) checkpoints, requeues and resumes to bit-identical
weights, with one and with two tasks; scancel (SIGTERM) checkpoints without
requeueing; a job array sweeps hyperparameters. The job runs `python` from PATH,
a wrapper script that execs this interpreter (sys.executable), so a job sees the
suite's environment, a virtual environment included.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import (
    TINY_ARGS,
    load_checkpoint,
    read_summary,
    render,
    run_torchrun,
    run_train,
)
from slurm_cluster import TERMINAL_STATES, SlurmCluster

from scaffold.project import create_project

pytestmark = pytest.mark.slurm

# Appended to the tiny model.py: with TINY_STEP_SLEEP set, every training step
# takes at least that long, so a run is still training when the test's signal
# arrives (however fast or loaded the machine). Sleeping changes no numbers.
SLOW_STEPS = """

import os as _os
import time as _time

_compute_loss = compute_loss


def compute_loss(model, batch):
    if model.training:
        _time.sleep(float(_os.environ.get("TINY_STEP_SLEEP", "0")))
    return _compute_loss(model, batch)
"""

# Preemption runs: 15 epochs x 16 steps, each >= 10 ms, checkpoints every 5 steps.
LONG_ARGS = [*TINY_ARGS, "--max-epochs", "15", "--ckpt-every", "5"]
SLOW = {"TINY_STEP_SLEEP": "0.01"}
# The test node has 2 cores; the scripts ask for more by default.
# The test cluster has no GPUs: --gpus-per-node=0 overrides the scripts' request,
# as the scripts tell users of CPU-only clusters to do.
SMALL = ["--cpus-per-task=1", "--gpus-per-node=0"]
TWO_TASKS = [*SMALL, "--ntasks-per-node=2"]


def _project(root: Path, features: list[str]) -> Path:
    project = render(root, features)
    with (project / "model.py").open("a") as f:
        f.write(SLOW_STEPS)
    return project


@pytest.fixture(scope="module")
def slurm_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _project(tmp_path_factory.mktemp("slurm"), ["slurm"])


@pytest.fixture(scope="module")
def ddp_slurm_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _project(tmp_path_factory.mktemp("ddp_slurm"), ["ddp", "slurm"])


@pytest.fixture(scope="module")
def fsdp_slurm_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _project(tmp_path_factory.mktemp("fsdp_slurm"), ["fsdp", "slurm"])


@pytest.fixture(scope="module")
def background() -> Iterator[ThreadPoolExecutor]:
    """Runs direct reference runs while the SLURM job they are compared with runs."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


def direct_run(launch, project: Path, run_dir: Path, *args: str) -> Path:
    launch(project, *args, "--run-dir", str(run_dir))
    return run_dir


@pytest.fixture(scope="module")
def reference(
    background: ThreadPoolExecutor,
    slurm_project: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Future[Path]:
    """An uninterrupted `python train.py LONG_ARGS`: its run directory, once done."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    return background.submit(direct_run, run_train, slurm_project, run_dir, *LONG_ARGS)


@pytest.fixture(scope="module")
def python_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory whose `python` runs this interpreter (first on the jobs' PATH).

    A script that execs sys.executable, not a symlink to it: Python looks for a
    venv's pyvenv.cfg next to the path it was started by, so a venv interpreter
    started through a symlink elsewhere runs as its base interpreter, without
    the venv's packages. exec keeps the process, so signals reach python itself.
    """
    bin_dir = tmp_path_factory.mktemp("bin")
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)
    return bin_dir


def job_env(cluster: SlurmCluster, python_bin: Path, extra: dict | None = None) -> dict:
    """The environment sbatch exports into the job (--export=ALL)."""
    # a suite that itself runs under SLURM or torchrun must not leak its job
    leaks = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    env = {
        key: value
        for key, value in cluster.env.items()
        if key not in leaks and not key.startswith(("SLURM_", "SBATCH_", "SRUN_"))
    }
    env["SLURM_CONF"] = cluster.env["SLURM_CONF"]
    env["PATH"] = os.pathsep.join([str(python_bin), env["PATH"]])
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(extra or {})})
    return env


def sbatch(cluster: SlurmCluster, project: Path, env: dict, *args: str) -> int:
    """`sbatch --export=ALL ARGS` in the project directory; the job id."""
    return cluster.submit(["--export=ALL", *args], cwd=project, env=env, timeout=300)


def run_job(cluster: SlurmCluster, project: Path, env: dict, *args: str) -> int:
    """Submit and wait until the job COMPLETED (exit status 0).

    Polls instead of `sbatch --wait`, whose poll interval grows: it returned 42 s
    after the start of a 12 s job.
    """
    job = sbatch(cluster, project, env, *args)
    cluster.wait_for_state(job, {"COMPLETED"}, timeout=180)
    return job


def job_output(project: Path, job: int) -> str:
    return (project / f"proj-{job}.out").read_text()


def wait_until(
    cluster: SlurmCluster,
    job: int | str,
    ready,
    what: str,
    timeout: float,
    running: bool,
) -> None:
    """Poll `ready()`; fail with the job's state and the daemon logs.

    running: fail at once when the job ended (rather than after `timeout`).
    """
    deadline = time.monotonic() + timeout
    while not ready():
        state = cluster.job_state(job)
        if time.monotonic() > deadline or running and state in TERMINAL_STATES:
            raise AssertionError(
                f"job {job} is {state} before {what} (waited up to {timeout}s)\n"
                f"{cluster.job_info(job)}\n{cluster.log_tails()}"
            )
        time.sleep(0.1)


def wait_for_training(cluster: SlurmCluster, job: int | str, run_dir: Path) -> None:
    """Until metrics.csv has a row: train.py is past installing its signal handlers."""
    metrics = run_dir / "metrics.csv"

    def training() -> bool:
        return metrics.exists() and len(metrics.read_text().splitlines()) > 1

    wait_until(cluster, job, training, "training started", 120, running=True)


def model_weights(run_dir: Path, name: str = "last.pt") -> dict:
    """The weights after the last step (--fsdp: final.pt; last/ holds shards)."""
    return load_checkpoint(run_dir / "checkpoints" / name)["model"]


def assert_same_weights(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    different = [name for name in want if not got[name].equal(want[name])]
    assert not different, f"weights differ from the uninterrupted run: {different}"


def preempt_and_resume(
    cluster: SlurmCluster,
    project: Path,
    env: dict,
    sbatch_args: list[str],
    last: str = "last.pt",
) -> tuple[Path, str]:
    """Submit, send USR1 mid-run, follow the requeued job to its end.

    last: the checkpoint a stop saves (--fsdp: the directory `last`).
    Returns the job's run directory and its output.
    """
    job = sbatch(cluster, project, env, *sbatch_args, "slurm/train.sbatch", *LONG_ARGS)
    run_dir = project / "runs" / f"proj-{job}"
    wait_for_training(cluster, job, run_dir)

    # What SLURM does --signal seconds before the time limit, or on preemption.
    cluster.run(["scancel", "--signal=USR1", str(job)])

    cluster.wait_for_state(job, {"COMPLETED"}, timeout=180)
    assert cluster.job_info(job)["Restarts"] == "1"
    output = job_output(project, job)
    # --open-mode=append: the output file holds both runs
    assert re.findall(r"slurm: job \d+, restart count (\d+)", output) == ["0", "1"]
    stopped = re.search(r"stopped at step (\d+): saved (\S+)", output)
    resumed = re.search(r"resume: (\S+) at step (\d+)", output)
    assert stopped and resumed, output
    assert stopped[1] == resumed[2], "the requeued run must resume where it stopped"
    assert stopped[2] == resumed[1] == f"runs/proj-{job}/checkpoints/{last}"
    assert 0 < int(stopped[1]) < read_summary(run_dir)["step"], output
    assert "requeue: job" in output
    return run_dir, output


@pytest.mark.slow
def test_sbatch_trains_like_a_direct_run(
    slurm_cluster: SlurmCluster,
    slurm_project: Path,
    python_bin: Path,
    reference: Future[Path],
) -> None:
    env = job_env(slurm_cluster, python_bin)
    job = run_job(
        slurm_cluster, slurm_project, env, *SMALL, "slurm/train.sbatch", *LONG_ARGS
    )
    run_dir = slurm_project / "runs" / f"proj-{job}"  # the job's own run directory

    direct = reference.result()
    assert read_summary(run_dir) == read_summary(direct)
    assert_same_weights(model_weights(run_dir), model_weights(direct))
    # the arguments after the script name reached train.py unchanged
    config = json.loads((run_dir / "config.json").read_text())
    direct_config = json.loads((direct / "config.json").read_text())
    assert config.pop("run_dir") == f"runs/proj-{job}"
    assert config.pop("resume") == "auto"
    del direct_config["run_dir"], direct_config["resume"]
    assert config == direct_config


@pytest.mark.slow
def test_usr1_requeues_and_resumes_bit_identically(
    slurm_cluster: SlurmCluster,
    slurm_project: Path,
    python_bin: Path,
    reference: Future[Path],
) -> None:
    env = job_env(slurm_cluster, python_bin, SLOW)
    run_dir, _ = preempt_and_resume(slurm_cluster, slurm_project, env, SMALL)

    direct = reference.result()
    assert_same_weights(model_weights(run_dir), model_weights(direct))
    assert read_summary(run_dir) == read_summary(direct)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_usr1_requeue_with_two_tasks(
    slurm_cluster: SlurmCluster,
    request: pytest.FixtureRequest,
    strategy: str,
    python_bin: Path,
    background: ThreadPoolExecutor,
    tmp_path: Path,
) -> None:
    project = request.getfixturevalue(f"{strategy}_slurm_project")
    torchrun = background.submit(
        direct_run,
        lambda project, *args: run_torchrun(project, 2, *args),
        project,
        tmp_path / "direct",
        *LONG_ARGS,
    )
    env = job_env(slurm_cluster, python_bin, SLOW)
    last, weights = (
        ("last", "final.pt") if strategy == "fsdp" else ("last.pt", "last.pt")
    )
    run_dir, output = preempt_and_resume(slurm_cluster, project, env, TWO_TASKS, last)
    assert output.count("world size 2 on cpu") == 2

    direct = torchrun.result()
    assert_same_weights(model_weights(run_dir, weights), model_weights(direct, weights))
    assert read_summary(run_dir) == read_summary(direct)


def test_scancel_saves_without_requeue(
    slurm_cluster: SlurmCluster, slurm_project: Path, python_bin: Path
) -> None:
    env = job_env(slurm_cluster, python_bin, SLOW)
    job = sbatch(
        slurm_cluster, slurm_project, env, *SMALL, "slurm/train.sbatch", *LONG_ARGS
    )
    run_dir = slurm_project / "runs" / f"proj-{job}"
    wait_for_training(slurm_cluster, job, run_dir)

    slurm_cluster.run(["scancel", str(job)])  # SIGTERM, as on node shutdown

    slurm_cluster.wait_for_state(job, {"CANCELLED"}, timeout=60)
    wait_until(
        slurm_cluster,
        job,
        lambda: "resume with:" in job_output(slurm_project, job),
        "train.py saved",
        timeout=30,
        running=False,
    )
    output = job_output(slurm_project, job)
    stopped = re.search(r"stopped at step (\d+): saved", output)
    assert stopped, output
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert checkpoint["train_state"]["step"] == int(stopped[1])
    assert "requeue:" not in output
    assert len(re.findall(r"slurm: job \d+, restart count", output)) == 1
    # a requeued job would be PENDING (and then RUNNING) again
    time.sleep(1)
    info = slurm_cluster.job_info(job)
    assert (info["JobState"], info["Restarts"]) == ("CANCELLED", "0")
    # train.py's own exit status for a stop request, seen through srun and the shell
    assert info["ExitCode"] == "130:0"


@pytest.mark.slow
def test_sweep_runs_one_configuration_per_array_task(
    slurm_cluster: SlurmCluster, slurm_project: Path, python_bin: Path
) -> None:
    script = (slurm_project / "slurm" / "sweep.sbatch").read_text()
    configs = re.search(r"^CONFIGS=\((.*?)^\)", script, re.MULTILINE | re.DOTALL)[1]
    lrs = [float(lr) for lr in re.findall(r"--lr (\S+)\"", configs)]
    assert len(lrs) == 2 and lrs[0] != lrs[1]
    assert "#SBATCH --array=0-1\n" in script

    env = job_env(slurm_cluster, python_bin, SLOW)
    # the grid's learning rates are below LONG_ARGS' --min-lr, which train.py
    # refuses (the schedule would rise): a floor below both
    args = [*LONG_ARGS, "--min-lr", str(min(lrs) / 10)]
    job = sbatch(slurm_cluster, slurm_project, env, *SMALL, "slurm/sweep.sbatch", *args)
    sweep_dir = slurm_project / "runs" / f"proj-sweep-{job}"
    # preempt one task: it alone is requeued, and resumes into its own run directory
    wait_for_training(slurm_cluster, f"{job}_1", sweep_dir / "1")
    slurm_cluster.run(["scancel", "--signal=USR1", f"{job}_1"])
    for task in range(len(lrs)):
        slurm_cluster.wait_for_state(f"{job}_{task}", {"COMPLETED"}, timeout=180)

    assert sorted(p.name for p in sweep_dir.iterdir()) == ["0", "1"]
    for task, lr in enumerate(lrs):
        run_dir = sweep_dir / str(task)
        assert read_summary(run_dir)["epoch"] == 15
        # the swept value wins over the shared --lr of LONG_ARGS, and the
        # sweep's --run-dir over train.sbatch's default
        assert json.loads((run_dir / "config.json").read_text())["lr"] == lr
        output = (slurm_project / f"proj-sweep-{job}_{task}.out").read_text()
        assert f"sweep: task {task}: --lr" in output
        restarts = slurm_cluster.job_info(f"{job}_{task}")["Restarts"]
        assert restarts == str(task), output
    # an array task requeues itself by its array id (its plain job id differs)
    assert f"requeue: job {job}_1 requeued" in output
    assert f"resume: {sweep_dir.relative_to(slurm_project)}/1/checkpoints/" in output


@pytest.mark.parametrize(
    "features", [["slurm"], ["ddp", "slurm"], ["fsdp", "slurm"]], ids="+".join
)
def test_sbatch_files_are_valid(
    slurm_cluster: SlurmCluster, python_bin: Path, tmp_path: Path, features: list[str]
) -> None:
    project = tmp_path / "proj"
    create_project(project, set(features))  # as `scaffold new` writes it
    env = job_env(slurm_cluster, python_bin)
    resources = TWO_TASKS if {"ddp", "fsdp"} & set(features) else SMALL
    for script in ("slurm/train.sbatch", "slurm/sweep.sbatch"):
        assert (project / script).stat().st_mode & 0o111 == 0o111, "not executable"
        subprocess.run(["bash", "-n", script], cwd=project, check=True)
        # the test node is small: ask for less than the scripts' defaults
        result = slurm_cluster.run(
            ["sbatch", "--test-only", *resources, script],
            cwd=project,
            env=env,
            check=False,
        )
        assert result.returncode == 0, f"{shlex.join(result.args)}: {result.stderr}"
        assert "to start at" in result.stderr


def test_jobs_run_this_interpreter(
    slurm_cluster: SlurmCluster, python_bin: Path, tmp_path: Path
) -> None:
    """A job's `python` is the suite's own, with its environment (e.g. a venv)."""
    out = tmp_path / "python.out"
    code = "import sys; print(sys.executable); print(sys.prefix)"
    job = sbatch(
        slurm_cluster,
        tmp_path,
        job_env(slurm_cluster, python_bin),
        *SMALL,
        f"--output={out}",
        "--wrap",
        f"python -c {shlex.quote(code)}",
    )
    slurm_cluster.wait_for_state(job, {"COMPLETED"}, timeout=60)
    assert out.read_text().splitlines() == [sys.executable, sys.prefix]


@pytest.mark.slow
def test_a_job_of_a_0_1_project_resumes_under_the_updated_code(
    slurm_cluster: SlurmCluster, python_bin: Path, tmp_path: Path
) -> None:
    """A job submitted from a scaffold 0.1 project outlives its code: the project
    is updated while the job trains, the job is preempted, and the requeued job
    (the script and command line it was submitted with) runs the new train.py,
    which resumes the old checkpoint and ends the run."""
    from test_legacy_runs import checkout, scaffold

    project, _ = checkout("0.1.0-early/slurm", tmp_path)
    with (project / "model.py").open("a") as f:
        f.write(SLOW_STEPS)  # the user's model: the update leaves it alone
    env = job_env(slurm_cluster, python_bin, SLOW)
    job = sbatch(slurm_cluster, project, env, *SMALL, "slurm/train.sbatch", *LONG_ARGS)
    run_dir = project / "runs" / f"legacy-{job}"
    wait_for_training(slurm_cluster, job, run_dir)

    old_train = (project / "train.py").read_text()
    updated = scaffold(project, "update", "--allow-dirty")
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert (project / "train.py").read_text() != old_train
    slurm_cluster.run(["scancel", "--signal=USR1", str(job)])  # the preemption

    slurm_cluster.wait_for_state(job, {"COMPLETED"}, timeout=180)
    assert slurm_cluster.job_info(job)["Restarts"] == "1"
    output = (project / f"legacy-{job}.out").read_text()
    stopped = re.search(r"stopped at step (\d+): saved", output)
    resumed = re.search(r"resume: (\S+) at step (\d+)", output)
    assert stopped and resumed, output
    assert stopped[1] == resumed[2], output
    assert "Traceback" not in output
    # the whole run: every epoch of LONG_ARGS (argparse takes a flag's last value)
    pairs = zip(LONG_ARGS, LONG_ARGS[1:], strict=False)
    value = {flag: int(v) for flag, v in pairs if v.isdigit()}
    steps = value["--max-epochs"] * value["--n-train"] // value["--batch-size"]
    assert read_summary(run_dir)["step"] == steps
