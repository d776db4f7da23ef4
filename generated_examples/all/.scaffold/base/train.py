"""Train demo: an explicit PyTorch training loop you own.

The model and data live in model.py and data.py; this file is the loop. Every
option below is a field of `Config` and a command-line flag.

Several optimizers: model.build_optimizers lists (name, optimizer, every_n_steps).
Each optimizer due at a training step (every n-th one) runs compute_loss(model,
batch, name), backpropagates into its own sub-model `model.<name>` only and
steps, one after the other in the listed order.
A training step is one window of --accumulate-steps micro-batches.

Run on one process (CPU, or the first GPU):

    python train.py
    python train.py --max-epochs 5 --lr 1e-3 --run-dir runs/exp1
    python train.py --resume auto --run-dir runs/exp1   # continue where it stopped
    python train.py --fast-dev-run                      # two batches, writes nothing

One machine, N processes (one per GPU; gloo on CPU):

    torchrun --standalone --nproc_per_node=4 train.py

Several machines (run on every node, with its own --node_rank):

    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 \
        --rdzv_backend=c10d --rdzv_endpoint=HOST_OF_NODE_0:29500 train.py

On a SLURM cluster (one task per process, see slurm/train.sbatch):

    sbatch slurm/train.sbatch --lr 1e-3
    sbatch slurm/sweep.sbatch                # a job array, one configuration per task
"""

import copy
import dataclasses
import importlib.util
import inspect
import json
import math
import os
import pickle
import shlex
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, ExitStack, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

# Imported before init_process_group on purpose: its functions' default arguments
# hold the process group that exists at import time, and DDP imports it later
# otherwise. A group held there outlives destroy_process_group(), and gloo's
# threads then crash the interpreter at exit (SIGABRT).
import torch.distributed.nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import BatchSampler, DataLoader, Dataset, Subset

from train_utils import (
    ContractError,
    CsvLog,
    ShardSampler,
    Progress,
    atomic_save,
    batch_len,
    checked_datasets,
    checked_loss,
    contract_gaps,
    find_resumable,
    format_duration,
    fraction_or_count,
    gpu_peak_flops,
    indexes_batches,
    load_checkpoint,
    load_resumable,
    model_summary,
    move_to,
    parse_dataclass,
    pick_device,
    prune_checkpoints,
    rng_state,
    run_dir_problem,
    seed_everything,
    set_rng_state,
    snapshot_code,
)

try:
    from data import build_datasets
    from model import build_model, build_optimizers, compute_loss
except ImportError as exc:
    # a model.py or data.py of your own: one line says all they still lack
    sys.exit(contract_gaps(exc))


def option(default, help):
    """A Config field with its command-line help text."""
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # run
    run_dir: str = option(
        "runs/demo",
        "checkpoints, metrics.csv, config.json, summary.json go here",
    )
    resume: str = option("", "checkpoint to resume from; 'auto': newest in run_dir")
    resume_anyway: bool = option(
        False, "resume although run_dir/config.json differs in what changes training"
    )
    seed: int = option(1337, "seeds model init, shuffling and every rank's RNG")
    device: str = option("auto", "auto | cpu | cuda | cuda:N | mps")
    deterministic: bool = option(False, "use deterministic algorithms (slower on GPU)")
    tf32: bool = option(True, "CUDA: float32 matmuls on TF32 tensor cores")
    # length of training: whichever limit comes first ends it
    max_epochs: int = option(40, "stop after this many epochs")
    max_steps: int = option(-1, "stop after this many training steps (-1: no limit)")
    min_epochs: int = option(0, "train at least this many epochs (early stopping too)")
    # optimization
    batch_size: int = option(
        512,
        "samples per micro-batch *per process*: the global batch is "
        "batch_size x world size (x accumulate_steps per optimizer step)",
    )
    lr: float = option(
        1e-3,
        "peak learning rate; "
        "an optimizer built with another one follows the schedule scaled",
    )
    min_lr: float = option(
        1e-4, "learning rate at the end of the cosine decay (scaled likewise)"
    )
    schedule: str = option(
        "cosine",
        "cosine (linear warmup, then cosine to min_lr) | constant (warmup, then lr)",
    )
    warmup_steps: int = option(100, "optimizer steps of linear warmup")
    accumulate_steps: int = option(
        2, "micro-batches per optimizer step (gradient accumulation)"
    )
    clip_norm: float = option(1.0, "clip the global gradient norm to this (0: off)")
    clip_value: float = option(
        0.0, "clip each gradient element to +-this instead of by norm (0: off)"
    )
    amp_dtype: str = option(
        "auto",
        "auto (bf16 where fast, fp16 on older GPUs, "
        "off on CPUs without bf16 units) | bf16 | fp16 | off",
    )
    compile_mode: str = option(
        "default",
        "torch.compile mode: default | reduce-overhead | max-autotune "
        "| max-autotune-no-cudagraphs",
    )
    ema_decay: float = option(0.999, "weight of the old average at each update")
    ema_warmup: bool = option(
        True, "ramp the decay up from 0 over the first updates (--no-ema-warmup)"
    )
    ema_every: int = option(1, "update the average every N training steps")
    ema_on_cpu: bool = option(False, "keep the average in CPU memory, not the GPU's")
    ema_eval: str = option(
        "both", "both: val_loss and val_ema_loss side by side | ema: averaged only"
    )
    ema_of: str = option("generator", "the sub-model to average (its attribute)")
    # checkpoints
    ckpt_every: int = option(500, "keep step_N.pt every N training steps (0: off)")
    keep_last: int = option(3, "step_N.pt kept (last.pt and best.pt always)")
    # val_loss: every model has it (the demo's val_acc is worth a look too)
    monitor_metric: str = option(
        "val_loss", "validation metric that picks best.pt and drives early stopping"
    )
    monitor_mode: str = option("min", "min | max: is a lower or higher value better")
    patience: int = option(3, "validations without improvement before stopping")
    min_delta: float = option(
        0.0, "smallest change of the monitored metric that counts as improvement"
    )
    # validation and test
    val_every_epochs: int = option(1, "validate at the end of every N-th epoch")
    val_check_interval: float = option(
        1.0,
        "also validate inside an epoch: a fraction of it (<1) "
        "or every N training steps (>1)",
    )
    sanity_val_steps: int = option(2, "validation batches before training (0: off)")
    limit_train_batches: float = option(
        1.0, "use this fraction (<=1.0) or number (>1) of training batches per epoch"
    )
    limit_val_batches: float = option(
        1.0, "fraction (<=1.0) or number (>1) of validation batches"
    )
    limit_test_batches: float = option(
        1.0, "fraction (<=1.0) or number (>1) of test batches"
    )
    # debugging
    fast_dev_run: bool = option(False, "2 train, val and test batches; write nothing")
    overfit_batches: int = option(0, "train and validate on the first N batches only")
    on_nonfinite: str = option(
        "skip", "when a gradient is NaN/inf: skip (the optimizer step) | stop"
    )
    # logging
    log_every: int = option(50, "print/log training metrics every N training steps")
    num_workers: int = option(0, "DataLoader worker processes")
    wandb_project: str = option(
        "demo",
        "W&B project",
    )
    wandb_run_name: str = option("", "W&B run name (default: run_dir's name)")
    wandb_tags: str = option("", "W&B tags, comma-separated")
    wandb_mode: str = option(
        "online", "W&B: online | offline (wandb sync uploads it later) | disabled"
    )
    mlflow_experiment: str = option(
        "demo",
        "MLflow experiment",
    )
    mlflow_run_name: str = option("", "MLflow run name (default: run_dir's name)")
    mlflow_tags: str = option("", "MLflow tags: key=value or key, comma-separated")
    mlflow_uri: str = option(
        "",
        "MLflow tracking URI, e.g. http://HOST:5000 "
        "(default: a local store, RUN_DIR/mlruns)",
    )
    dist_timeout_s: int = option(
        600, "seconds a collective may wait before the job fails (a dead rank)"
    )
    find_unused_parameters: bool = option(
        False, "let DDP allow parameters that some batches leave without gradient"
    )
    # model and data (read by model.py / data.py; add your own fields here)
    n_modes: int = option(
        8, "Gaussians of the target mixture, evenly spaced on a ring of radius 2"
    )
    mode_std: float = option(0.05, "standard deviation of each Gaussian")
    n_train: int = option(65536, "training points")
    n_val: int = option(4096, "validation points")
    n_test: int = option(4096, "test points")
    data_seed: int = option(0, "seed of the data generator (fixed data across runs)")
    latent_dim: int = option(8, "size of the generator's input noise")
    hidden: int = option(128, "width of the hidden layers of both networks")
    g_every: int = option(
        1,
        "step the generator on every N-th training step (the discriminator: "
        "every step)",
    )


# The options a resumed run may change: they decide where and how a run is
# launched, logged and checkpointed, not the numbers it trains. max_steps is here
# because extending or cutting short a run is what resuming is for, although it
# moves the end of the LR schedule when it is the nearer limit. A difference in
# any other option stops a resume (see check_resumed_options).
HARMLESS_CHANGES = (
    "run_dir",
    "resume",
    "resume_anyway",
    "max_steps",
    "ckpt_every",
    "keep_last",
    "sanity_val_steps",
    "fast_dev_run",
    "log_every",
    "num_workers",
    "dist_timeout_s",
    "wandb_project",
    "wandb_run_name",
    "wandb_tags",
    "wandb_mode",
    "mlflow_experiment",
    "mlflow_run_name",
    "mlflow_tags",
    "mlflow_uri",
)


# A resumed run goes on with its own options (run_dir/config.json), as the
# train.py that began it named them. Options renamed since scaffold 0.1.0, old
# name -> new: the old name still reads, in a record and on the command line (a
# job that a cluster restarts runs the command it was submitted with).
RENAMED_OPTIONS = {"monitor": "monitor_metric"}
# Options added since 0.1.0, with the value that keeps a run begun before them
# as it began; any other option new to a run takes its default.
OLD_BEHAVIOUR = {
    "tf32": False,  # train.py set no TF32: float32 matmuls in full precision
}


