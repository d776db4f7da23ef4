"""Generated training on a CUDA GPU: the demo with amp and compile, torchrun, and a
fast-dev-run of every feature.

Each test renders a project (tests/helpers.render) and runs its own train.py as a
subprocess on the GPU. The runs are short (tens of steps): they prove that the
loop works on CUDA, not that the demo learns to the end (tests/test_generated_runs.py
does that on the CPU). All are skipped where torch sees no CUDA GPU.
"""

import math
import re
from pathlib import Path

import pytest
from helpers import (
    load_checkpoint,
    read_metrics,
    read_summary,
    render,
    render_probe,
    run_torchrun,
    run_train,
)

from scaffold.features import feature_names

try:  # collection must work without torch, and without a GPU
    import torch
except ImportError:  # pragma: no cover - the test extras hold torch
    torch = None

pytestmark = pytest.mark.skipif(
    torch is None or not torch.cuda.is_available(), reason="no CUDA GPU"
)

STEPS = 60
# the demo at its own batch size (512: gpu_demo.py's too, so that torch.compile's
# cache serves both); 60 steps stay inside the first epoch (79 batches), so
# every batch has the same shape and compile compiles once
DEMO_ARGS = [
    "--max-steps", str(STEPS), "--log-every", "10", "--ckpt-every", "0",
    "--sanity-val-steps", "0", "--run-dir", "runs/gpu",
]


def assert_finite_summary(run_dir: Path, steps: int) -> dict:
    summary = read_summary(run_dir)
    assert summary["step"] == steps, summary
    numbers = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
    assert "val_loss" in numbers and "test_loss" in numbers, summary
    assert all(math.isfinite(v) for v in numbers.values()), summary
    return summary


def run_device(out: str) -> str:
    """The device train.py says it runs on: "world size N on DEVICE; ..." with ddp,
    "device DEVICE; ..." without."""
    found = re.search(r"^(?:world size \d+ on|device) (\S+);", out, re.MULTILINE)
    assert found, f"no device line in the output:\n{out[-3000:]}"
    return found.group(1)


def train_rows(run_dir: Path) -> list[dict[str, str]]:
    return [row for row in read_metrics(run_dir) if row["split"] == "train"]


# -----------------------------------------------------------------------------
# the demo on one GPU: bf16 and fp16 autocast, torch.compile


@pytest.mark.parametrize(
    "features,extra,dtype",
    [
        (["amp"], ["--amp-dtype", "bf16"], "bfloat16"),
        (["amp"], ["--amp-dtype", "fp16"], "float16"),
        (["compile"], [], None),
    ],
    ids=["amp-bf16", "amp-fp16", "compile"],
)
def test_the_demo_trains_on_the_gpu(tmp_path, features, extra, dtype):
    project = render(tmp_path, features, tiny=False)
    result = run_train(project, "--device", "cuda", *DEMO_ARGS, *extra, tiny_defaults=False)
    out = result.stdout
    assert run_device(out) == "cuda:0"  # pick_device names the index it chose
    if dtype:
        assert f"amp: autocast to {dtype}" in out, out
    run_dir = project / "runs" / "gpu"
    assert_finite_summary(run_dir, STEPS)
    rows = train_rows(run_dir)
    assert [int(r["step"]) for r in rows] == list(range(10, STEPS + 1, 10))
    losses = [float(r["loss"]) for r in rows]
    assert all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < losses[0], losses  # it learns something in 60 steps
    assert all(float(r["peak_mem_gb"]) > 0 for r in rows)  # logged on CUDA only
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert checkpoint["train_state"]["step"] == STEPS
    # compile: plain weights, no "_orig_mod." prefixes
    assert not [k for k in checkpoint["model"] if "_orig_mod" in k]


def test_fp16_training_does_not_stop_on_gradscaler_overflow(tmp_path):
    """A loss large enough that fp16 gradients overflow at GradScaler's initial
    scale: the first steps are skipped, the scale comes down, and training goes on
    to the end with finite losses."""
    project = render_probe(tmp_path, ["amp"])
    log = tmp_path / "probe.log"
    result = run_train(
        project, "--device", "cuda", "--amp-dtype", "fp16", "--run-dir", "runs/fp16",
        env={"PROBE_LOSS_MUL": "1000", "PROBE_LOG": str(log)},
    )
    assert "amp: autocast to float16" in result.stdout
    run_dir = project / "runs" / "fp16"
    # TINY_ARGS: 512 samples in batches of 32, 2 epochs: 32 steps
    summary = assert_finite_summary(run_dir, 32)
    assert summary["epoch"] == 2
    rows = train_rows(run_dir)
    assert rows and all(math.isfinite(float(r["loss"])) for r in rows)
    # The probe's pre-step hook sees every optimizer.step() call, with the unscaled
    # gradients. On CUDA the AdamW is fused: GradScaler calls its step() every time
    # and hands it found_inf, and the fused kernel skips the update itself; so an
    # overflowed step shows as a call with non-finite gradients.
    calls = [line.split() for line in log.read_text().splitlines() if line.startswith("S ")]
    assert len(calls) == 32
    finite = [call for call in calls if math.isfinite(float(call[1]))]
    assert 0 < len(finite) < 32, f"{len(finite)} of 32 steps had finite gradients"
    scaler = load_checkpoint(run_dir / "checkpoints" / "last.pt")["scaler"]
    assert scaler["scale"] < 2.0**16  # lowered from its initial 65536 by the overflows


