"""--wandb and --mlflow, tested against the real packages.

- MLflow against a real tracking server started here (`mlflow server`, SQLite
  backend, a free port on 127.0.0.1): the run's params, every metric series and
  the artifacts, read back with MLflow's own client, equal config.json and
  metrics.csv; a resume from an earlier checkpoint continues the same run, each
  step once.
- W&B offline (no account, no network): the offline run files, decoded with
  wandb's own record schema, hold the config and every row; a resume appends to
  the same run id, each step once.
- The server killed mid-run: training finishes, one warning, checkpoints and
  metrics.csv complete.
- Under torchrun with 2 processes only rank 0 creates a tracker run.
- A missing package: one line naming the pip command, before training.
(That a project without the flags has no word of them is
tests/test_feature_words.py's; the render matrix covers both flags.)
"""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import (
    TIMING,
    TINY_ARGS,
    read_metrics,
    read_summary,
    render,
    render_probe,
    run_torchrun,
    run_train,
    train_env,
)
from mlflow.tracking import MlflowClient  # both are in the test extra: never skipped
from wandb.proto import wandb_internal_pb2

# 512 samples / batch 32: 16 steps an epoch, 2 epochs; a training row every 4 steps
STOP_AT, CHECKPOINT_AT = 12, 8  # the first run ends at 12; its step_8.pt is resumed


# -----------------------------------------------------------------------------
# a real MLflow tracking server