def upgrade_options(saved: dict) -> tuple[dict, list[str], list[str]]:
    """A run's recorded options as this Config's: renamed ones under their new
    name, OLD_BEHAVIOUR for those the run began without. Also returns the names
    dropped (not options here any more: a removed feature's, say) and those the
    record lacks, which take their defaults."""
    options = {RENAMED_OPTIONS.get(name, name): value for name, value in saved.items()}
    fields = [f.name for f in dataclasses.fields(Config)]
    dropped = [name for name in options if name not in fields]
    for name in dropped:
        del options[name]
    for name, value in OLD_BEHAVIOUR.items():
        if name in fields:
            options.setdefault(name, value)
    return options, dropped, [name for name in fields if name not in options]


def recorded_options(cfg: Config) -> dict:
    """The options of the run that --resume continues, from its config.json (none
    if it has none); what no longer fits this train.py is said in one line each."""
    path = Path(cfg.run_dir) / "config.json"
    try:
        saved = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        sys.exit(f"--resume: {path} is not JSON (delete it to resume without it)")
    if not saved:
        return {}
    options, dropped, new = upgrade_options(saved)
    notes = []
    if dropped:
        notes.append(f"resume: dropped, no longer options: {', '.join(dropped)}")
    new = [name for name in new if name not in HARMLESS_CHANGES]
    if new:
        defaults = Config()
        values = ", ".join(f"{name} {getattr(defaults, name)!r}" for name in new)
        notes.append(f"resume: options new to this run take their defaults: {values}")
    if os.environ.get("RANK", "0") != "0":
        notes = []  # one process says it
    for note in notes:
        print(note)
    # how this run is resumed is this command's: never the record's
    for name in ("resume", "resume_anyway"):
        options.pop(name, None)
    return options


def parse_config(argv=None) -> Config:
    """Build a Config from the command line. A bad value stops here, before
    anything is built, with one line that names the option and what it accepts
    (status 2)."""
    description = __doc__.split("\n\n")[0]
    cfg, parser = parse_dataclass(Config, argv, description, RENAMED_OPTIONS)
    if cfg.resume:
        # once more, with the run's own options as the defaults: a default that
        # changed in this file since the run began never changes the run
        # (every process reads config.json here, before the process group forms
        # and rank 0 writes the new one in open_logs)
        saved = recorded_options(cfg)
        cfg, parser = parse_dataclass(Config, argv, description, RENAMED_OPTIONS, saved)
        check_resumed_options(cfg, saved)
    # argparse's float() takes "nan" and "inf", which no option means
    problems = [
        f"--{name.replace('_', '-')} must be a finite number, not {value}"
        for name, value in dataclasses.asdict(cfg).items()
        if isinstance(value, float) and not math.isfinite(value)
    ]
    if cfg.max_steps < -1 or cfg.max_steps == 0:
        problems.append("--max-steps must be positive (or -1 for no limit)")
    # the bounds of the numeric options: (names, is the value bad, what is accepted)
    at_least_1 = "max_epochs batch_size log_every val_every_epochs"
    at_least_1 += " n_modes n_train n_val n_test latent_dim hidden g_every"
    at_least_0 = "min_epochs warmup_steps ckpt_every keep_last sanity_val_steps"
    at_least_0 += " overfit_batches num_workers min_lr"
    # a fraction of the batches (<= 1) or a number of them (> 1), never 2.5
    fraction_or_whole = "limit_train_batches limit_val_batches limit_test_batches"
    fraction_or_whole += " val_check_interval"
    for names, bad, rule in (
        (at_least_1, lambda v: v < 1, ">= 1"),
        (at_least_0, lambda v: v < 0, ">= 0"),
        (
            fraction_or_whole,
            lambda v: v <= 0 or (v > 1 and v != int(v)),
            "a fraction in (0, 1] or a whole number of batches",
        ),
        # torch.Generator takes 64 bits, and the epoch is added to the seed
        ("seed data_seed", lambda v: not 0 <= v < 2**63, "in [0, 2**63)"),
        # torch takes them as float32 scalars (at most 3.4e38), lr also divided
        # by AdamW's bias correction
        ("lr clip_value", lambda v: v > 1e30, "<= 1e30"),
        ("mode_std", lambda v: v <= 0, "> 0"),
    ):
        for name in names.split():
            value = getattr(cfg, name)
            # a value that is not finite has its line above
            if (not isinstance(value, float) or math.isfinite(value)) and bad(value):
                problems.append(f"--{name.replace('_', '-')} must be {rule}")
    # options that contradict each other
    if cfg.schedule == "cosine" and 0 <= cfg.lr < cfg.min_lr < math.inf:
        problems.append(
            f"--min-lr {cfg.min_lr} is above --lr {cfg.lr}: the cosine decays from "
            "lr to min_lr (give a smaller --min-lr)"
        )
    if 1 <= cfg.max_epochs < cfg.min_epochs:
        problems.append(
            f"--min-epochs {cfg.min_epochs} is above --max-epochs {cfg.max_epochs}"
        )
    if cfg.lr <= 0:
        problems.append(
            "--lr must be > 0 (each optimizer's schedule is scaled by its own LR / lr)"
        )
    if cfg.schedule not in ("cosine", "constant"):
        problems.append(f"--schedule must be cosine or constant, not {cfg.schedule!r}")
    if cfg.monitor_mode not in ("min", "max"):
        problems.append(f"--monitor-mode must be min or max, not {cfg.monitor_mode!r}")
    if not cfg.run_dir:
        problems.append("--run-dir must not be empty")
    elif problem := run_dir_problem(cfg.run_dir):
        problems.append(problem)
    if cfg.accumulate_steps < 1:
        problems.append("--accumulate-steps must be >= 1")
    if cfg.clip_norm < 0 or cfg.clip_value < 0:
        problems.append("--clip-norm and --clip-value must be >= 0")
    if cfg.amp_dtype not in ("auto", "bf16", "fp16", "off"):
        problems.append(
            f"--amp-dtype must be auto, bf16, fp16 or off, not {cfg.amp_dtype!r}"
        )
    if cfg.patience < 1:
        problems.append("--patience must be >= 1")
    if cfg.min_delta < 0:
        # a negative margin would count a worse value as an improvement
        problems.append("--min-delta must be >= 0")
    if cfg.on_nonfinite not in ("skip", "stop"):
        problems.append(
            f"--on-nonfinite must be skip or stop, not {cfg.on_nonfinite!r}"
        )
    if not 0 <= cfg.ema_decay < 1:
        problems.append("--ema-decay must be in [0, 1)")
    if cfg.ema_every < 1:
        problems.append("--ema-every must be >= 1")
    if cfg.ema_eval not in ("both", "ema"):
        problems.append(f"--ema-eval must be both or ema, not {cfg.ema_eval!r}")
    if cfg.wandb_mode not in ("online", "offline", "disabled"):
        problems.append(
            f"--wandb-mode must be online, offline or disabled, not {cfg.wandb_mode!r}"
        )
    # torch.compile would refuse any other mode only when the model is compiled
    modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    if cfg.compile_mode not in modes:
        problems.append(
            f"--compile-mode must be {', '.join(modes[:-1])} or {modes[-1]}, "
            f"not {cfg.compile_mode!r}"
        )
    if not 1 <= cfg.dist_timeout_s <= 365 * 24 * 3600:
        problems.append("--dist-timeout-s must be in [1, 31536000] (a year)")
    try:
        device = torch.device("cpu" if cfg.device == "auto" else cfg.device)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        problems.append(f"--device {cfg.device}: not auto, cpu, cuda, cuda:N or mps")
    elif device.index is not None and device.type != "cuda":
        problems.append(f"--device {cfg.device}: not auto, cpu, cuda, cuda:N or mps")
    elif device.type == "cuda" and not torch.cuda.is_available():
        problems.append(f"--device {cfg.device}: this torch sees no CUDA GPU")
    elif device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        problems.append(
            f"--device {cfg.device}: this torch sees {torch.cuda.device_count()} GPUs"
        )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        problems.append(f"--device {cfg.device}: this torch sees no MPS device")
    if cfg.resume not in ("", "auto") and not Path(cfg.resume).is_file():
        problems.append(f"--resume {cfg.resume}: no such checkpoint file")
    if problems:
        parser.error("; ".join(problems))
    return cfg


# -----------------------------------------------------------------------------
# processes and devices


@dataclass(frozen=True)
class Dist:
    """Where this process stands: rank 0 of 1 unless launched by torchrun or srun."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(cfg: Config) -> tuple[Dist, torch.device]:
    """Join the process group that torchrun (or srun) describes;
    pick this rank's device."""
    env = os.environ
    if "RANK" not in env and "SLURM_STEP_NUM_TASKS" in env:
        # srun started this process as one task of a job step (one task per
        # process, so that SLURM's signals reach every rank); torch.distributed
        # reads its rendezvous from these names.
        env["RANK"], env["LOCAL_RANK"] = env["SLURM_PROCID"], env["SLURM_LOCALID"]
        env["WORLD_SIZE"] = env["SLURM_STEP_NUM_TASKS"]
    elif "RANK" not in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        # e.g. `python train.py` typed inside an salloc of several tasks: the
        # other ranks would never come, and the rendezvous would wait for them
        sys.exit(
            f"SLURM_NTASKS={env['SLURM_NTASKS']} but train.py was not started by "
            "srun: run `srun python train.py`, or unset SLURM_NTASKS to train "
            "in one process"
        )
    world = Dist(
        int(env.get("RANK", 0)),
        int(env.get("LOCAL_RANK", 0)),
        int(env.get("WORLD_SIZE", 1)),
    )
    if world.world_size > 1 and cfg.device.startswith("cuda:"):
        sys.exit(
            f"--device {cfg.device}: every rank would train on that one GPU; use "
            "--device cuda (each rank takes the GPU of its LOCAL_RANK) and "
            "CUDA_VISIBLE_DEVICES to choose the GPUs"
        )
    device = pick_device(cfg.device, world.local_rank)
    if world.world_size > 1:
        # A bounded timeout: if a rank dies, the others fail instead of hanging.
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            timeout=timedelta(seconds=cfg.dist_timeout_s),
            device_id=device if device.type == "cuda" else None,
        )
    return world, device


