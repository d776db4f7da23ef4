"""Checks that the local SLURM test cluster behaves like a real cluster.

Other tests rely on these behaviours (multi-task steps, requeue, signal
delivery), so a broken cluster shows up here first rather than as a confusing
failure in a generated project's test.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster, ensure_slurm_installed

pytestmark = pytest.mark.slurm


def _wait_for_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout}s")
        time.sleep(0.1)


def _write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def test_wait_wrap_writes_output(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "hi.out"
    slurm_cluster.run(["sbatch", "--wait", f"--output={out}", "--wrap", "echo hi"])
    assert out.read_text().strip() == "hi"


def test_two_tasks_get_distinct_ranks(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    out = tmp_path / "ranks.out"
    job_id = slurm_cluster.submit(
        [
            "--ntasks=2",
            f"--output={out}",
            "--wrap",
            "srun bash -c 'echo rank=$SLURM_PROCID ntasks=$SLURM_NTASKS'",
        ]
    )
    slurm_cluster.wait_for_state(job_id, {"COMPLETED"}, timeout=30)
    lines = sorted(out.read_text().split("\n"))
    assert [line for line in lines if line] == [
        "rank=0 ntasks=2",
        "rank=1 ntasks=2",
    ]


def test_requeued_job_runs_again(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    marker = tmp_path / "second-run"
    out = tmp_path / "requeue.out"
    # On the first run SLURM_RESTART_COUNT is unset; the job requeues itself
    # and sleeps until SLURM kills it.  The rerun writes the marker.
    script = _write_script(
        tmp_path / "requeue.sh",
        f"""\
        echo "run restart=${{SLURM_RESTART_COUNT:-unset}}"
        if [ -z "${{SLURM_RESTART_COUNT:-}}" ]; then
            scontrol requeue "$SLURM_JOB_ID"
            sleep 120
        fi
        touch {marker}
        """,
    )
    job_id = slurm_cluster.submit(
        ["--open-mode=append", f"--output={out}", str(script)]
    )

    _wait_for_file(marker, timeout=60)
    slurm_cluster.wait_for_state(job_id, {"COMPLETED"}, timeout=30)
    runs = [line for line in out.read_text().splitlines() if line.startswith("run ")]
    assert runs == ["run restart=unset", "run restart=1"]
    assert slurm_cluster.job_info(job_id)["Restarts"] == "1"


def test_scancel_signal_reaches_srun_step(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    ready, caught = tmp_path / "ready", tmp_path / "caught"
    # Poll in short sleeps: bash runs a trap only between foreground commands.
    step = _write_script(
        tmp_path / "step.sh",
        f"""\
        trap 'echo USR1 > {caught}; exit 0' USR1
        touch {ready}
        for _ in $(seq 300); do sleep 0.1; done
        exit 1
        """,
    )
    job_id = slurm_cluster.submit(
        [f"--output={tmp_path / 'job.out'}", "--wrap", f"srun {step}"]
    )
    # A signal sent before the step exists would be lost.
    _wait_for_file(ready, timeout=30)

    slurm_cluster.run(["scancel", "--signal=USR1", str(job_id)])

    _wait_for_file(caught, timeout=10)
    assert caught.read_text().strip() == "USR1"
    slurm_cluster.wait_for_state(job_id, {"COMPLETED"}, timeout=30)


def test_stop_leaves_no_daemons(tmp_path: Path) -> None:
    reason = ensure_slurm_installed()
    if reason is not None:
        pytest.skip(f"SLURM unavailable: {reason}")
    cluster = SlurmCluster(tmp_path / "cluster")
    with cluster:
        pids = cluster.pids
        assert set(pids) == {"munged", "slurmctld", "slurmd"}
        assert all(cluster.running(name) for name in pids)
    # stop() reaps its children, so not even a zombie may remain.
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists(), f"daemon {pid} still exists"