class MlflowServer:
    def __init__(self, root: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.backend = f"sqlite:///{root / 'mlflow.db'}"
        root.mkdir(parents=True, exist_ok=True)
        self.log = (root / "server.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server",
             "--backend-store-uri", self.backend,
             "--artifacts-destination", str(root / "artifacts"),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (root / "server.log").read_text()
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.25)
        self.kill()
        raise AssertionError("mlflow server did not answer in 120 s")

    def kill(self) -> None:
        """The server and its workers, at once."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path / "server")
    yield server
    server.kill()


def git_snapshot(project: Path) -> None:
    """Make the project a git work tree with a commit: runs save a code snapshot."""
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "project"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       cwd=project, check=True, capture_output=True)


def csv_points(rows: list[dict]) -> dict[str, dict[int, float]]:
    """metrics.csv as tracker series: {split/name: {step: value}}, its numbers only."""
    series: dict[str, dict[int, float]] = {}
    for row in rows:
        for name, value in row.items():
            if name not in ("step", "epoch", "split") and value != "":
                points = series.setdefault(f"{row['split']}/{name}", {})
                assert int(row["step"]) not in points
                points[int(row["step"])] = float(value)
    return series


def same_number(tracked: float, written: float) -> bool:
    """metrics.csv writes 6 significant digits."""
    return float(f"{tracked:.6g}") == written


def mlflow_series(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    keys = client.get_run(run_id).data.metrics
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            for key in keys}


def assert_series_hold_csv(series: dict, rows: list[dict], timing_too: bool = True) -> None:
    """Every value metrics.csv has is in the tracker's series, at its step."""
    for key, points in csv_points(rows).items():
        tracked = dict(series[key])
        assert set(points) <= set(tracked), (key, sorted(points), sorted(tracked))
        if timing_too or key.split("/")[1] not in TIMING:
            for step, value in points.items():
                assert same_number(tracked[step], value), (key, step, tracked[step], value)


@pytest.mark.slow
def test_mlflow_server_run_equals_config_and_metrics_a_resume_continues_it_and_a_dead_server_warns(tmp_path, mlflow_server):
    project = render(tmp_path, ["mlflow"])
    git_snapshot(project)
    run_dir = project / "runs/ml"
    # constant LR: the schedule does not depend on --max-steps, which the resume lifts
    common = ("--run-dir", "runs/ml", "--mlflow-uri", mlflow_server.uri, "--ckpt-every", str(CHECKPOINT_AT),
              "--schedule", "constant",
              "--mlflow-experiment", "trackers", "--mlflow-tags", "suite=scaffold,smoke")
    run_train(project, *common, "--max-steps", str(STOP_AT))
    run_id = (run_dir / "mlflow_run_id").read_text().strip()

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "ml" and run.info.status == "FINISHED"
    assert run.data.tags["suite"] == "scaffold" and run.data.tags["smoke"] == ""
    config = json.loads((run_dir / "config.json").read_text())
    assert run.data.params == {k: str(v) for k, v in config.items()}
    rows = read_metrics(run_dir)
    series = mlflow_series(client, run_id)
    # every series exactly: each row once, at its optimizer step
    summary = read_summary(run_dir)
    expected = {key: sorted(points.items()) for key, points in csv_points(rows).items()}
    expected.update({f"summary/{k}": [(summary["step"], v)] for k, v in summary.items() if isinstance(v, float)})
    assert set(series) == set(expected)
    for key, points in expected.items():
        assert [s for s, _ in series[key]] == [s for s, _ in points], key
        for (_, tracked), (_, written) in zip(series[key], points, strict=True):
            # summary.json has full floats, metrics.csv 6 digits
            if key.startswith("summary/"):
                assert tracked == pytest.approx(written, rel=1e-12), key
            else:
                assert same_number(tracked, written), (key, tracked, written)
    assert {"train/loss", "train/lr", "train/samples_per_s", "val/val_loss", "test/test_loss"} <= set(series)
    artifacts = {f.path for f in client.list_artifacts(run_id)}
    assert {"config.json", "command.txt", "summary.json", "git_commit.txt", "git_diff.patch"} <= artifacts
    for name in ("config.json", "summary.json", "git_commit.txt"):
        local = client.download_artifacts(run_id, name, str(tmp_path))
        assert Path(local).read_text() == (run_dir / name).read_text()

    # A crash after step 12 was logged, with step_8.pt the newest checkpoint: the
    # resume continues the same MLflow run, and steps 9..12 are not logged twice.
    (run_dir / "checkpoints/last.pt").unlink()
    result = run_train(project, *common, "--resume", "auto", "--max-steps", "-1")
    assert f"at step {CHECKPOINT_AT}" in result.stdout
    assert (run_dir / "mlflow_run_id").read_text().strip() == run_id
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert client.get_run(run_id).info.status == "FINISHED"
    series = mlflow_series(client, run_id)
    for key, points in series.items():
        steps = [s for s, _ in points]
        assert len(steps) == len(set(steps)), f"{key}: a step logged twice: {steps}"
    rows = read_metrics(run_dir)
    assert max(int(r["step"]) for r in rows) == 32
    # the resumed run's rows are the tracker's; at step 12 those of the first
    # run, identical but for the timing (the resume is exact)
    assert_series_hold_csv(series, rows, timing_too=False)
    extra = {(key, s) for key, points in series.items() if not key.startswith("summary/")
             for s, _ in points} - {(key, s) for key, pts in csv_points(rows).items() for s in pts}
    # only what the first run logged after step_8.pt and the resume did not log again
    assert extra == {(k, STOP_AT) for k in ("val/val_loss", "val/val_acc", "test/test_loss", "test/test_acc")}

    # last, as it ends the server (one server start for the whole test: ~20 s)
    kill_the_server_mid_run(tmp_path, mlflow_server)


def kill_the_server_mid_run(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    """The server killed at step 8 of 32: training finishes, one warning,
    checkpoints and metrics.csv complete."""
    project = render_probe(tmp_path, ["mlflow"], name="killed")
    argv = [sys.executable, "train.py", *TINY_ARGS, "--run-dir", "runs/k", "--mlflow-uri", mlflow_server.uri]
    process = subprocess.Popen(argv, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=train_env({"PROBE_SLEEP": "0.05"}))
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("step 8/"):
            mlflow_server.kill()  # the server is gone from step 8 on
            break
    # a guard, not a measure: with MLflow's default retries every later log would
    # wait minutes for the dead server, and the run would end in TimeoutExpired
    out, err = process.communicate(timeout=180)
    stdout = "".join(lines) + out
    assert process.returncode == 0, stdout + err
    warnings = [line for line in stdout.splitlines() if line.startswith("MLflow:")]
    assert len(warnings) == 1 and "training goes on" in warnings[0], warnings
    run_dir = project / "runs/k"
    assert {"last.pt", "best.pt"} <= {p.name for p in (run_dir / "checkpoints").iterdir()}
    rows = read_metrics(run_dir)
    assert [int(r["step"]) for r in rows if r["split"] == "train"] == list(range(4, 33, 4))
    assert [int(r["step"]) for r in rows if r["split"] == "val"] == [16, 32]
    assert [r["split"] for r in rows].count("test") == 1
    assert read_summary(run_dir)["step"] == 32
    # what reached the server before it died is in its database
    logged = MlflowClient(tracking_uri=mlflow_server.backend).get_metric_history(
        (run_dir / "mlflow_run_id").read_text().strip(), "train/loss")
    assert [m.step for m in logged] in ([4], [4, 8])


# -----------------------------------------------------------------------------
# W&B offline


def wandb_records(path: Path):
    """The records of a .wandb file: wandb's record protobufs, in the block format
    wandb writes them (a 7-byte header, then 32 KiB blocks of chunks, each with a
    CRC, a length and a type: full, first, middle or last)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, block, pending = 7, 32768, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0:  # zero padding up to the end of the block
            position += left
            continue
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # full, last
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_runs(run_dir: Path) -> list[dict]:
    """Each offline run (segment) of run_dir: its id, config, history rows and summary."""
    runs = []
    for path in sorted({p.resolve() for p in (run_dir / "wandb").glob("offline-run-*/*.wandb")}):
        found = {"id": None, "config": {}, "history": [], "summary": {}, "files": path.parent / "files"}
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                found["id"] = record.run.run_id
                found["name"] = record.run.display_name
                found["tags"] = list(record.run.tags)
                found["config"] = {i.key: json.loads(i.value_json) for i in record.run.config.update}
            elif kind == "history":
                found["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                         for i in record.history.item})
            elif kind == "summary":
                found["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                         for i in record.summary.update})
        runs.append(found)
    return runs


def wandb_points(history: list[dict]) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list] = {}
    for row in history:
        for key, value in row.items():
            if not key.startswith("_") and key != "step":
                series.setdefault(key, []).append((row["step"], value))
    return series


@pytest.mark.slow
def test_wandb_offline_run_holds_config_and_rows_and_a_resume_appends_to_it(tmp_path):
    project = render(tmp_path, ["wandb"])
    run_dir = project / "runs/wb"
    # constant LR: the schedule does not depend on --max-steps, which the resume lifts
    common = ("--run-dir", "runs/wb", "--wandb-mode", "offline", "--ckpt-every", str(CHECKPOINT_AT),
              "--schedule", "constant",
              "--wandb-tags", "scaffold, smoke")
    run_train(project, *common, "--max-steps", str(STOP_AT), env={"WANDB_SILENT": "true"})
    (first,) = wandb_runs(run_dir)
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    assert first["id"] == run_id and first["name"] == "wb" and first["tags"] == ["scaffold", "smoke"]
    config = json.loads((run_dir / "config.json").read_text())
    assert {k: v for k, v in first["config"].items() if k != "_wandb"} == config
    rows = read_metrics(run_dir)
    series = wandb_points(first["history"])
    expected = {key: sorted(points.items()) for key, points in csv_points(rows).items()}
    assert set(series) == set(expected)
    for key, points in expected.items():
        assert [s for s, _ in series[key]] == [s for s, _ in points], key
        assert all(same_number(t, w) for (_, t), (_, w) in zip(series[key], points, strict=True)), key
    summary = read_summary(run_dir)
    assert {k: first["summary"][f"summary/{k}"] for k in summary} == summary
    for name in ("config.json", "command.txt", "summary.json"):
        assert (first["files"] / name).read_text() == (run_dir / name).read_text()

    # a crash after step 12 was logged, step_8.pt the newest checkpoint
    (run_dir / "checkpoints/last.pt").unlink()
    run_train(project, *common, "--resume", "auto", "--max-steps", "-1", env={"WANDB_SILENT": "true"})
    segments = wandb_runs(run_dir)
    assert len(segments) == 2 and {s["id"] for s in segments} == {run_id}
    second = next(s for s in segments if s["history"] != first["history"])
    assert second["config"]["resume"] == "auto"
    series = wandb_points(first["history"] + second["history"])
    for key, points in series.items():
        steps = [s for s, _ in points]
        assert len(steps) == len(set(steps)), f"{key}: a step logged twice: {steps}"
    assert_series_hold_csv(series, read_metrics(run_dir), timing_too=False)
    assert not any(row["step"] <= CHECKPOINT_AT for row in second["history"])


# -----------------------------------------------------------------------------
# ranks, missing packages, options


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ddp", "fsdp"])  # fsdp: a process that ends in os._exit
def test_under_torchrun_only_rank_0_creates_a_tracker_run(tmp_path, engine):
    project = render(tmp_path, [engine, "wandb", "mlflow"])
    run_torchrun(project, 2, "--run-dir", "runs/two", "--wandb-mode", "offline", "--max-steps", "8",
                 env={"WANDB_SILENT": "true"})
    run_dir = project / "runs/two"
    (found,) = wandb_runs(run_dir)
    # every row of metrics.csv reached W&B, also from a process that skips Python's shutdown
    steps = {key: [s for s, _ in points] for key, points in wandb_points(found["history"]).items()}
    assert steps == {key: sorted(points) for key, points in csv_points(read_metrics(run_dir)).items()}
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlruns' / 'mlflow.db'}")
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments])
    assert [r.info.run_id for r in runs] == [(run_dir / "mlflow_run_id").read_text().strip()]
    assert (Path(client.get_experiment(runs[0].info.experiment_id).artifact_location.removeprefix("file://"))
            .is_relative_to((run_dir / "mlruns").resolve()))


@pytest.mark.parametrize("package", ["wandb", "mlflow"])
def test_a_missing_tracker_package_is_one_line_before_training(tmp_path, package):
    project = render(tmp_path, [package])
    # as if the package were not installed: importlib finds no module
    launcher = (f"import runpy, sys; sys.modules[{package!r}] = None; sys.argv = ['train.py', *sys.argv[1:]]; "
                "runpy.run_path('train.py', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", launcher, *TINY_ARGS, "--run-dir", "runs/none"], cwd=project,
                            capture_output=True, text=True, timeout=300, env=train_env(), check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert f"pip install {package}" in result.stderr
    assert result.stdout == "" and not (project / "runs").exists()


def test_wandb_disabled_needs_no_package_and_logs_nothing(tmp_path):
    project = render(tmp_path, ["wandb"])
    launcher = ("import runpy, sys; sys.modules['wandb'] = None; sys.argv = ['train.py', *sys.argv[1:]]; "
                "runpy.run_path('train.py', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", launcher, *TINY_ARGS, "--run-dir", "runs/off",
                             "--wandb-mode", "disabled", "--max-steps", "4"], cwd=project,
                            capture_output=True, text=True, timeout=300, env=train_env(), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (project / "runs/off/wandb").exists() and not (project / "runs/off/wandb_run_id").exists()


def test_a_bad_wandb_mode_fails_before_training(tmp_path):
    project = render(tmp_path, ["wandb"])
    result = run_train(project, "--wandb-mode", "sometimes", check=False)
    assert result.returncode == 2 and "--wandb-mode must be online, offline or disabled" in result.stderr


def test_mlflow_without_a_server_warns_and_trains(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    project = render(tmp_path, ["mlflow"])
    # timeout: a guard against MLflow's default retries, which would take minutes
    result = run_train(project, "--run-dir", "runs/noserver", "--mlflow-uri", f"http://127.0.0.1:{port}",
                       "--max-steps", "8", timeout=180)
    warnings = [line for line in result.stdout.splitlines() if line.startswith("MLflow:")]
    assert len(warnings) == 1 and "training without MLflow" in warnings[0]
    assert len(read_metrics(project / "runs/noserver")) > 0