def sync_buffers(model: torch.nn.Module, world: Dist) -> None:
    """Give every rank rank 0's buffers, the ones a checkpoint saves.

    DDP copies them before each training forward, which then updates each rank's
    running statistics with its own batch: evaluated without this copy, the ranks
    would each use statistics of their own, and best.pt would not score what
    validation said it did.
    """
    if world.world_size > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def as_bytes(obj, device: torch.device) -> torch.Tensor:
    """`obj` pickled into a byte tensor on `device`, to travel in a collective.

    (dist.all_gather_object and broadcast_object_list do the same, but they need
    numpy, which torch alone does not install.)
    """
    return torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8).to(device)


def from_bytes(data: torch.Tensor, size: int):
    return pickle.loads(bytes(data.cpu().untyped_storage())[:size])


def collective_device(device: torch.device) -> torch.device:
    return device if device.type == "cuda" else torch.device("cpu")  # nccl: GPUs only


def gather_from_ranks(obj, world: Dist, device: torch.device) -> list:
    """Every rank's `obj` (anything pickle takes), in rank order, on every rank."""
    on = collective_device(device)
    data = as_bytes(obj, on)
    sizes = [
        torch.zeros((), dtype=torch.int64, device=on) for _ in range(world.world_size)
    ]
    dist.all_gather(sizes, torch.tensor(len(data), device=on))
    padded = torch.zeros(max(int(size) for size in sizes), dtype=torch.uint8, device=on)
    padded[: len(data)] = data
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return [from_bytes(t, int(size)) for t, size in zip(gathered, sizes)]


def broadcast_from_rank0(obj, world: Dist, device: torch.device):
    """Rank 0's `obj` (anything pickle takes) on every rank; the others' is ignored."""
    on = collective_device(device)
    data = as_bytes(obj, on) if world.is_main else None
    size = torch.tensor(len(data) if world.is_main else 0, device=on)
    dist.broadcast(size, src=0)
    if not world.is_main:
        data = torch.empty(int(size), dtype=torch.uint8, device=on)
    dist.broadcast(data, src=0)
    return obj if world.is_main else from_bytes(data, int(size))


def buffer_sync(model: torch.nn.Module) -> dict[str, bool]:
    """DDP's option that copies rank 0's buffers to every rank before each forward.

    On only for BatchNorm-style running statistics, so that they do not drift
    apart across ranks; constant buffers (tables, masks) need no copy each step.
    A buffer of your own that training changes does: return True for it.
    (torch 2.13 renamed broadcast_buffers to forward_sync_buffers.)
    """
    stats = any(getattr(m, "track_running_stats", False) for m in model.modules())
    renamed = "forward_sync_buffers" in inspect.signature(DDP).parameters
    return {"forward_sync_buffers" if renamed else "broadcast_buffers": stats}


def pick_amp_dtype(choice: str, device: torch.device, say=print) -> torch.dtype | None:
    """The autocast dtype for `--amp-dtype`, or None for full precision."""
    if choice == "off":
        return None
    if choice != "auto":
        return torch.bfloat16 if choice == "bf16" else torch.float16
    if device.type == "cuda":
        # bf16 tensor cores start with Ampere (compute capability 8.0); V100s and
        # T4s only emulate bf16, slowly, so they get fp16 (with loss scaling)
        fast_bf16 = torch.cuda.get_device_capability(device) >= (8, 0)
        return torch.bfloat16 if fast_bf16 else torch.float16
    if device.type == "cpu" and "amx_bf16" in Path("/proc/cpuinfo").read_text(
        errors="ignore"
    ):
        return torch.bfloat16
    # Without matrix units bf16 autocast is emulated and several times slower.
    say(
        "amp: this device has no fast bf16/fp16 units; "
        "training in fp32 (force it with --amp-dtype bf16)"
    )
    return None


# -----------------------------------------------------------------------------
# data: shuffling is a pure function of (seed, epoch), so a resumed run sees the
# same batches as an uninterrupted one


