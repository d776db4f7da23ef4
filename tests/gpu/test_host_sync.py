"""No host synchronisation inside a training step, as CUDA itself reports it.

tests/fixtures/count_syncs.py runs a generated train.py with COUNT_SYNCS_CUDA=1:
torch.cuda.set_sync_debug_mode("warn") between the end of one log step and the
start of the next (validation and checkpoint writes left out), every warning
recorded with its call site. The count must be zero for the base and for every
feature that runs on one GPU, --compile and fp16 loss scaling included (which a
CPU cannot show: tests/test_host_sync.py counts the calls there). Two features
wait by design, and the test pins them to that: --debug (one NaN/inf check a
step) and --ema-on-cpu (the weights copied to the host at each update).
"""

import json
import sys

import pytest
from helpers import FIXTURES, TINY_ARGS, render, train_env

try:  # collection must work without torch, and without a GPU
    import torch
except ImportError:  # pragma: no cover - the test extras hold torch
    torch = None

pytestmark = pytest.mark.skipif(
    torch is None or not torch.cuda.is_available(), reason="no CUDA GPU"
)

LOG_EVERY = 6
WINDOW_ARGS = ["--n-train", "1024", "--log-every", str(LOG_EVERY), "--max-steps", "13",
               "--ckpt-every", "0", "--sanity-val-steps", "0", "--device", "cuda"]
CASES = {
    "base": ([], []),
    "amp-bf16+clip": (["amp", "clip"], ["--amp-dtype", "bf16"]),
    "amp-fp16+clip": (["amp", "clip"], ["--amp-dtype", "fp16"]),
    "clip-value": (["clip"], ["--clip-value", "0.5"]),
    "accumulate": (["accumulate"], ["--accumulate-steps", "2"]),
    "ema": (["ema"], []),
    "early-stopping+tensorboard": (["early-stopping", "tensorboard"], []),
    "ddp (1 process)": (["ddp"], []),
    "fsdp (1 GPU)": (["fsdp", "amp", "clip"], ["--amp-dtype", "bf16"]),
    "compile+amp+clip": (["compile", "amp", "clip"], ["--amp-dtype", "bf16"]),
    "everything on one GPU": (
        ["amp", "clip", "accumulate", "ema", "early-stopping", "slurm"], ["--amp-dtype", "bf16"]
    ),
}


def cuda_syncs(project, *args: str, tiny_defaults: bool = True) -> dict:
    import subprocess

    out = project / "syncs.json"
    argv = [sys.executable, str(FIXTURES / "count_syncs.py"), str(out),
            *(TINY_ARGS if tiny_defaults else []), *WINDOW_ARGS, *args]
    done = subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=300,
                          env=train_env({"COUNT_SYNCS_CUDA": "1"}))
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert result["logs"] == 2 and result["steps"] >= LOG_EVERY - 1, result
    return result


@pytest.mark.parametrize("case", list(CASES))
def test_no_cuda_sync_between_two_log_steps(tmp_path, case):
    features, args = CASES[case]
    result = cuda_syncs(render(tmp_path, features), *args)
    assert result["syncs"] == 0, json.dumps(result["sites"], indent=2)


def test_no_cuda_sync_with_several_optimizers(tmp_path):
    project = render(tmp_path, ["multi-optim", "amp", "clip"], tiny=False)
    result = cuda_syncs(project, "--n-train", "4096", "--n-val", "256", "--n-test", "256",
                        "--batch-size", "64", "--amp-dtype", "bf16", tiny_defaults=False)
    assert result["syncs"] == 0, json.dumps(result["sites"], indent=2)


def test_the_features_that_wait_by_design(tmp_path):
    debug = cuda_syncs(render(tmp_path / "debug", ["debug"]))
    assert debug["syncs"] >= debug["steps"], debug  # at least the check of each step
    assert all("nonfinite" in site or "isfinite" in site or "tolist" in site
               for site in debug["sites"]), debug["sites"]
    on_cpu = cuda_syncs(render(tmp_path / "ema", ["ema"]), "--ema-on-cpu")
    assert on_cpu["syncs"] > 0, on_cpu
    assert all("train.py" in site and ".to(self.device)" in site
               for site in on_cpu["sites"]), on_cpu["sites"]


def test_the_counter_sees_a_sync_on_the_gpu(tmp_path):
    project = render(tmp_path)
    model = (project / "model.py").read_text().replace(
        "def compute_loss(model, batch):", "def compute_loss_plain(model, batch):")
    model += '''

def compute_loss(model, batch):
    loss, metrics = compute_loss_plain(model, batch)
    metrics["loss_copy"] = loss.item()  # a scalar read: waits for the GPU
    return loss, metrics
'''
    (project / "model.py").write_text(model)
    result = cuda_syncs(project)
    assert result["syncs"] >= result["steps"], result
    assert any(" at model.py:" in site for site in result["sites"]), result["sites"]
