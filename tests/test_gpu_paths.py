"""The GPU code paths of train.py, tested on a CPU.

What a CPU cannot run it can still check: which device each rank picks and makes
current (with a faked device count), that only this rank's CUDA RNG state is
saved and restored (with faked CUDA functions), the MFU table's matching, that
no host synchronisation happens per step where the code says so, that tensor
datasets are read a batch at a time, that --compile compiles once however the
epochs end, and that samples/s leaves evaluation and checkpoints out. Each check
runs a small driver script in a rendered project, which imports its train.py.
"""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from helpers import render, run_train, train_env

# A driver's prologue: fake a machine with four GPUs (nothing CUDA really runs).
FAKE_GPUS = """
import torch
calls = []
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: 4
torch.cuda.set_device = lambda device: calls.append(("set_device", str(device)))
"""


def run_driver(project: Path, code: str, *, torchrun: int = 0, args: list[str] = (),
               timeout: float = 300) -> str:
    """Run `code` as a script in the project (under torchrun with N processes if
    given) with `args`; its stdout."""
    (project / "driver.py").write_text(textwrap.dedent(code))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={torchrun}"] if torchrun else [sys.executable]
    result = subprocess.run([*launcher, "driver.py", *args], cwd=project, capture_output=True,
                            text=True, timeout=timeout, env=train_env())
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result.stdout


def last_json(stdout: str):
    return json.loads([line for line in stdout.splitlines() if line.startswith(("{", "["))][-1])


def test_each_rank_takes_and_makes_current_its_own_gpu(tmp_path):
    project = render(tmp_path, {"ddp", "slurm", "amp"})
    out = run_driver(project, FAKE_GPUS + """
import json, os
import train

result = {}
for name, local_rank in [("auto", 5), ("cuda", 2), ("cuda:3", 0)]:
    calls.clear()
    device = train.pick_device(name, local_rank)
    result[f"{name}@{local_rank}"] = [str(device), calls[:]]

def exit_line(env, argv):
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        train.setup_distributed(train.parse_config(argv))
    except SystemExit as exc:
        return str(exc)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return None

# two ranks told to share one GPU
result["shared"] = exit_line({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"},
                             ["--device", "cuda:1"])
# `python train.py` inside an salloc of two tasks: no srun step
result["salloc"] = exit_line({"SLURM_NTASKS": "2", "SLURM_PROCID": "0"}, [])

capability = {}
torch.cuda.get_device_capability = lambda device=None: capability["value"]
for value in [(7, 0), (7, 5), (8, 0), (9, 0)]:
    capability["value"] = value
    dtype = train.pick_amp_dtype("auto", torch.device("cuda", 0))
    result[f"sm{value[0]}{value[1]}"] = str(dtype)
print(json.dumps(result))
""")
    result = last_json(out)
    assert result["auto@5"] == ["cuda:1", [["set_device", "cuda:1"]]]
    assert result["cuda@2"] == ["cuda:2", [["set_device", "cuda:2"]]]
    # one process on another GPU than the first makes it current too
    assert result["cuda:3@0"] == ["cuda:3", [["set_device", "cuda:3"]]]
    assert "every rank would train on that one GPU" in result["shared"]
    assert "--device cuda" in result["shared"]
    assert "not started by srun" in result["salloc"]
    assert "\n" not in result["salloc"]
    # V100 (sm70) and T4 (sm75) only emulate bf16: fp16 for them
    assert [result[k] for k in ("sm70", "sm75", "sm80", "sm90")] == [
        "torch.float16", "torch.float16", "torch.bfloat16", "torch.bfloat16"]


def test_srun_step_sets_the_world_and_salloc_shell_stops(tmp_path):
    """The same through the command line: the one-line exit and its status."""
    project = render(tmp_path, {"ddp", "slurm"})
    result = run_train(project, "--fast-dev-run", check=False,
                       env={"SLURM_NTASKS": "2", "SLURM_JOB_ID": "7", "SLURM_PROCID": "0"})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("SLURM_NTASKS=2")
    ok = run_train(project, "--fast-dev-run", env={
        "SLURM_NTASKS": "2", "SLURM_JOB_ID": "7", "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0", "SLURM_STEP_NUM_TASKS": "1"})
    assert "world size 1" in ok.stdout


def test_only_this_ranks_cuda_rng_state_is_saved_and_restored(tmp_path):
    project = render(tmp_path, {"ddp"})
    out = run_driver(project, FAKE_GPUS + """
import json
import train

def forbidden(*args, **kwargs):
    raise AssertionError("the states of all GPUs are not this rank's to save")

torch.cuda.get_rng_state_all = torch.cuda.set_rng_state_all = forbidden
torch.cuda.get_rng_state = lambda device="cuda": torch.full((4,), torch.device(device).index)
torch.cuda.set_rng_state = lambda state, device="cuda": calls.append(
    ("set_rng_state", state.tolist(), str(device)))
saved = train.rng_state(torch.device("cuda", 2))
# restored on a machine where this rank's GPU is cuda:0 (one GPU per task)
train.set_rng_state(saved, torch.device("cuda", 0))
cpu_state = train.rng_state(torch.device("cpu"))
print(json.dumps({"saved": saved["cuda"].tolist(), "calls": calls,
                  "cpu_has_cuda": "cuda" in cpu_state}))
""")
    result = last_json(out)
    assert result["saved"] == [2, 2, 2, 2]
    assert result["calls"] == [["set_rng_state", [2, 2, 2, 2], "cuda:0"]]
    assert result["cpu_has_cuda"] is False