def make_loader(
    dataset: Dataset,
    cfg: Config,
    world: Dist,
    device: torch.device,
    shuffle: bool,
    epoch: int = 0,
    skip_batches: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    skip = skip_batches * cfg.batch_size
    sampler = ShardSampler(
        len(dataset), world.rank, world.world_size, shuffle, cfg.seed, epoch, skip
    )
    batching = {
        "sampler": sampler,
        "batch_size": cfg.batch_size,
        "drop_last": drop_last,
    }
    if indexes_batches(dataset):
        # the sampler yields lists of indices, the dataset turns each into a batch
        batch_sampler = BatchSampler(sampler, cfg.batch_size, drop_last)
        batching = {"sampler": batch_sampler, "batch_size": None}
    return DataLoader(
        dataset,
        num_workers=cfg.num_workers,
        # page-locked host memory: the copy to the GPU (non_blocking) then
        # overlaps the computation instead of waiting for it
        pin_memory=device.type == "cuda",
        # Its own generator: creating a loader must not draw from the global RNG,
        # which belongs to the model (dropout) and is restored on resume.
        generator=torch.Generator().manual_seed(cfg.seed + epoch),
        persistent_workers=False,
        **batching,
    )


# -----------------------------------------------------------------------------
# optimization


@dataclass
class Optim:
    """One entry of model.build_optimizers, with what the loop keeps about it."""

    name: str  # also the sub-model it trains: model.<name>
    optimizer: torch.optim.Optimizer
    every: int  # it steps on every `every`-th training step
    params: list[torch.nn.Parameter]  # the only ones its backward() fills
    total_steps: int = 0  # the steps it takes in the whole run: its schedule's length


def check_optimizers(model: torch.nn.Module, optimizers: list) -> dict[str, Optim]:
    """build_optimizers' list as {name: Optim} in its order, its contract checked.

    Each name is the attribute of the sub-model its optimizer trains, and the
    optimizer holds exactly that sub-model's trainable parameters: the loop
    backpropagates into them only, and wraps each sub-model in its own DDP.
    """
    checked, seen = {}, set()
    for name, optimizer, every in optimizers:
        part = getattr(model, name, None)
        if not isinstance(part, torch.nn.Module) or name in checked:
            raise ContractError(
                f"model.build_optimizers: {name!r} must name a sub-model of the model "
                f"(model.{name}), once"
            )
        params = [p for p in part.parameters() if p.requires_grad]
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if held != {id(p) for p in params} or held & seen:
            raise ContractError(
                f"model.build_optimizers: the {name!r} optimizer must hold exactly the "
                f"trainable parameters of model.{name}, shared with no other optimizer"
            )
        if every < 1:
            raise ContractError(
                f"model.build_optimizers: {name!r} steps every {every} steps; "
                "it must be >= 1"
            )
        for group in optimizer.param_groups:
            # the LR it was built with: the peak of its schedule (saved in its state)
            group.setdefault("initial_lr", group["lr"])
        checked[name] = Optim(name, optimizer, every, params)
        seen |= held
    return checked


def with_parts(
    model: torch.nn.Module, parts: dict[str, torch.nn.Module]
) -> torch.nn.Module:
    """A shallow copy of `model` in which the sub-models `parts` replace its own.

    It shares every parameter and buffer with `model`, so training it trains
    `model`; `model` itself stays plain, for checkpoints and evaluation.
    """
    wrapped = copy.copy(model)
    wrapped._modules = dict(model._modules)  # its own table of sub-models
    for name, part in parts.items():
        setattr(wrapped, name, part)
    return wrapped


def syncing_only(ddp_parts: dict[str, DDP], name: str, sync: bool = True) -> ExitStack:
    """no_sync() on every DDP sub-model but `name` (on that one too unless `sync`).

    A sub-model under no_sync neither all-reduces nor waits for gradients, so the
    discriminator's forward in a generator step costs no communication.
    """
    stack = ExitStack()
    for other, part in ddp_parts.items():
        if other != name or not sync:
            stack.enter_context(part.no_sync())
    return stack


def lr_at(step: int, cfg: Config, total_steps: int) -> float:
    """Learning rate of optimizer step `step` (0-based): a pure function of the step.

    Warmup starts at lr/(warmup+1), never at 0, so the first step learns.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (
        1 + math.cos(math.pi * min(1.0, progress))
    )


# -----------------------------------------------------------------------------
# checkpoints: a resume continues the training it began; load_model() for inference


def check_resumed_options(cfg: Config, saved: dict) -> None:
    """Stop a resume given options that differ from the run's own (`saved`, from
    config.json) in one that changes training (not in HARMLESS_CHANGES): the run
    would go on as another training than the one it began. --resume-anyway
    allows it."""
    changed = [
        f"{name} {json.dumps(saved[name])} -> {json.dumps(value)}"
        for name, value in dataclasses.asdict(cfg).items()
        if name in saved and name not in HARMLESS_CHANGES and saved[name] != value
    ]
    if changed and not cfg.resume_anyway:
        sys.exit(
            f"--resume: options differ from {Path(cfg.run_dir) / 'config.json'}: "
            f"{', '.join(changed)} (--resume-anyway continues with the new ones)"
        )


# The layout of a checkpoint, written into each one. A change to it comes with a
# step in upgrade_checkpoint, so that the runs begun before it still resume.
CHECKPOINT_FORMAT = 2
# The parts of this project's checkpoints: a removed feature's is dropped on resume
CHECKPOINT_PARTS = (
    "format",
    "model",
    "optimizers",
    "scalers",
    "ema",
    "train_state",
    "rng",
    "config",
)


def upgrade_checkpoint(checkpoint: dict, path: Path) -> dict:
    """A checkpoint of this or any earlier format, in this format; one written
    by a newer train.py stops the run in one line."""
    found = checkpoint.get("format", 1)  # scaffold 0.1 and 0.2 wrote none: 1
    if found > CHECKPOINT_FORMAT:
        sys.exit(
            f"{path}: checkpoint format {found}, newer than this train.py reads "
            f"({CHECKPOINT_FORMAT}): `scaffold update` brings the code that wrote it"
        )
    if found < 2:
        # 2 (scaffold 0.3): the RNG states are a list, one per process, for any
        # number of processes (a one-process run wrote one dict); step and epoch
        # only in train_state
        if isinstance(checkpoint.get("rng"), dict):
            checkpoint["rng"] = [checkpoint["rng"]]
        checkpoint.pop("step", None)
        checkpoint.pop("epoch", None)
    checkpoint["format"] = CHECKPOINT_FORMAT
    # the run's options, named as this train.py names them
    checkpoint["config"] = upgrade_options(checkpoint["config"])[0]
    return checkpoint


def load_model(
    path: str | os.PathLike, device: str = "cpu", ema: bool = False
) -> torch.nn.Module:
    """Rebuild the trained model from a checkpoint, for inference; ema=True: with
    the averaged weights (of --ema-of's sub-model, if the run named one)."""
    checkpoint = upgrade_checkpoint(load_checkpoint(Path(path)), Path(path))
    cfg = Config(**checkpoint["config"])
    model = build_model(cfg)
    model.load_state_dict(checkpoint["model"])
    if ema:
        part = getattr(model, cfg.ema_of) if cfg.ema_of else model
        part.load_state_dict(checkpoint["ema"])
    return model.to(device).eval()


# -----------------------------------------------------------------------------
# logging


def rerun_command(cfg: Config, world: Dist) -> str:
    """The command that repeats this run: every option that differs from its
    default, spelled out (config.json is overwritten when the run is resumed)."""
    defaults = Config()
    args = []
    for f in dataclasses.fields(Config):
        value = getattr(cfg, f.name)
        if value == getattr(defaults, f.name):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    launch = ["python", "train.py"]
    one_machine = os.environ.get("LOCAL_WORLD_SIZE") == str(world.world_size)
    if world.world_size > 1 and one_machine:
        # torchrun on one machine (it sets LOCAL_WORLD_SIZE); on several machines,
        # or under another launcher, this is the command of each process
        nproc = f"--nproc_per_node={world.world_size}"
        launch = ["torchrun", "--standalone", nproc, "train.py"]
    return shlex.join(launch + args)


def print_module_shapes(
    model: torch.nn.Module, batch, optimizer_names: list[str]
) -> None:
    """Input and output shapes of every module for one batch (forward hooks)."""

    def shapes(value):
        if isinstance(value, torch.Tensor):
            return tuple(value.shape)
        if isinstance(value, (list, tuple)):
            return [shapes(v) for v in value]
        return type(value).__name__

    def hook(module, inputs, output, name=""):
        print(
            f"  {name or '(model)':<40} {type(module).__name__:<24} "
            f"in={shapes(list(inputs))} out={shapes(output)}"
        )

    handles = [
        m.register_forward_hook(lambda m, i, o, n=name: hook(m, i, o, n))
        for name, m in model.named_modules()
    ]
    print("module shapes for one batch:")
    with torch.no_grad():
        for name in optimizer_names:
            compute_loss(model, batch, name)
    for handle in handles:
        handle.remove()


def layer_grad_norms(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Gradient norm of each parameter (on the device; read only when logged)."""
    return {
        name: p.grad.detach().norm()
        for name, p in model.named_parameters()
        if p.grad is not None
    }


def nonfinite_grads(model: torch.nn.Module) -> list[str]:
    """Names of parameters whose gradient holds NaN or inf.

    One norm over all gradients and one check of it (the one host sync that
    --debug adds to a step); only when it fails are the gradients looked at one
    by one, for their names.
    """
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    if not grads or torch.isfinite(torch.nn.utils.get_total_norm(grads.values())):
        return []
    return [name for name, grad in grads.items() if not torch.isfinite(grad).all()]


# -----------------------------------------------------------------------------
# the exponential moving average of the weights


class EMA:
    """An exponential moving average of a module's parameters, in float32.

    Buffers (BatchNorm's running statistics) are copied, not averaged: an average
    of running averages describes no model. The average is a plain state_dict of
    the module, which is what checkpoints hold under "ema".
    """

    def __init__(self, module: torch.nn.Module, cfg: Config, device: torch.device):
        self.module = module
        self.decay, self.warmup = cfg.ema_decay, cfg.ema_warmup
        self.device = torch.device("cpu") if cfg.ema_on_cpu else device
        averaged = {name for name, _ in module.named_parameters()}
        self.average = {}
        for name, value in module.state_dict().items():
            keep_dtype = name not in averaged or not value.is_floating_point()
            dtype = value.dtype if keep_dtype else torch.float32
            self.average[name] = value.detach().to(self.device, dtype, copy=True)
        self.averaged = sorted(name for name in self.average if name in averaged)
        self.copied = sorted(set(self.average) - set(self.averaged))

    def decay_at(self, n: int) -> float:
        """The decay of update n (0-based): with warm-up, min(decay, n / (n + 9)),
        so the first update copies the weights and early ones forget the random
        initialisation quickly."""
        return min(self.decay, n / (n + 9)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, n: int) -> None:
        """Update n (0-based): average = decay x average + (1 - decay) x weights."""
        live = self.module.state_dict()
        averages = [self.average[name] for name in self.averaged]
        weights = [live[name].float().to(self.device) for name in self.averaged]
        # one fused kernel for all parameters (what torch.optim uses for its own
        # moving averages), not one launch per parameter
        torch._foreach_lerp_(averages, weights, 1.0 - self.decay_at(n))
        for name in self.copied:
            self.average[name].copy_(live[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.average

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            self.average[name].copy_(value)

    @contextmanager
    def swapped_in(self):
        """The averaged weights in the module, the trained ones back afterwards."""
        trained = {k: v.clone() for k, v in self.module.state_dict().items()}
        self.module.load_state_dict(self.average)
        try:
            yield
        finally:
            self.module.load_state_dict(trained)


# -----------------------------------------------------------------------------
# signals: the handlers only note a request; the loop acts on it between steps


class Requests:
    """Set by the signal handlers, acted on by the loop between steps."""

    stop = False
    requeue = False  # SLURM's warning before the time limit, or a preemption


def request_stop(signum, frame) -> None:
    Requests.stop = True


def request_requeue(signum, frame) -> None:
    Requests.requeue = True


def requeue_slurm_job() -> None:
    """Put this job back in SLURM's queue; it will resume from the checkpoint."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = (
        f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        if array_job
        else os.environ["SLURM_JOB_ID"]
    )
    try:
        returncode = subprocess.run(["scontrol", "requeue", job]).returncode
    except FileNotFoundError:
        print(
            "requeue: `scontrol` not found; "
            "resubmit the job yourself (it resumes from the checkpoint)"
        )
        return
    # SLURM stops the job as soon as it accepts the requeue, and may SIGTERM
    # scontrol itself before it exits
    if returncode in (0, -signal.SIGTERM):
        print(f"requeue: job {job} requeued; it will resume from the checkpoint")
    else:
        print(
            f"requeue: `scontrol requeue {job}` failed ({returncode}); "
            "resubmit the job yourself"
        )


# -----------------------------------------------------------------------------
# the run: train() is the outline, the functions after it are its steps, and
# `Run` is everything they share


@dataclass
class TrainState:
    """Everything about progress that a checkpoint must restore."""

    step: int = 0  # training steps taken
    epoch: int = 0  # current epoch
    batch_in_epoch: int = 0  # micro-batches of this epoch already trained on
    best: float | None = None  # best value of cfg.monitor_metric so far
    # each optimizer's own steps, by name: the position of its LR schedule
    optimizer_steps: dict[str, int] = field(default_factory=dict)
    bad_validations: int = 0  # validations in a row without improvement
    wandb_run_id: str = ""  # the W&B run this training logs to
    mlflow_run_id: str = ""  # the MLflow run this training logs to

    def epoch_of_step(self) -> int:
        """The 0-based epoch that the current step belongs to (metrics.csv's
        column): once an epoch's last batch is done, `epoch` counts it."""
        if self.batch_in_epoch == 0 and self.epoch > 0:
            return self.epoch - 1
        return self.epoch


class Meter:
    """The training metrics since the last log: a sum and a count per name, kept
    on the device (no host sync per step), and the time they took."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.samples = 0
        self.started = time.perf_counter()
        # seconds of evaluation and checkpoint writes since `started`: samples/s
        # (and MFU) count training time only
        self.untimed = 0.0

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0) + value.detach().float()
            self.counts[name] = self.counts.get(name, 0) + 1

    def means(self, world: Dist) -> dict[str, float]:
        """Each metric's mean over the values it was given, averaged over the ranks
        (a collective: every rank calls it at the same steps)."""
        names = sorted(self.sums)
        if not names:  # no optimizer was due since the last log
            return {}
        totals = torch.stack([self.sums[k] for k in names])
        if world.world_size > 1:
            dist.all_reduce(totals)
            totals /= world.world_size
        # .tolist(): the one host sync of the training loop, once per log
        return {k: v / self.counts[k] for k, v in zip(names, totals.tolist())}


@dataclass
class Run:
    """What the steps of one run share: set_up() builds it, train() hands it on."""

    cfg: Config
    world: Dist
    device: torch.device
    progress: Progress
    writes: bool  # checkpoints and logs are written (not under --fast-dev-run)
    command: str  # the command that repeats this run (command.txt)
    raw_model: torch.nn.Module  # plain weights: checkpoints and evaluation
    # what compute_loss gets: raw_model with its optimized sub-models wrapped
    model: torch.nn.Module
    optimizers: dict[str, Optim]
    amp_dtype: torch.dtype | None
    autocast: torch.autocast | nullcontext
    scalers: dict[str, torch.amp.GradScaler]
    ddp_parts: dict[str, DDP]  # for no_sync(); empty on one process
    train_set: Dataset
    val_loader: DataLoader
    val_batches: int
    test_set: Dataset
    # the length of training, in training steps
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    val_interval: int  # also validate every N steps inside an epoch (0: never)
    drop_last: bool  # the training loader drops an epoch's short last batch
    ema: EMA  # the average of the weights (of --ema-of's sub-model if given)
    state: TrainState
    resumed: bool = False
    stopping: bool = False  # the last step is done (or early stopping decided)
    csv: CsvLog | None = None  # metrics.csv, on the writing process
    tb: object | None = None  # a SummaryWriter, when tensorboard is installed
    wandb: "WandbLog | None" = None  # the W&B run, while it works
    mlflow: "MlflowLog | None" = None  # the MLflow run, while it works
    meter: Meter = field(default_factory=Meter)
    lrs: dict[str, float] = field(default_factory=dict)  # the latest LRs, logged
    layer_norms: dict[str, torch.Tensor] = field(default_factory=dict)  # to log
    window: list = field(default_factory=list)  # the micro-batches of this step
    started: float = 0.0  # when training started (for the ETA)
    start_step: int = 0


def main(argv=None) -> int:
    cfg = parse_config(argv)
    # a missing tracker package stops here, in one line, before anything is built
    if cfg.wandb_mode != "disabled" and importlib.util.find_spec("wandb") is None:
        sys.exit(
            "W&B: cannot import wandb; pip install wandb (or --wandb-mode disabled)"
        )
    if importlib.util.find_spec("mlflow") is None:
        sys.exit("MLflow: cannot import mlflow; pip install mlflow")
    world, device = setup_distributed(cfg)
    try:
        exit_code = train(cfg, world, device)
    except ContractError as exc:
        sys.exit(str(exc))  # a mistake in model.py or data.py: one line says it
    except RuntimeError as exc:
        # What gloo raises in a rank whose peer exited mid-collective ("Connection
        # closed by peer", "... reset by peer"): that rank printed why it stopped,
        # and a traceback here would only bury it.
        if world.world_size > 1 and "by peer" in str(exc):
            sys.exit(f"rank {world.rank}: stopped, another rank exited (see above)")
        raise
    # Only when every rank got through: destroying the group while another rank
    # waits in a collective can hang this one before its error is printed. After
    # an error, exiting closes the connections and the other ranks stop.
    if dist.is_initialized():
        dist.destroy_process_group()
    return exit_code


def train(cfg: Config, world: Dist, device: torch.device) -> int:
    """The outline of a run. Every rank runs every step; those marked "every rank"
    hold collectives, which wait until all ranks reach them."""
    run = set_up(cfg, world, device)
    resume(run)  # every rank
    open_logs(run)
    sanity_check(run)  # every rank

    run.model.train()
    run.started, run.start_step = time.perf_counter(), run.state.step
    run.meter = Meter()  # samples/s counts from here
    run.stopping = run.state.step >= run.total_steps
    while not run.stopping and run.state.epoch < cfg.max_epochs:
        exit_code = train_epoch(run)  # every rank
        if exit_code is not None:
            return exit_code  # a signal stopped it; last.pt resumes it
    finish(run)  # every rank
    return 0


def set_up(cfg: Config, world: Dist, device: torch.device) -> Run:
    """Everything before the first step: signals, seeds, data, model, optimizers,
    and the length of training."""
    progress = Progress(world.is_main)
    command = rerun_command(cfg, world)  # before --fast-dev-run changes cfg below
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    # SLURM sends this ahead of the time limit (#SBATCH --signal) or on preemption
    signal.signal(signal.SIGUSR1, request_requeue)
    if "SLURM_JOB_ID" in os.environ:
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        progress.print(
            f"slurm: job {os.environ['SLURM_JOB_ID']}, restart count {restarts}"
        )
    if device.type == "cuda":
        # TF32 keeps float32's range with a 10-bit mantissa: several times faster
        # matmuls, and training is rarely sensitive to it (--no-tf32 if yours is)
        torch.set_float32_matmul_precision("high" if cfg.tf32 else "highest")
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

    # Same seed on every rank for an identical model initialisation...
    seed_everything(cfg.seed)
    train_set, val_set, test_set = checked_datasets(build_datasets(cfg))
    raw_model = build_model(cfg).to(device)
    # ...then a different stream per rank, for dropout and augmentation.
    seed_everything(cfg.seed + world.rank)
    optimizers = check_optimizers(raw_model, build_optimizers(raw_model, cfg))
    # say=progress.print: a notice about the dtype appears once, on rank 0
    amp_dtype = pick_amp_dtype(cfg.amp_dtype, device, say=progress.print)
    if amp_dtype is not None:
        progress.print(f"amp: autocast to {str(amp_dtype).removeprefix('torch.')}")
    autocast = (
        torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    )
    # Loss scaling keeps small fp16 gradients from underflowing; bf16 needs none.
    # One scaler per optimizer: an overflow in one sub-model's gradients skips
    # that optimizer's step and lowers its scale only.
    scalers = {
        name: torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        for name in optimizers
    }
    averaged = getattr(raw_model, cfg.ema_of, None) if cfg.ema_of else raw_model
    if not isinstance(averaged, torch.nn.Module):
        raise ContractError(f"--ema-of {cfg.ema_of}: the model has no such sub-model")
    # of the plain module, not a wrapper: the same keys as "model" in checkpoints
    ema = EMA(averaged, cfg, device)

    if cfg.overfit_batches:
        # the same few batches every epoch, for training and validation
        # (N global batches: every rank gets N batches of its own)
        n_samples = cfg.overfit_batches * cfg.batch_size * world.world_size
        train_set = val_set = Subset(train_set, range(min(len(train_set), n_samples)))
    elif cfg.fast_dev_run:
        cfg.limit_train_batches = cfg.limit_val_batches = cfg.limit_test_batches = 2
        cfg.max_epochs, cfg.sanity_val_steps = 1, 0

    # compute_loss gets a copy of the model whose optimized sub-models are wrapped
    # (parameters shared); raw_model stays plain, for checkpoints and evaluation
    parts = {name: getattr(raw_model, name) for name in optimizers}
    # One DistributedDataParallel per optimized sub-model, not one around the whole
    # model: a discriminator step then all-reduces the discriminator's gradients
    # only, and the generator's forward inside it leaves no DDP waiting for
    # gradients that never come (the "unused parameters" error). While one
    # sub-model trains, syncing_only() switches the others' DDP off (no_sync).
    ddp_parts = {}
    if world.world_size > 1:
        ddp_parts = {
            name: DDP(
                part,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters,
                **buffer_sync(part),
            )
            for name, part in parts.items()
        }
        parts = dict(ddp_parts)
    # checkpoints always come from raw_model: no "_orig_mod." prefixes
    parts = {
        name: torch.compile(part, mode=cfg.compile_mode) for name, part in parts.items()
    }
    model = with_parts(raw_model, parts)

    # Only full batches, one shape for torch.compile: the training loader drops
    # an epoch's short last batch (unless there is no full batch: then the one
    # short batch is the only shape)
    per_process = len(train_set) // world.world_size
    drop_last = per_process >= cfg.batch_size
    full_batches = per_process // cfg.batch_size if drop_last else min(1, per_process)
    batches_per_epoch = fraction_or_count(cfg.limit_train_batches, full_batches)
    # the last window of an epoch may be shorter than accumulate_steps
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.accumulate_steps)
    total_steps = cfg.max_epochs * steps_per_epoch
    if cfg.max_steps > 0:
        total_steps = min(total_steps, cfg.max_steps)
    for o in optimizers.values():
        o.total_steps = max(1, total_steps // o.every)
    if cfg.val_check_interval > 1:
        val_interval = int(cfg.val_check_interval)
    elif cfg.val_check_interval < 1:
        val_interval = max(1, round(cfg.val_check_interval * steps_per_epoch))
    else:
        val_interval = 0  # only at the end of epochs
    val_loader = make_loader(val_set, cfg, world, device, shuffle=False)
    return Run(
        cfg=cfg,
        world=world,
        device=device,
        progress=progress,
        writes=world.is_main and not cfg.fast_dev_run,
        command=command,
        raw_model=raw_model,
        model=model,
        optimizers=optimizers,
        amp_dtype=amp_dtype,
        autocast=autocast,
        scalers=scalers,
        ddp_parts=ddp_parts,
        train_set=train_set,
        val_loader=val_loader,
        val_batches=fraction_or_count(cfg.limit_val_batches, len(val_loader)),
        test_set=test_set,
        batches_per_epoch=batches_per_epoch,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        val_interval=val_interval,
        drop_last=drop_last,
        ema=ema,
        state=TrainState(optimizer_steps=dict.fromkeys(optimizers, 0)),
    )


def resume(run: Run) -> None:
    """Continue from --resume's checkpoint ('auto': the newest valid one in
    run_dir): weights, optimizers, loss scaling, progress and RNG state."""
    cfg = run.cfg
    ckpt_dir = Path(cfg.run_dir) / "checkpoints"
    resume_path = Path(cfg.resume) if cfg.resume not in ("", "auto") else None
    if cfg.resume == "auto":
        # rank 0 looks, and every rank resumes from the file it named (a rank
        # looking for itself could find another one while rank 0 still writes)
        resume_path = find_resumable(Path(cfg.run_dir)) if run.world.is_main else None
        if run.world.world_size > 1:
            # every rank
            resume_path = broadcast_from_rank0(resume_path, run.world, run.device)
        if resume_path is None:
            run.progress.print(
                f"resume: no checkpoint in {ckpt_dir}; starting from scratch"
            )
    if resume_path is None:
        return
    checkpoint = upgrade_checkpoint(load_resumable(resume_path), resume_path)
    if "optimizers" not in checkpoint:
        sys.exit(
            f"--resume {resume_path}: saved with one optimizer, whose state does not "
            "divide into --multi-optim's: begin a new --run-dir (load_model() "
            "rebuilds its weights)"
        )
    notes = []  # what this run has that the checkpoint lacks, and the reverse
    run.raw_model.load_state_dict(checkpoint["model"])
    for name, o in run.optimizers.items():
        # its moments, its LRs and its initial_lr (the schedule's peak)
        o.optimizer.load_state_dict(checkpoint["optimizers"][name])
    if "scalers" in checkpoint:
        for name, scaler in run.scalers.items():
            scaler.load_state_dict(checkpoint["scalers"][name])
    else:
        notes.append("new loss scalers (--amp is new to this run)")
    if "ema" in checkpoint:
        run.ema.load_state_dict(checkpoint["ema"])
    else:
        # a run that --ema joined late: the average begins at the loaded weights
        run.ema.load_state_dict(run.ema.module.state_dict())
        notes.append("the average, of the current weights (--ema is new to this run)")
    # progress: a field new to TrainState starts at its default (a count at
    # zero, a new tracker run); one it no longer has is dropped
    fields = [f.name for f in dataclasses.fields(TrainState)]
    saved = checkpoint["train_state"]
    started = [name for name in fields if name not in saved]
    if started:
        defaults = TrainState()
        notes += [f"{name} {getattr(defaults, name)!r}" for name in started]
    run.state = TrainState(**{k: v for k, v in saved.items() if k in fields})
    dropped = [name for name in saved if name not in fields]
    dropped += [part for part in checkpoint if part not in CHECKPOINT_PARTS]
    if notes:
        run.progress.print(
            f"resume: new to this run, from the start: {', '.join(notes)}"
        )
    if dropped:
        run.progress.print(
            f"resume: dropped, of features this train.py lacks: {', '.join(dropped)}"
        )
    run.resumed = True
    world = run.world
    if len(checkpoint["rng"]) == world.world_size:
        set_rng_state(checkpoint["rng"][world.rank], run.device)
    else:
        run.progress.print(
            f"resume: saved by {len(checkpoint['rng'])} ranks, running "
            f"{world.world_size}: RNG streams start afresh"
        )
    state = run.state
    run.progress.print(
        f"resume: {resume_path} at step {state.step} "
        f"(epoch {state.epoch}, batch {state.batch_in_epoch})"
    )


def open_logs(run: Run) -> None:
    """config.json, command.txt, a snapshot of the code, metrics.csv (continued
    after the resumed step), TensorBoard, W&B, MLflow, and what is about to train."""
    cfg, progress = run.cfg, run.progress
    run_dir = Path(cfg.run_dir)
    if run.writes:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(
            json.dumps(dataclasses.asdict(cfg), indent=2) + "\n"
        )
        (run_dir / "command.txt").write_text(run.command + "\n")
        progress.print(snapshot_code(run_dir))
        resumed_step = run.state.step if run.resumed else None
        run.csv = CsvLog(run_dir / "metrics.csv", resumed_step)
        run.tb = open_tensorboard(run_dir / "tensorboard", resumed_step or 0)
        run.wandb = open_wandb(run, run.csv.dropped)
        run.mlflow = open_mlflow(run, run.csv.dropped)
    progress.print(f"rerun with: {run.command}")
    progress.print(model_summary(run.raw_model))
    world = run.world
    global_batch = cfg.batch_size * world.world_size * cfg.accumulate_steps
    progress.print(
        f"world size {world.world_size} on {run.device}; global batch {global_batch}; "
        f"{run.steps_per_epoch} training steps per epoch, {run.total_steps} in all"
    )
    progress.print(
        "optimizers: "
        + ", ".join(
            f"{o.name} every {o.every} step(s), {o.total_steps} steps"
            for o in run.optimizers.values()
        )
    )


def log_row(run: Run, row: dict) -> None:
    """One row of metrics.csv, sent to TensorBoard, W&B, MLflow too (if this process
    writes): the one place every logged number passes."""
    if run.csv is not None:
        run.csv.log(row)
    if run.tb is not None:
        for name, value in row.items():
            if isinstance(value, float):
                run.tb.add_scalar(f"{row['split']}/{name}", value, row["step"])
    if run.wandb is not None:
        run.wandb.log(row)
    if run.mlflow is not None:
        run.mlflow.log(row)


def sanity_check(run: Run) -> None:
    """A few validation batches before training (one when --sanity-val-steps is 0).

    Catches evaluation bugs, and a --monitor-metric that names nothing, before
    hours of training. Evaluation draws no random numbers, so the training RNG
    stream is untouched.
    """
    cfg = run.cfg
    sanity = evaluate_with_ema(run, "val", run.val_loader, cfg.sanity_val_steps or 1)
    if cfg.sanity_val_steps and not run.resumed:
        run.progress.print(
            "sanity check | " + " | ".join(f"{k} {v:.4f}" for k, v in sanity.items())
        )
    if cfg.monitor_metric not in sanity:
        # a bad option, like those parse_config refuses: one line and status 2
        print(
            f"--monitor-metric {cfg.monitor_metric}: validation reports "
            f"{', '.join(sorted(sanity))}",
            file=sys.stderr,
        )
        sys.exit(2)


def train_epoch(run: Run) -> int | None:
    """The rest of the current epoch, then its validation and last.pt.

    Returns an exit code when a signal stopped the run (after saving last.pt).
    """
    cfg, state = run.cfg, run.state
    epoch = state.epoch
    if hasattr(run.train_set, "set_epoch"):
        # for augmentation drawn from a generator seeded by (seed, epoch,
        # index): a resumed run then sees the same samples (README)
        run.train_set.set_epoch(epoch)
    loader = make_loader(
        run.train_set,
        cfg,
        run.world,
        run.device,
        shuffle=not cfg.overfit_batches,
        epoch=epoch,
        skip_batches=state.batch_in_epoch,
        # a short last batch would make torch.compile compile a second graph
        drop_last=run.drop_last,
    )
    for i, batch in enumerate(loader, start=state.batch_in_epoch):
        if i >= run.batches_per_epoch:
            break
        batch = move_to(batch, run.device)
        if state.step == 0 and i == 0 and run.world.is_main:
            print_module_shapes(run.raw_model, batch, list(run.optimizers))
        if not train_step(run, i, batch):
            continue  # inside a window of micro-batches
        if state.step % cfg.ema_every == 0:
            # update n is a function of the step (a resumed run continues the
            # same warm-up); every rank has the same weights, hence the same
            # average, with no communication
            run.ema.update(state.step // cfg.ema_every - 1)
        if state.step % cfg.log_every == 0 or run.stopping:
            log_training(run, epoch)  # every rank

        # validation inside the epoch, periodic checkpoints, stop requests
        end_of_epoch = state.batch_in_epoch >= run.batches_per_epoch
        t0 = time.perf_counter()
        if run.val_interval and state.step % run.val_interval == 0 and not end_of_epoch:
            validate(run)  # every rank
        if cfg.ckpt_every and state.step % cfg.ckpt_every == 0:
            save_checkpoint(run, f"step_{state.step:08d}")  # every rank
            if run.writes:
                prune_checkpoints(Path(cfg.run_dir) / "checkpoints", cfg.keep_last)
        run.meter.untimed += time.perf_counter() - t0
        requests = agreed_requests(run, end_of_epoch)  # every rank
        if any(requests) and not run.stopping:
            return stop_early(run, requeue=requests[1])  # every rank
        if run.stopping:
            break
    end_epoch(run, epoch)  # every rank
    return None


def train_step(run: Run, i: int, batch) -> bool:
    """One training step: every optimizer due at it, one after the other in the
    order of build_optimizers. A later one (the generator) sees the update an
    earlier one (the discriminator) made at this same step.

    With accumulation a step is a window of micro-batches: batch i of the epoch
    joins the window, and the step runs when the window is complete. Returns
    whether it ran.
    """
    cfg, state = run.cfg, run.state
    # the micro-batches of a window are kept until it is complete: each
    # optimizer due at this step then runs over all of them in turn
    if i % cfg.accumulate_steps == 0:
        run.window = []
    run.window.append(batch)
    run.meter.samples += batch_len(batch)
    state.batch_in_epoch = i + 1
    # the last window of an epoch may be shorter than accumulate_steps
    if (
        len(run.window) < cfg.accumulate_steps
        and state.batch_in_epoch < run.batches_per_epoch
    ):
        return False
    for o in run.optimizers.values():
        if (state.step + 1) % o.every:
            continue  # not due: its parameters and its state stay as they are
        for k, micro in enumerate(run.window):
            # all-reduce on the last micro-batch only: no_sync covers the
            # forward and the backward of the others
            with syncing_only(run.ddp_parts, o.name, sync=k + 1 == len(run.window)):
                forward_backward(run, micro, o, len(run.window))
        optimizer_step(run, o)
    state.step += 1
    run.stopping = state.step >= run.total_steps
    return True


def forward_backward(run: Run, batch, o: Optim, window_size: int) -> None:
    """The loss of optimizer `o` on one micro-batch, backpropagated into its
    parameters."""
    with run.autocast:
        result = compute_loss(run.model, batch, o.name)
    loss, metrics = checked_loss(result, f"loss_{o.name}")
    # the mean over the window actually used, also for a short last one
    loss = loss / window_size
    # into this optimizer's parameters only: the generator's loss flows through
    # the discriminator, but leaves its gradients alone
    run.scalers[o.name].scale(loss).backward(inputs=o.params)
    run.meter.add(metrics)


def optimizer_step(run: Run, o: Optim) -> None:
    """Optimizer `o` applies its gradients (a natural place for gradient surgery):
    its schedule runs on its own step counter, scaled to its own LR."""
    cfg, state = run.cfg, run.state
    lr = lr_at(state.optimizer_steps[o.name], cfg, o.total_steps)
    for group in o.optimizer.param_groups:
        group["lr"] = group["initial_lr"] * lr / cfg.lr
    run.lrs[f"lr_{o.name}"] = o.optimizer.param_groups[0]["lr"]
    # unscale first so that clipping and norms see the true gradients
    run.scalers[o.name].unscale_(o.optimizer)
    # before clipping, which would spread one layer's NaN to all
    # fp16: overflowed gradients are GradScaler's business (it skips the step and
    # lowers the scale); a NaN loss still stops at the next log
    bad = [] if run.scalers[o.name].is_enabled() else nonfinite_grads(run.raw_model)
    if bad:
        run.progress.print(
            f"step {state.step} ({o.name}): non-finite gradients in {', '.join(bad)}"
        )
        if cfg.on_nonfinite == "stop":
            raise FloatingPointError(
                f"non-finite gradients in {', '.join(bad)} "
                f"at step {state.step} (--on-nonfinite stop)"
            )
        # no gradients at all: the step below leaves every parameter as it is
        o.optimizer.zero_grad(set_to_none=True)
    if (state.step + 1) % cfg.log_every == 0:
        run.layer_norms.update(layer_grad_norms(run.raw_model))
    # the pre-clip norm, logged; clipping does nothing useful to scaled gradients,
    # hence after unscale_
    if cfg.clip_value > 0:
        grads = [p.grad for p in o.params if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads)
        # by hand: clip_grad_value_ fails when no parameter has a gradient
        for grad in grads:
            grad.clamp_(-cfg.clip_value, cfg.clip_value)
    else:
        grad_norm = torch.nn.utils.clip_grad_norm_(
            o.params, cfg.clip_norm if cfg.clip_norm > 0 else math.inf
        )
    # .to(device): a CPU zero when a skipped step left no gradients
    run.meter.add({f"grad_norm_{o.name}": grad_norm.to(run.device, torch.float32)})
    run.scalers[o.name].step(o.optimizer)  # skips the step if fp16 gradients overflowed
    run.scalers[o.name].update()
    o.optimizer.zero_grad(set_to_none=True)
    state.optimizer_steps[o.name] += 1


def log_training(run: Run, epoch: int) -> None:
    """The progress line and a row of metrics.csv: the training metrics since the
    last log, averaged over the ranks."""
    state, meter = run.state, run.meter
    means = meter.means(run.world)  # every rank
    # fp16: an overflow makes the gradient norm inf; GradScaler skips that step and
    # lowers the scale (its job, no reason to stop), so only the other metrics
    # must be finite then
    fp16 = run.amp_dtype == torch.float16
    checked = {
        k: v for k, v in means.items() if not (fp16 and k.startswith("grad_norm"))
    }
    if not all(math.isfinite(v) for v in checked.values()):
        # every rank sees the same reduced values, so all stop together
        raise FloatingPointError(
            f"non-finite training metrics at step {state.step}: {means}"
        )
    elapsed = time.perf_counter() - meter.started - meter.untimed
    samples_per_s = meter.samples * run.world.world_size / elapsed
    row = {
        "step": state.step,
        "epoch": epoch,
        "split": "train",
        **means,
        **run.lrs,
        "samples_per_s": samples_per_s,
    }
    spent = time.perf_counter() - run.started
    eta = spent / (state.step - run.start_step) * (run.total_steps - state.step)
    # in order of importance: a narrow terminal shows the first ones
    fields = [
        f"step {state.step}/{run.total_steps}",
        f"epoch {epoch} {state.batch_in_epoch / run.batches_per_epoch:4.0%}",
        f"eta {format_duration(eta)}",
    ]
    fields += [f"{k} {v:.4f}" for k, v in means.items()]
    fields += [f"{k} {v:.2e}" for k, v in run.lrs.items()]
    fields.append(f"{samples_per_s:,.0f} samples/s")
    tokens_per_sample = getattr(run.raw_model, "tokens_per_sample", None)
    if tokens_per_sample is not None:
        # a model of sequences can tell its tokens per sample (the demo does)
        row["tokens_per_s"] = samples_per_s * tokens_per_sample()
        fields.append(f"{row['tokens_per_s']:,.0f} tokens/s")
    flops_per_sample = getattr(run.raw_model, "flops_per_sample", None)
    dtype = run.amp_dtype or torch.float32
    peak_flops = gpu_peak_flops(run.device, dtype, run.cfg.tf32)
    if flops_per_sample is not None and peak_flops:
        mfu = flops_per_sample() * samples_per_s / run.world.world_size / peak_flops
        fields.append(f"mfu {100 * mfu:.1f}%")
        row["mfu"] = mfu
    if run.device.type == "cuda":
        row["peak_mem_gb"] = torch.cuda.max_memory_allocated(run.device) / 2**30
        fields.append(f"mem {row['peak_mem_gb']:.2f} GB")
        torch.cuda.reset_peak_memory_stats(run.device)
    fields.append(f"elapsed {format_duration(spent)}")
    run.progress.update(fields)
    if run.layer_norms:
        norms = {name: norm.item() for name, norm in run.layer_norms.items()}
        run.progress.print(
            "grad norms: " + ", ".join(f"{k} {v:.3g}" for k, v in norms.items())
        )
        row.update({f"grad_norm/{k}": v for k, v in norms.items()})
        run.layer_norms = {}
    log_row(run, row)
    run.meter = Meter()


def agreed_requests(run: Run, end_of_epoch: bool) -> list[bool]:
    """The stop and requeue requests that all ranks agree on (a collective).

    A signal may reach the ranks at different steps: they agree on it at steps
    that every rank reaches together, each log_every-th and an epoch's last, not
    at every step (reading the agreement back waits for the GPU). A stop waits
    up to log_every steps for it.
    """
    requests = [Requests.stop, Requests.requeue]
    if run.world.world_size == 1:
        return requests
    if run.state.step % run.cfg.log_every and not end_of_epoch:
        return [False] * len(requests)  # until the ranks next agree
    agreed = torch.tensor(requests, dtype=torch.int32, device=run.device)
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
    return [bool(request) for request in agreed.tolist()]


def stop_early(run: Run, requeue: bool) -> int:
    """Save last.pt after a stop signal; requeue the job after SLURM's warning."""
    save_checkpoint(run, "last")  # every rank
    last = Path(run.cfg.run_dir) / "checkpoints" / "last.pt"
    run.progress.print(f"stopped at step {run.state.step}: saved {last}")
    if requeue:
        if run.world.is_main:
            requeue_slurm_job()
        return 0
    run.progress.print(
        f"resume with: python train.py --resume auto --run-dir {run.cfg.run_dir}"
    )
    return 130


def end_epoch(run: Run, epoch: int) -> None:
    """After the epoch's last step (or the run's): validation, early
    stopping and last.pt."""
    cfg, state = run.cfg, run.state
    t0 = time.perf_counter()
    if state.batch_in_epoch >= run.batches_per_epoch:
        state.epoch, state.batch_in_epoch = epoch + 1, 0
    if (epoch + 1) % cfg.val_every_epochs == 0 or run.stopping:
        validate(run)  # every rank
        if state.bad_validations >= cfg.patience and state.epoch >= cfg.min_epochs:
            run.progress.print(
                f"early stopping: {cfg.monitor_metric} did not improve "
                f"for {cfg.patience} validations"
            )
            run.stopping = True
    save_checkpoint(run, "last")  # every rank
    run.meter.untimed += time.perf_counter() - t0


@torch.no_grad()
def evaluate(run: Run, split: str, loader: DataLoader, max_batches: int) -> dict:
    """The mean of each metric over the samples seen by all ranks, in eval mode,
    named after the split (val_loss).

    Metrics are summed as value x batch size with the sample count, then divided:
    a mean of per-rank means would weight a rank's short last batch wrongly.
    """
    model, device = run.raw_model, run.device
    sync_buffers(model, run.world)  # every rank
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = torch.zeros((), device=device)
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        batch = move_to(batch, device)
        n = batch_len(batch)
        # the metrics of every optimizer's loss (their names must differ)
        metrics = {}
        for name in run.optimizers:
            with run.autocast:
                result = compute_loss(model, batch, name)
            metrics.update(checked_loss(result, f"loss_{name}")[1])
        # their sum: the one loss that every model with these optimizers has
        metrics["loss"] = sum(metrics[f"loss_{name}"] for name in run.optimizers)
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0) + value.detach().float() * n
        count += n
    model.train(was_training)
    names = sorted(sums)
    totals = torch.stack([sums[k] for k in names] + [count])
    if run.world.world_size > 1:
        # every rank reaches this collective: evaluation has no early exits
        dist.all_reduce(totals)
    *totals, seen = totals.tolist()
    return {f"{split}_{k}": total / max(seen, 1) for k, total in zip(names, totals)}