# -----------------------------------------------------------------------------
# torchrun


def test_a_one_process_torchrun_run_of_the_demo_on_cuda0(tmp_path):
    """ddp under torchrun with --device auto: LOCAL_RANK 0 takes cuda:0. (A process
    group -- nccl on CUDA -- is made for world sizes above 1 only; NCCL refuses two
    ranks on one GPU, so one GPU cannot test it.)"""
    project = render(tmp_path, ["ddp"], tiny=False)
    result = run_torchrun(
        project, 1, "--max-steps", "30", "--log-every", "10", "--ckpt-every", "0",
        "--sanity-val-steps", "0", "--run-dir", "runs/ddp", tiny_defaults=False,
    )
    assert "world size 1 on cuda:0;" in result.stdout, result.stdout
    assert_finite_summary(project / "runs" / "ddp", 30)


def test_the_demo_sharded_with_bf16_on_every_gpu(tmp_path):
    """--fsdp --amp under torchrun with nccl, one process per GPU present: bf16
    parameters by FSDP's policy, throughput, MFU and peak memory per rank logged."""
    project = render(tmp_path, ["fsdp", "amp"], tiny=False)
    gpus = torch.cuda.device_count()
    result = run_torchrun(
        project, gpus, "--max-steps", "30", "--log-every", "10", "--ckpt-every", "15",
        "--sanity-val-steps", "0", "--amp-dtype", "bf16", "--run-dir", "runs/fsdp",
        tiny_defaults=False,
    )
    assert f"world size {gpus} on cuda:0;" in result.stdout, result.stdout
    assert "amp: bfloat16 parameters" in result.stdout
    run_dir = project / "runs" / "fsdp"
    assert_finite_summary(run_dir, 30)
    train_rows = [r for r in read_metrics(run_dir) if r["split"] == "train"]
    assert all(float(r["peak_mem_gb"]) > 0 for r in train_rows)
    assert (run_dir / "checkpoints" / "step_00000015" / ".metadata").is_file()


# -----------------------------------------------------------------------------
# every feature, alone


@pytest.mark.parametrize("feature", feature_names())
def test_a_fast_dev_run_of_each_feature_on_cuda(tmp_path, feature):
    project = render(tmp_path, [feature], tiny=False)  # with its own demo model
    if feature in ("ddp", "fsdp"):
        result = run_torchrun(project, 1, "--fast-dev-run", tiny_defaults=False)
        assert "world size 1 on cuda:0;" in result.stdout, result.stdout
    else:
        # slurm: outside a SLURM job train.py runs as any single process does
        result = run_train(project, "--fast-dev-run", "--device", "cuda", tiny_defaults=False)
        assert run_device(result.stdout) == "cuda:0"
    assert not (project / "runs").exists()  # a fast-dev-run writes nothing


# -----------------------------------------------------------------------------
# what a single-process run on cuda:0 shows and keeps while it trains


def test_mid_run_metrics_and_checkpoints_on_cuda0(tmp_path):
    project = render(tmp_path, tiny=False)
    result = run_train(
        project, "--device", "cuda:0", "--max-steps", "40", "--log-every", "10",
        "--ckpt-every", "20", "--sanity-val-steps", "2", "--run-dir", "runs/mid",
        tiny_defaults=False,
    )
    out = result.stdout
    assert run_device(out) == "cuda:0"
    assert "sanity check |" in out, out
    progress = [line for line in out.splitlines() if line.startswith("step ") and "/40" in line]
    assert len(progress) == 4 and all(" GB" in line for line in progress), out
    run_dir = project / "runs" / "mid"
    rows = train_rows(run_dir)
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40]
    for row in rows:
        assert math.isfinite(float(row["loss"])), row
        assert float(row["samples_per_s"]) > 0 and float(row["tokens_per_s"]) > 0, row
        assert float(row["peak_mem_gb"]) > 0, row
        if row.get("mfu"):  # a GPU of train.py's table (the H200 is in it)
            assert 0 < float(row["mfu"]) < 1, row
    middle = load_checkpoint(run_dir / "checkpoints" / "step_00000020.pt")
    assert middle["train_state"]["step"] == 20 and middle["config"]["device"] == "cuda:0"
    # the CUDA generators' state travels with the checkpoint, for an exact resume
    assert "cuda" in middle["rng"][0]  # this process's GPU (one state per process)
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["train_state"]["step"] == 40
    assert any(not torch.equal(v, last["model"][k]) for k, v in middle["model"].items())
    assert_finite_summary(run_dir, 40)