def test_mfu_peaks_match_whole_gpu_names_and_the_precision(tmp_path):
    project = render(tmp_path, {"amp"})
    out = run_driver(project, """
import json
import torch
import train_utils

name = {}
torch.cuda.get_device_name = lambda device=None: name["value"]
cuda = torch.device("cuda", 0)
result = {}
for gpu in ["NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL",
            "NVIDIA L4", "NVIDIA L40", "NVIDIA L40S", "NVIDIA A10", "NVIDIA A10G",
            "NVIDIA H100 XYZ", "Tesla T4"]:
    name["value"] = gpu
    result[gpu] = [train_utils.gpu_peak_flops(cuda, dtype, tf32)
                   for dtype, tf32 in [(torch.bfloat16, True), (torch.float16, False),
                                       (torch.float32, True), (torch.float32, False)]]
result["cpu"] = train_utils.gpu_peak_flops(torch.device("cpu"), torch.bfloat16, True)
result["table"] = {k: list(v) for k, v in train_utils.GPU_PEAK_FLOPS.items()}
print(json.dumps(result))
""")
    result = last_json(out)
    table = result.pop("table")
    for gpu in ["NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL",
                "NVIDIA L4", "NVIDIA L40", "NVIDIA L40S", "NVIDIA A10", "Tesla T4"]:
        half, tf32, fp32 = table[gpu]
        # bf16 and fp16 share the half-precision peak; fp32 uses TF32's only if allowed
        assert result[gpu] == [half, half, tf32, fp32], gpu
    # no substring matches: a variant gets its own row or none
    assert result["NVIDIA H100 PCIe"] != result["NVIDIA H100 80GB HBM3"]
    assert result["NVIDIA L40"] != result["NVIDIA L4"]
    assert result["NVIDIA A10G"] == result["NVIDIA H100 XYZ"] == [None] * 4
    assert result["cpu"] is None
    for half, tf32, fp32 in table.values():
        assert half > tf32 >= fp32 > 0


def test_no_host_sync_per_step_under_ddp_and_slurm(tmp_path):
    """Between two runs that differ only in their number of steps (no log,
    validation or checkpoint in between), the calls that wait for the device
    (.tolist(), .item(), bool(tensor)) and the collectives train.py makes must not
    grow, except for --debug's one check of the gradient norm per step."""
    project = render(tmp_path, {"ddp", "slurm", "debug"})
    code = """
import json
import os
import sys
import torch
import torch.distributed as dist
import train

counts = {}

def counting(name, function):
    def wrapper(*args, **kwargs):
        # train.py's own calls (torch's CPU optimizers call .item() themselves)
        if sys._getframe(1).f_code.co_filename.endswith("train.py"):
            counts[name] = counts.get(name, 0) + 1
        return function(*args, **kwargs)
    return wrapper

for name in ("tolist", "item", "__bool__"):
    setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
for name in ("all_reduce", "broadcast", "all_gather_object", "barrier"):
    setattr(dist, name, counting(name, getattr(dist, name)))

steps = sys.argv[1]
args = ["--n-train", "2048", "--n-val", "64", "--n-test", "64", "--batch-size", "8",
        "--max-epochs", "1", "--log-every", "1000", "--sanity-val-steps", "0",
        "--ckpt-every", "0", "--max-steps", steps, "--run-dir", f"runs/{steps}"]
assert train.main(args) == 0
if os.environ["RANK"] == "0":
    print(json.dumps(counts))
"""
    # one launch per run: a second process group in one process can meet stale
    # addresses of the first one in torchrun's store
    short, long = (last_json(run_driver(project, code, torchrun=2, args=[steps]))
                   for steps in ("10", "30"))
    grown = {name: long.get(name, 0) - short.get(name, 0) for name in {*short, *long}}
    assert grown.pop("__bool__", 0) == 20, (short, long)  # --debug: one per step
    assert all(value == 0 for value in grown.values()), grown