def validate(run: Run) -> None:
    """Validate; log it, keep best.pt and count validations without improvement.

    Every rank calls it: evaluation all-reduces, and saving best.pt gathers.
    """
    cfg, state = run.cfg, run.state
    metrics = evaluate_with_ema(run, "val", run.val_loader, run.val_batches)
    run.progress.print(
        f"step {state.step} | validation | "
        + " | ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    )
    epoch = state.epoch_of_step()
    log_row(run, {"step": state.step, "epoch": epoch, "split": "val", **metrics})
    value = metrics[cfg.monitor_metric]
    sign = 1 if cfg.monitor_mode == "max" else -1
    if state.best is None or sign * (value - state.best) > cfg.min_delta:
        state.bad_validations = 0
    else:
        state.bad_validations += 1
    if state.best is None or sign * (value - state.best) > 0:
        state.best = value
        save_checkpoint(run, "best")  # every rank, though only one writes


def save_checkpoint(run: Run, name: str) -> None:
    """checkpoints/<name>.pt: every rank calls it (all ranks' RNG states are
    gathered, a collective), rank 0 writes."""
    rng = [rng_state(run.device)]
    if run.world.world_size > 1:
        rng = gather_from_ranks(rng[0], run.world, run.device)
    if not run.writes:
        return
    checkpoint = {
        "model": run.raw_model.state_dict(),
        # each optimizer's step counter (its schedule's position) is in train_state
        "optimizers": {
            o.name: o.optimizer.state_dict() for o in run.optimizers.values()
        },
        "scalers": {key: scaler.state_dict() for key, scaler in run.scalers.items()},
        "format": CHECKPOINT_FORMAT,
        "train_state": dataclasses.asdict(run.state),
        "rng": rng,
        "ema": run.ema.state_dict(),
        "config": dataclasses.asdict(run.cfg),
    }
    atomic_save(checkpoint, Path(run.cfg.run_dir) / "checkpoints" / f"{name}.pt")


def finish(run: Run) -> None:
    """Validate and test the best checkpoint; write summary.json."""
    cfg, state = run.cfg, run.state
    best_path = Path(cfg.run_dir) / "checkpoints" / "best.pt"
    # rank 0 wrote best.pt and reads it: on other nodes the run directory may be
    # a stale copy, or not shared at all; the other ranks get its weights
    if run.world.is_main and best_path.exists() and not cfg.fast_dev_run:
        best = load_checkpoint(best_path)
        run.raw_model.load_state_dict(best["model"])
        if "ema" in best:  # not in a best.pt of before --ema joined the run
            run.ema.load_state_dict(best["ema"])
    if run.world.world_size > 1:
        for tensor in run.raw_model.state_dict().values():
            dist.broadcast(tensor, src=0)  # every rank, in the same order
        # the average as one object from the CPU: it may live on the CPU
        # (--ema-on-cpu), which nccl cannot broadcast from
        average = {k: v.cpu() for k, v in run.ema.state_dict().items()}
        average = broadcast_from_rank0(average, run.world, run.device)  # every rank
        run.ema.load_state_dict(average)
    val_metrics = evaluate_with_ema(run, "val", run.val_loader, run.val_batches)
    test_loader = make_loader(run.test_set, cfg, run.world, run.device, shuffle=False)
    test_batches = fraction_or_count(cfg.limit_test_batches, len(test_loader))
    test_metrics = evaluate_with_ema(run, "test", test_loader, test_batches)
    final = {**val_metrics, **test_metrics}
    run.progress.print(
        "final (best checkpoint) | "
        + " | ".join(f"{k} {v:.4f}" for k, v in final.items())
    )
    if run.writes:
        epoch = state.epoch_of_step()
        log_row(
            run, {"step": state.step, "epoch": epoch, "split": "test", **test_metrics}
        )
        summary = {
            "step": state.step,
            "epoch": state.epoch,
            "best": state.best,
            **val_metrics,
            **test_metrics,
        }
        summary_path = Path(cfg.run_dir) / "summary.json"
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
        if run.tb is not None:
            run.tb.close()
        if run.wandb is not None:
            run.wandb.finish(Path(cfg.run_dir), summary)
        if run.mlflow is not None:
            run.mlflow.finish(Path(cfg.run_dir), summary)


def evaluate_with_ema(
    run: Run, split: str, loader: DataLoader, max_batches: int
) -> dict:
    """evaluate() by --ema-eval: 'both', the trained and the averaged weights side
    by side (val_loss, val_ema_loss); 'ema', the averaged ones only (val_loss)."""
    both = run.cfg.ema_eval == "both"
    with run.ema.swapped_in():
        averaged = evaluate(run, f"{split}_ema" if both else split, loader, max_batches)
    if not both:
        return averaged
    return {**evaluate(run, split, loader, max_batches), **averaged}


def open_tensorboard(log_dir: Path, purge_step: int):
    """A SummaryWriter, or None with a message when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        print(
            f"tensorboard: cannot import it ({exc}); "
            "pip install tensorboard; logging to metrics.csv only"
        )
        return None
    # purge_step drops events a crashed run logged after its last checkpoint
    return SummaryWriter(str(log_dir), purge_step=purge_step or None)


class Tracker:
    """What the experiment trackers share. They log on the process that writes
    metrics.csv and skip the rows they got before a resume; once a call fails
    (the server gone), one warning, and the tracker is switched off: training
    goes on without it."""

    name = "tracker"  # as the warning says it

    def __init__(self, run: Run, logged: set[tuple[int, str]]):
        self.progress = run.progress
        self.logged = logged  # rows the tracker has from before a resume: not again
        self.failed = False

    def call(self, method, *args, **kwargs) -> None:
        """method(*args, **kwargs), unless the tracker failed before; a failure
        warns once."""
        if self.failed:
            return
        try:
            method(*args, **kwargs)
        except Exception as exc:  # whatever a tracker raises must not stop training
            self.failed = True
            self.progress.print(
                f"{self.name}: {type(exc).__name__}: {exc}; {self.name} switched "
                "off, training goes on (metrics.csv has every row)"
            )


class WandbLog(Tracker):
    """The W&B run of this training (on the process that writes metrics.csv).

    A resumed training appends to the W&B run it began (its id is in every
    checkpoint and in RUN_DIR/wandb_run_id).
    """

    name = "W&B"

    def __init__(self, run: Run, logged: set[tuple[int, str]]):
        # imported here: a project run with --wandb-mode disabled never loads it
        import wandb

        cfg, run_dir = run.cfg, Path(run.cfg.run_dir)
        super().__init__(run, logged)
        self.run = wandb.init(
            project=cfg.wandb_project,
            name=cfg.wandb_run_name or run_dir.resolve().name,
            tags=[tag.strip() for tag in cfg.wandb_tags.split(",") if tag.strip()],
            config=dataclasses.asdict(cfg),
            dir=run_dir,
            mode=cfg.wandb_mode,
            id=run.state.wandb_run_id or None,
            resume="allow" if run.state.wandb_run_id else None,
        )
        run.state.wandb_run_id = self.run.id
        (run_dir / "wandb_run_id").write_text(self.run.id + "\n")
        # the optimizer step is the x axis, not W&B's count of log calls: a
        # validation row shares its step with a training row
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        # the code snapshot and the options, as files of the W&B run
        self.save_files(
            run_dir, ("config.json", "command.txt", "git_commit.txt", "git_diff.patch")
        )

    def save_files(self, run_dir: Path, names: tuple[str, ...]) -> None:
        """Copies of the run's files among the W&B run's files (copies: a resume
        rewrites config.json)."""
        for name in names:
            if (run_dir / name).is_file():
                self.call(shutil.copy, run_dir / name, Path(self.run.dir) / name)

    def log(self, row: dict) -> None:
        if (row["step"], row["split"]) in self.logged:
            return
        values = {
            f"{row['split']}/{k}": v for k, v in row.items() if isinstance(v, float)
        }
        self.call(self.run.log, {"step": row["step"], **values})

    def finish(self, run_dir: Path, summary: dict) -> None:
        self.call(
            self.run.summary.update, {f"summary/{k}": v for k, v in summary.items()}
        )
        self.save_files(run_dir, ("summary.json",))
        self.call(self.run.finish)


def open_wandb(run: Run, logged: set[tuple[int, str]]) -> WandbLog | None:
    """This training's W&B run, or None (and one line) if W&B cannot start."""
    if run.cfg.wandb_mode == "disabled":
        return None
    try:
        return WandbLog(run, logged)
    except Exception as exc:  # no network, no login: train without W&B
        run.progress.print(
            f"W&B: cannot start a run ({type(exc).__name__}: {exc}); "
            "training without W&B (metrics.csv has every row)"
        )
        return None


class MlflowLog(Tracker):
    """The MLflow run of this training (on the process that writes metrics.csv).

    A resumed training appends to the MLflow run it began (its id is in every
    checkpoint and in RUN_DIR/mlflow_run_id).
    """

    name = "MLflow"

    def __init__(self, run: Run, logged: set[tuple[int, str]]):
        # MLflow retries a failed request for minutes by default, which would hold
        # training up at every log once the server is gone (yours win if set)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        # imported here: loading mlflow takes seconds, paid by this process only
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        cfg, run_dir = run.cfg, Path(run.cfg.run_dir)
        super().__init__(run, logged)
        self.metric = Metric
        uri, artifacts = cfg.mlflow_uri, None
        if not uri:
            # a store in the run directory: works with no server
            store = (run_dir / "mlruns").resolve()
            store.mkdir(exist_ok=True)
            uri, artifacts = f"sqlite:///{store}/mlflow.db", (store / "artifacts")
        self.client = MlflowClient(tracking_uri=uri)
        if run.state.mlflow_run_id:
            self.run_id = run.state.mlflow_run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            name = cfg.mlflow_experiment
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                location = artifacts.as_uri() if artifacts else None
                experiment_id = self.client.create_experiment(name, location)
            else:
                experiment_id = experiment.experiment_id
            tags = {}
            for tag in cfg.mlflow_tags.split(","):
                key, _, value = tag.partition("=")
                if key.strip():
                    tags[key.strip()] = value.strip()
            self.run_id = self.client.create_run(
                experiment_id,
                run_name=cfg.mlflow_run_name or run_dir.resolve().name,
                tags=tags,
            ).info.run_id
            # The options, as the run's parameters. MLflow keeps a parameter's
            # first value: a resume leaves them, and its config.json (an
            # artifact) holds the options it changed.
            params = [Param(k, str(v)) for k, v in dataclasses.asdict(cfg).items()]
            for start in range(0, len(params), 100):  # at most 100 in one request
                self.client.log_batch(self.run_id, params=params[start : start + 100])
        run.state.mlflow_run_id = self.run_id
        (run_dir / "mlflow_run_id").write_text(self.run_id + "\n")
        # the code snapshot and the options, as the run's artifacts
        self.log_files(
            run_dir, ("config.json", "command.txt", "git_commit.txt", "git_diff.patch")
        )

    def log_files(self, run_dir: Path, names: tuple[str, ...]) -> None:
        for name in names:
            if (run_dir / name).is_file():
                self.call(self.client.log_artifact, self.run_id, str(run_dir / name))

    def log(self, row: dict) -> None:
        if (row["step"], row["split"]) in self.logged:
            return
        now = int(time.time() * 1000)
        metrics = [
            self.metric(f"{row['split']}/{k}", v, now, row["step"])
            for k, v in row.items()
            if isinstance(v, float)
        ]
        self.call(self.client.log_batch, self.run_id, metrics=metrics)

    def finish(self, run_dir: Path, summary: dict) -> None:
        now = int(time.time() * 1000)
        metrics = [
            self.metric(f"summary/{k}", v, now, summary["step"])
            for k, v in summary.items()
            if isinstance(v, float)
        ]
        self.call(self.client.log_batch, self.run_id, metrics=metrics)
        self.log_files(run_dir, ("summary.json",))
        self.call(self.client.set_terminated, self.run_id, "FINISHED")


def open_mlflow(run: Run, logged: set[tuple[int, str]]) -> MlflowLog | None:
    """This training's MLflow run, or None (and one line) if MLflow cannot start."""
    try:
        return MlflowLog(run, logged)
    except Exception as exc:  # no server at --mlflow-uri: train without MLflow
        run.progress.print(
            f"MLflow: cannot start a run ({type(exc).__name__}: {exc}); "
            "training without MLflow (metrics.csv has every row)"
        )
        return None


if __name__ == "__main__":
    sys.exit(main())