def test_tensor_datasets_are_read_a_whole_batch_at_a_time(tmp_path):
    project = render(tmp_path, {"ddp"})  # a rank of two: its share of the data
    out = run_driver(project, """
import json
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset
import train

reads = []

class Counted(TensorDataset):
    def __getitem__(self, index):
        reads.append(index)
        return super().__getitem__(index)

x = torch.arange(100.0).view(50, 2)
y = torch.arange(50)
cfg = train.parse_config(["--batch-size", "8"])
world = train.Dist(rank=1, world_size=2)
result = {}
for name, dataset in [("tensors", Counted(x, y)), ("subset", Subset(Counted(x, y), range(40)))]:
    reads.clear()
    loader = train.make_loader(dataset, cfg, world, torch.device("cpu"), shuffle=True,
                               epoch=3, skip_batches=1)
    batches = list(loader)
    result[name] = {"reads": len(reads), "batches": len(batches)}
    # the batches one sample at a time would have given, from the same sampler
    sampler = train.ShardSampler(len(dataset), world.rank, world.world_size, True, cfg.seed, 3, 8)
    expected = list(DataLoader(dataset, batch_size=8, sampler=sampler))
    result[name]["equal"] = len(expected) == len(batches) and all(
        torch.equal(a, b) for got, want in zip(batches, expected) for a, b in zip(got, want))
print(json.dumps(result))
""")
    result = last_json(out)
    # 50 samples, 25 per rank, one batch of 8 skipped: 17 left in 3 batches
    assert result["tensors"] == {"reads": 3, "batches": 3, "equal": True}
    # 40 samples, 20 per rank, minus 8: 12 in 2 batches
    assert result["subset"] == {"reads": 2, "batches": 2, "equal": True}


def test_compile_compiles_once_across_epochs_with_short_last_batches(tmp_path):
    project = render(tmp_path, {"compile"})
    out = run_driver(project, """
import json
import torch
import train

graphs = []

def counting_backend(graph, example_inputs):
    graphs.append([tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)])
    return graph.forward

compile = torch.compile
torch.compile = lambda model, mode=None: compile(model, backend=counting_backend)
# 100 samples, batches of 32: every epoch ends with a batch of 4 unless dropped
args = ["--n-train", "100", "--n-val", "32", "--n-test", "32", "--batch-size", "32",
        "--sanity-val-steps", "0", "--ckpt-every", "0", "--log-every", "2"]
result = {}
runs = [("one step", ["--max-steps", "1"]), ("three epochs", ["--max-epochs", "3"])]
for name, extra in runs:
    torch._dynamo.reset()
    graphs.clear()
    assert train.main([*args, *extra, "--run-dir", f"runs/{extra[1]}"]) == 0
    result[name] = len(graphs)
summary = json.load(open("runs/3/summary.json"))
result["steps"] = summary["step"]
print(json.dumps(result))
""")
    result = last_json(out)
    assert result["one step"] >= 1
    assert result["three epochs"] == result["one step"]
    assert result["steps"] == 3 * (100 // 32)  # full batches only


def test_samples_per_second_leaves_evaluation_and_checkpoints_out(tmp_path):
    """A fake clock: a training forward takes 1 s, an evaluation forward 100 s and a
    checkpoint write 50 s; samples/s must be the batch size, exactly."""
    project = render(tmp_path, set())
    out = run_driver(project, """
import csv
import json
import time
import train

clock = [0.0]
time.perf_counter = lambda: clock[0]
compute_loss, atomic_save = train.compute_loss, train.atomic_save

def timed_loss(model, batch):
    clock[0] += 1.0 if model.training else 100.0
    return compute_loss(model, batch)

def timed_save(obj, path):
    clock[0] += 50.0
    atomic_save(obj, path)

train.compute_loss, train.atomic_save = timed_loss, timed_save
assert train.main(["--n-train", "512", "--n-val", "64", "--n-test", "64",
                   "--batch-size", "32", "--max-epochs", "2", "--log-every", "4",
                   "--val-check-interval", "2", "--ckpt-every", "3",
                   "--sanity-val-steps", "0", "--run-dir", "runs/clock"]) == 0
with open("runs/clock/metrics.csv") as f:
    rows = [row for row in csv.DictReader(f) if row["split"] == "train"]
print(json.dumps([float(row["samples_per_s"]) for row in rows]))
""")
    rates = last_json(out)
    assert len(rates) == 8  # 32 steps, logged every 4 (an epoch's end among them)
    assert rates == [32.0] * len(rates)


def test_slurm_scripts_ask_for_one_gpu_per_task_and_a_safe_port(tmp_path):
    for features, tasks in [({"slurm"}, 1), ({"slurm", "ddp"}, 4)]:
        project = render(tmp_path, features, name="_".join(sorted(features)))
        for script in ("train.sbatch", "sweep.sbatch"):
            text = (project / "slurm" / script).read_text()
            assert f"\n#SBATCH --ntasks-per-node={tasks}\n" in text, script
            assert f"\n#SBATCH --gpus-per-node={tasks}\n" in text, script
        port_lines = [line for line in (project / "slurm" / "train.sbatch").read_text()
                      .splitlines() if line.startswith("MASTER_PORT=")]
        assert len(port_lines) == (1 if "ddp" in features else 0)
        for job_id in (1, 12_345, 19_999, 987_654_321, 2**31 - 1):
            if port_lines:
                port = subprocess.run(["bash", "-c", f"{port_lines[0]}; echo $MASTER_PORT"],
                                      env={"SLURM_JOB_ID": str(job_id)}, capture_output=True,
                                      text=True, check=True).stdout
                # privileged ports below, Linux's ephemeral range (32768+) above
                assert 1024 <= int(port) < 32768, (job_id, port)
    assert re.search(r"--gpus-per-node=0", (project / "slurm" / "train.sbatch").read_text())
