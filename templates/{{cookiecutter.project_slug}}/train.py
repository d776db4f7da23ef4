{% set ddp = cookiecutter.ddp == "y" %}
{% set fsdp = cookiecutter.fsdp == "y" %}
{% set ema = cookiecutter.ema == "y" %}
{% set amp = cookiecutter.amp == "y" %}
{% set clip = cookiecutter.clip == "y" %}
{% set accumulate = cookiecutter.accumulate == "y" %}
{% set early_stopping = cookiecutter.early_stopping == "y" %}
{% set compile = cookiecutter.compile == "y" %}
{% set slurm = cookiecutter.slurm == "y" %}
{% set tensorboard = cookiecutter.tensorboard == "y" %}
{% set wandb = cookiecutter.wandb == "y" %}
{% set mlflow = cookiecutter.mlflow == "y" %}
{% set debug = cookiecutter.debug == "y" %}
{% set multi_optim = cookiecutter.multi_optim == "y" %}
{# several processes: --ddp or --fsdp #}
{% set distributed = ddp or fsdp %}
{# mixed precision by autocast and loss scaling; --fsdp casts by its own policy #}
{% set autocast = amp and not fsdp %}
{# what the resumable checkpoints are: files, or (--fsdp) directories of shards #}
{% set ext = "" if fsdp else ".pt" %}
{# --fsdp's option; not with torch.compile, whose recomputed forward differs
   from the compiled one (torch 2.13 stops with a CheckpointError) #}
{% set activation_checkpointing = fsdp and not compile %}
{# what --max-steps, --ckpt-every, --log-every ... count: with several optimizers,
   a training step steps every optimizer due at it #}
{% set steps = "training steps" if multi_optim else "optimizer steps" %}
{# where logged rows go besides metrics.csv, for docstrings #}
{% set loggers = [] %}
{% if tensorboard %}{% set _ = loggers.append("TensorBoard") %}{% endif %}
{% if wandb %}{% set _ = loggers.append("W&B") %}{% endif %}
{% if mlflow %}{% set _ = loggers.append("MLflow") %}{% endif %}
{% if amp %}{% import "amp/train.py.jinja" as amp_code with context %}{% endif %}
{% if clip %}{% import "clip/train.py.jinja" as clip_code with context %}{% endif %}
{% if debug %}{% import "debug/train.py.jinja" as debug_code with context %}{% endif %}
{% if accumulate %}{% import "accumulate/train.py.jinja" as accumulate_code with context %}{% endif %}
{% if early_stopping %}{% import "early-stopping/train.py.jinja" as early_stopping_code with context %}{% endif %}
{% if compile %}{% import "compile/train.py.jinja" as compile_code with context %}{% endif %}
{% if slurm %}{% import "slurm/train.py.jinja" as slurm_code with context %}{% endif %}
{% if tensorboard %}{% import "tensorboard/train.py.jinja" as tensorboard_code with context %}{% endif %}
{% if wandb or mlflow %}{% import "trackers/train.py.jinja" as trackers_code with context %}{% endif %}
{% if wandb %}{% import "wandb/train.py.jinja" as wandb_code with context %}{% endif %}
{% if mlflow %}{% import "mlflow/train.py.jinja" as mlflow_code with context %}{% endif %}
{% if multi_optim %}{% import "multi-optim/train.py.jinja" as multi_optim_code with context %}{% endif %}
{% if distributed %}{% import "distributed/train.py.jinja" as distributed_code with context %}{% endif %}
{% if ddp %}{% import "ddp/train.py.jinja" as ddp_code with context %}{% endif %}
{% if fsdp %}{% import "fsdp/train.py.jinja" as fsdp_code with context %}{% endif %}
{% if ema %}{% import "ema/train.py.jinja" as ema_code with context %}{% endif %}
{# with --ema, validation and test go through evaluate_with_ema #}
{% set evaluate = "evaluate_with_ema" if ema else "evaluate" %}
{% macro forward_backward_body(args, loss_name, scaler, backward_args) %}
{% if autocast %}
with run.autocast:
    result = compute_loss({{ args }})
{% else %}
result = compute_loss({{ args }})
{% endif %}
{% if loss_name %}
loss, metrics = checked_loss(result, {{ loss_name }})
{% else %}
loss, metrics = checked_loss(result)
{% endif %}
{% if accumulate %}
# the mean over the window actually used, also for a short last one
loss = loss / window_size
{% endif %}
{% if backward_args %}
# into this optimizer's parameters only: the generator's loss flows through
# the discriminator, but leaves its gradients alone
{% endif %}
{% if autocast %}
{{ scaler }}.scale(loss).backward({{ backward_args }})
{% else %}
loss.backward({{ backward_args }})
{% endif %}
run.meter.add(metrics)
{% endmacro %}
{% macro apply_gradients(optimizer, scaler, params, norm_key, where) %}
{% if autocast %}
{% if clip %}
# unscale first so that clipping and norms see the true gradients
{% else %}
# unscale first so that the gradients are the true ones from here on
{% endif %}
{{ scaler }}.unscale_({{ optimizer }})
{% endif %}
{% if debug %}
{{ debug_code.step(optimizer, scaler, where) }}{# debug/train.py.jinja #}
{% endif %}
{% if clip %}
{{ clip_code.step(params, norm_key) }}{# clip/train.py.jinja #}
{% endif %}
{% if autocast %}
{{ scaler }}.step({{ optimizer }})  # skips the step if fp16 gradients overflowed
{{ scaler }}.update()
{% else %}
{{ optimizer }}.step()
{% endif %}
{{ optimizer }}.zero_grad(set_to_none=True)
{% endmacro %}
"""Train {{ cookiecutter.project_name }}: an explicit PyTorch training loop you own.

The model and data live in model.py and data.py; this file is the loop. Every
option below is a field of `Config` and a command-line flag.
{% if multi_optim %}

Several optimizers: model.build_optimizers lists (name, optimizer, every_n_steps).
Each optimizer due at a training step (every n-th one) runs compute_loss(model,
batch, name), backpropagates into its own sub-model `model.<name>` only and
steps, one after the other in the listed order.
{% if accumulate %}
A training step is one window of --accumulate-steps micro-batches.
{% endif %}
{% endif %}
{% if fsdp %}

Sharded (FSDP2): each process holds 1/N of the weights, their gradients and the
optimizer state. Checkpoints are directories of shards, best.pt and final.pt
whole models; export_checkpoint() makes one file of any directory.
{% endif %}

Run on one process (CPU, or the first GPU):

    python train.py
    python train.py --max-epochs 5 --lr 1e-3 --run-dir runs/exp1
    python train.py --resume auto --run-dir runs/exp1   # continue where it stopped
    python train.py --fast-dev-run                      # two batches, writes nothing
{% if distributed %}

One machine, N processes (one per GPU; gloo on CPU):

    torchrun --standalone --nproc_per_node=4 train.py

Several machines (run on every node, with its own --node_rank):

    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 \
        --rdzv_backend=c10d --rdzv_endpoint=HOST_OF_NODE_0:29500 train.py
{% endif %}
{% if slurm %}

On a SLURM cluster (one task per process, see slurm/train.sbatch):

    sbatch slurm/train.sbatch --lr 1e-3
    sbatch slurm/sweep.sbatch                # a job array, one configuration per task
{% endif %}
"""

{% if multi_optim and (ddp or compile) %}
import copy
{% endif %}
import dataclasses
{% if wandb or mlflow %}
import importlib.util
{% endif %}
{% if ddp %}
import inspect
{% endif %}
import json
import math
import os
{% if distributed %}
import pickle
{% endif %}
import shlex
{% if fsdp or wandb %}
import shutil
{% endif %}
import signal
{% if slurm %}
import subprocess
{% endif %}
import sys
import time
{% if fsdp %}
import warnings
{% endif %}
{% set contextlib_names = [] %}
{% if ema %}{% set _ = contextlib_names.append("contextmanager") %}{% endif %}
{% if multi_optim and ddp %}{% set _ = contextlib_names.append("ExitStack") %}{% endif %}
{% if autocast or (ddp and accumulate and not multi_optim) %}{% set _ = contextlib_names.append("nullcontext") %}{% endif %}
{% if contextlib_names %}
from contextlib import {{ contextlib_names | join(", ") }}
{% endif %}
from dataclasses import dataclass, field
{% if distributed %}
from datetime import timedelta
{% endif %}
from pathlib import Path

import torch
{% if distributed %}
import torch.distributed as dist
{% endif %}
{% if ddp %}

# Imported before init_process_group on purpose: its functions' default arguments
# hold the process group that exists at import time, and DDP imports it later
# otherwise. A group held there outlives destroy_process_group(), and gloo's
# threads then crash the interpreter at exit (SIGABRT).
import torch.distributed.nn
from torch.nn.parallel import DistributedDataParallel as DDP
{% endif %}
{% if fsdp %}
{{ fsdp_code.imports() }}{# fsdp/train.py.jinja #}
{% endif %}
from torch.utils.data import BatchSampler, DataLoader, Dataset, Subset

from train_utils import (
    ContractError,
    CsvLog,
{% if distributed %}
    ShardSampler,
{% else %}
    EpochSampler,
{% endif %}
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
    from model import build_model, {% if multi_optim %}build_optimizers, {% endif %}compute_loss
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
        "runs/{{ cookiecutter.project_slug }}",
        "checkpoints, metrics.csv, config.json, summary.json go here",
    )
    resume: str = option("", "checkpoint to resume from; 'auto': newest in run_dir")
    resume_anyway: bool = option(
        False, "resume although run_dir/config.json differs in what changes training"
    )
    seed: int = option(1337, "seeds model init, shuffling and {% if distributed %}every rank's RNG{% else %}dropout{% endif %}")
    device: str = option("auto", "auto | cpu | cuda | cuda:N | mps")
    deterministic: bool = option(False, "use deterministic algorithms (slower on GPU)")
    tf32: bool = option(True, "CUDA: float32 matmuls on TF32 tensor cores")
    # length of training: whichever limit comes first ends it
    max_epochs: int = option({% if multi_optim %}40{% else %}10{% endif %}, "stop after this many epochs")
    max_steps: int = option(-1, "stop after this many {{ steps }} (-1: no limit)")
{% if early_stopping %}
    min_epochs: int = option(0, "train at least this many epochs (early stopping too)")
{% else %}
    min_epochs: int = option(0, "train at least this many epochs")
{% endif %}
    # optimization
{% if distributed %}
    batch_size: int = option(
        {{ 512 if multi_optim else 256 }},
        "samples per {% if accumulate %}micro-{% endif %}batch *per process*: the global batch is "
        "batch_size x world size{% if accumulate %} (x accumulate_steps per optimizer step){% endif %}",
    )
{% elif accumulate %}
    batch_size: int = option(
        {{ 512 if multi_optim else 256 }}, "samples per micro-batch (x accumulate_steps per optimizer step)"
    )
{% else %}
    batch_size: int = option({{ 512 if multi_optim else 256 }}, "samples per batch")
{% endif %}
{% if multi_optim %}
    lr: float = option(
        1e-3,
        "peak learning rate; "
        "an optimizer built with another one follows the schedule scaled",
    )
    min_lr: float = option(
        1e-4, "learning rate at the end of the cosine decay (scaled likewise)"
    )
{% else %}
    lr: float = option(3e-3, "peak learning rate (AdamW)")
    min_lr: float = option(3e-4, "learning rate at the end of the cosine decay")
{% endif %}
    schedule: str = option(
        "cosine",
        "cosine (linear warmup, then cosine to min_lr) | constant (warmup, then lr)",
    )
    warmup_steps: int = option(100, "optimizer steps of linear warmup")
{% if not multi_optim %}
    weight_decay: float = option(0.1, "AdamW decay of matrices (biases, norms: none)")
{% endif %}
{% if accumulate %}
{{ accumulate_code.config() }}{# accumulate/train.py.jinja #}
{% endif %}
{% if clip %}
{{ clip_code.config() }}{# clip/train.py.jinja #}
{% endif %}
{% if amp %}
{{ amp_code.config() }}{# amp/train.py.jinja #}
{% endif %}
{% if compile %}
{{ compile_code.config() }}{# compile/train.py.jinja #}
{% endif %}
{% if ema %}
{{ ema_code.config() }}{# ema/train.py.jinja #}
{% endif %}
    # checkpoints
    ckpt_every: int = option(500, "keep step_N{{ ext }} every N {{ steps }} (0: off)")
    keep_last: int = option(3, "step_N{{ ext }} kept (last{{ ext }} and best.pt always)")
    # val_loss: every model has it (the demo's val_acc is worth a look too)
{% if early_stopping %}
    monitor_metric: str = option(
        "val_loss", "validation metric that picks best.pt and drives early stopping"
    )
{% else %}
    monitor_metric: str = option("val_loss", "validation metric that picks best.pt")
{% endif %}
    monitor_mode: str = option("min", "min | max: is a lower or higher value better")
{% if early_stopping %}
{{ early_stopping_code.config() }}{# early-stopping/train.py.jinja #}
{% endif %}
    # validation and test
    val_every_epochs: int = option(1, "validate at the end of every N-th epoch")
    val_check_interval: float = option(
        1.0,
        "also validate inside an epoch: a fraction of it (<1) "
        "or every N {{ steps }} (>1)",
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
{% if debug %}
{{ debug_code.config() }}{# debug/train.py.jinja #}
{% endif %}
    # logging
    log_every: int = option(50, "print/log training metrics every N {{ steps }}")
    num_workers: int = option(0, "DataLoader worker processes")
{% if wandb %}
{{ wandb_code.config() }}{# wandb/train.py.jinja #}
{% endif %}
{% if mlflow %}
{{ mlflow_code.config() }}{# mlflow/train.py.jinja #}
{% endif %}
{% if distributed %}
    dist_timeout_s: int = option(
        600, "seconds a collective may wait before the job fails (a dead rank)"
    )
{% endif %}
{% if ddp %}
    find_unused_parameters: bool = option(
        False, "let DDP allow parameters that some batches leave without gradient"
    )
{% endif %}
{% if fsdp %}
{{ fsdp_code.config() }}{# fsdp/train.py.jinja #}
{% endif %}
    # model and data (read by model.py / data.py; add your own fields here)
{% if multi_optim %}
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
{% else %}
    n_digits: int = option(3, "digits per operand of the addition task")
    n_train: int = option(40000, "training problems")
    n_val: int = option(2000, "validation problems")
    n_test: int = option(2000, "test problems")
    data_seed: int = option(0, "seed of the problem generator (fixed data across runs)")
    d_model: int = option(128, "transformer width")
    n_layers: int = option(2, "transformer blocks")
    n_heads: int = option(4, "attention heads")
    dropout: float = option(0.0, "dropout probability")
{% endif %}


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
{% if distributed %}
    "dist_timeout_s",
{% endif %}
{% if activation_checkpointing %}
    "activation_checkpointing",  # memory, not numbers: the recomputation is exact
{% endif %}
{% if wandb %}
{{ wandb_code.harmless() }}{# wandb/train.py.jinja #}
{% endif %}
{% if mlflow %}
{{ mlflow_code.harmless() }}{# mlflow/train.py.jinja #}
{% endif %}
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
{% if distributed %}
    if os.environ.get("RANK", "0") != "0":
        notes = []  # one process says it
{% endif %}
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
{% if distributed %}
        # (every process reads config.json here, before the process group forms
        # and rank 0 writes the new one in open_logs)
{% endif %}
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
{% if multi_optim %}
    at_least_1 += " n_modes n_train n_val n_test latent_dim hidden g_every"
{% else %}
    at_least_1 += " n_train n_val n_test d_model n_layers n_heads"
{% endif %}
    at_least_0 = "min_epochs warmup_steps ckpt_every keep_last sanity_val_steps"
    at_least_0 += " overfit_batches num_workers min_lr{% if not multi_optim %} weight_decay{% endif %}"
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
        ("lr{% if clip %} clip_value{% endif %}", lambda v: v > 1e30, "<= 1e30"),
{% if multi_optim %}
        ("mode_std", lambda v: v <= 0, "> 0"),
{% else %}
        ("lr", lambda v: v < 0, ">= 0"),
        ("dropout", lambda v: not 0 <= v < 1, "in [0, 1)"),
{% endif %}
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
{% if multi_optim %}
    if cfg.lr <= 0:
        problems.append(
            "--lr must be > 0 (each optimizer's schedule is scaled by its own LR / lr)"
        )
{% else %}
    if cfg.n_heads >= 1 and cfg.d_model % cfg.n_heads:
        problems.append(
            f"--d-model {cfg.d_model} is not a multiple of --n-heads {cfg.n_heads}"
        )
    # the demo draws distinct problems, and --n-digits 19 overflows int64
    if not 1 <= cfg.n_digits <= 18:
        problems.append("--n-digits must be in [1, 18]")
    elif cfg.n_train + cfg.n_val + cfg.n_test > 10 ** (2 * cfg.n_digits) // 2:
        problems.append(
            f"--n-train, --n-val and --n-test: {cfg.n_digits}-digit operands make "
            f"too few distinct problems for {cfg.n_train + cfg.n_val + cfg.n_test}"
        )
{% endif %}
    if cfg.schedule not in ("cosine", "constant"):
        problems.append(f"--schedule must be cosine or constant, not {cfg.schedule!r}")
    if cfg.monitor_mode not in ("min", "max"):
        problems.append(f"--monitor-mode must be min or max, not {cfg.monitor_mode!r}")
    if not cfg.run_dir:
        problems.append("--run-dir must not be empty")
    elif problem := run_dir_problem(cfg.run_dir):
        problems.append(problem)
{% if accumulate %}
{{ accumulate_code.checks() }}{# accumulate/train.py.jinja #}
{% endif %}
{% if clip %}
{{ clip_code.checks() }}{# clip/train.py.jinja #}
{% endif %}
{% if amp %}
{{ amp_code.checks() }}{# amp/train.py.jinja #}
{% endif %}
{% if early_stopping %}
{{ early_stopping_code.checks() }}{# early-stopping/train.py.jinja #}
{% endif %}
{% if debug %}
{{ debug_code.checks() }}{# debug/train.py.jinja #}
{% endif %}
{% if ema %}
{{ ema_code.checks() }}{# ema/train.py.jinja #}
{% endif %}
{% if wandb %}
{{ wandb_code.checks() }}{# wandb/train.py.jinja #}
{% endif %}
{% if compile %}
{{ compile_code.checks() }}{# compile/train.py.jinja #}
{% endif %}
{% if distributed %}
{{ distributed_code.checks() }}{# distributed/train.py.jinja #}
{% endif %}
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
{% if fsdp %}
    if cfg.resume not in ("", "auto") and not Path(cfg.resume).is_dir():
        problems.append(f"--resume {cfg.resume}: no such checkpoint directory")
{% else %}
    if cfg.resume not in ("", "auto") and not Path(cfg.resume).is_file():
        problems.append(f"--resume {cfg.resume}: no such checkpoint file")
{% endif %}
    if problems:
        parser.error("; ".join(problems))
    return cfg


{% if distributed or amp %}
# -----------------------------------------------------------------------------
# processes and devices


{% endif %}
{% if distributed %}
{{ distributed_code.functions() }}{# distributed/train.py.jinja #}
{% endif %}
{% if ddp %}
{{ ddp_code.functions() }}{# ddp/train.py.jinja #}
{% endif %}
{% if fsdp %}
{{ fsdp_code.functions() }}{# fsdp/train.py.jinja #}
{% endif %}
{% if amp %}
{{ amp_code.functions() }}{# amp/train.py.jinja #}
{% endif %}
# -----------------------------------------------------------------------------
# data: shuffling is a pure function of (seed, epoch), so a resumed run sees the
# same batches as an uninterrupted one


def make_loader(
    dataset: Dataset,
    cfg: Config,
{% if distributed %}
    world: Dist,
{% endif %}
    device: torch.device,
    shuffle: bool,
    epoch: int = 0,
    skip_batches: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    skip = skip_batches * cfg.batch_size
{% if distributed %}
    sampler = ShardSampler(
        len(dataset), world.rank, world.world_size, shuffle, cfg.seed, epoch, skip
    )
{% else %}
    sampler = EpochSampler(len(dataset), shuffle, cfg.seed, epoch, skip)
{% endif %}
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


{% if multi_optim %}
{{ multi_optim_code.functions() }}{# multi-optim/train.py.jinja #}
{% else %}
def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW that decays matrices only: decaying biases and norm gains only hurts."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {
            "params": [p for p in params if p.dim() >= 2],
            "weight_decay": cfg.weight_decay,
        },
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
{% if autocast %}
    # On CUDA the fused kernel: one launch for all parameters, and under fp16
    # GradScaler's overflow check stays on the GPU (with foreach it syncs the
    # host). On a CPU the multi-tensor (foreach) kernels, faster than a loop.
{% else %}
    # On CUDA the fused kernel: one launch for all parameters; on a CPU the
    # multi-tensor (foreach) kernels, faster than a loop.
{% endif %}
    # Any torch.optim optimizer imports torch._dynamo when built (seconds on a
    # slow CPU); nothing avoids it.
    on_cuda = any(p.is_cuda for p in params)
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=(0.9, 0.95), foreach=not on_cuda, fused=on_cuda
    )


{% endif %}
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
{% if fsdp %}
# checkpoints: directories of shards that every rank writes, to resume; single
# files of the whole model (best.pt, final.pt), for inference
{% else %}
# checkpoints: a resume continues the training it began; load_model() for inference
{% endif %}


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
{% if fsdp %}
# (those of meta.pt: the weights and optimizer state are in the shards)
{% endif %}
CHECKPOINT_PARTS = (
    "format",
{% if not fsdp %}
    "model",
{% if multi_optim %}
    "optimizers",
{% if autocast %}
    "scalers",
{% endif %}
{% else %}
    "optimizer",
{% if autocast %}
    "scaler",
{% endif %}
{% endif %}
{% endif %}
{% if ema %}
    "ema",
{% endif %}
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


{% if fsdp %}
{{ fsdp_code.checkpoints() }}{# fsdp/train.py.jinja #}
{% endif %}
{% if ema %}
def load_model(
    path: str | os.PathLike, device: str = "cpu", ema: bool = False
) -> torch.nn.Module:
    """Rebuild the trained model from a checkpoint, for inference; ema=True: with
    the averaged weights (of --ema-of's sub-model, if the run named one)."""
    checkpoint = upgrade_checkpoint(load_checkpoint(Path(path)), Path(path))
    cfg = Config(**checkpoint["config"])
    model = build_model(cfg)
    model.load_state_dict(checkpoint["model"])
{{ ema_code.load_model() }}{# ema/train.py.jinja #}
{% else %}
def load_model(path: str | os.PathLike, device: str = "cpu") -> torch.nn.Module:
    """Rebuild the trained model from a checkpoint, for inference."""
    checkpoint = upgrade_checkpoint(load_checkpoint(Path(path)), Path(path))
    model = build_model(Config(**checkpoint["config"]))
    model.load_state_dict(checkpoint["model"])
{% endif %}
    return model.to(device).eval()


# -----------------------------------------------------------------------------
# logging


{% if distributed %}
def rerun_command(cfg: Config, world: Dist) -> str:
{% else %}
def rerun_command(cfg: Config) -> str:
{% endif %}
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
{% if distributed %}
    launch = ["python", "train.py"]
    one_machine = os.environ.get("LOCAL_WORLD_SIZE") == str(world.world_size)
    if world.world_size > 1 and one_machine:
        # torchrun on one machine (it sets LOCAL_WORLD_SIZE); on several machines,
        # or under another launcher, this is the command of each process
        nproc = f"--nproc_per_node={world.world_size}"
        launch = ["torchrun", "--standalone", nproc, "train.py"]
    return shlex.join(launch + args)
{% else %}
    return shlex.join(["python", "train.py", *args])
{% endif %}


{% if debug %}
{{ debug_code.functions() }}{# debug/train.py.jinja #}
{% endif %}
{% if ema %}
{{ ema_code.functions() }}{# ema/train.py.jinja #}
{% endif %}
# -----------------------------------------------------------------------------
# signals: the handlers only note a request; the loop acts on it between steps


class Requests:
    """Set by the signal handlers, acted on by the loop between steps."""

    stop = False
{% if slurm %}
    requeue = False  # SLURM's warning before the time limit, or a preemption
{% endif %}


def request_stop(signum, frame) -> None:
    Requests.stop = True


{% if slurm %}
{{ slurm_code.functions() }}{# slurm/train.py.jinja #}
{% endif %}
# -----------------------------------------------------------------------------
# the run: train() is the outline, the functions after it are its steps, and
# `Run` is everything they share


@dataclass
class TrainState:
    """Everything about progress that a checkpoint must restore."""

    step: int = 0  # {{ steps }} taken
    epoch: int = 0  # current epoch
    batch_in_epoch: int = 0  # {% if accumulate %}micro-{% endif %}batches of this epoch already trained on
    best: float | None = None  # best value of cfg.monitor_metric so far
{% if multi_optim %}
    # each optimizer's own steps, by name: the position of its LR schedule
    optimizer_steps: dict[str, int] = field(default_factory=dict)
{% endif %}
{% if early_stopping %}
    bad_validations: int = 0  # validations in a row without improvement
{% endif %}
{% if wandb %}
{{ wandb_code.state() }}{# wandb/train.py.jinja #}
{% endif %}
{% if mlflow %}
{{ mlflow_code.state() }}{# mlflow/train.py.jinja #}
{% endif %}

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

{% if distributed %}
    def means(self, world: Dist) -> dict[str, float]:
        """Each metric's mean over the values it was given, averaged over the ranks
        (a collective: every rank calls it at the same steps)."""
{% else %}
    def means(self) -> dict[str, float]:
        """Each metric's mean over the values it was given."""
{% endif %}
        names = sorted(self.sums)
{% if multi_optim %}
        if not names:  # no optimizer was due since the last log
            return {}
{% endif %}
        totals = torch.stack([self.sums[k] for k in names])
{% if distributed %}
        if world.world_size > 1:
            dist.all_reduce(totals)
            totals /= world.world_size
{% endif %}
        # .tolist(): the one host sync of the training loop, once per log
        return {k: v / self.counts[k] for k, v in zip(names, totals.tolist())}


@dataclass
class Run:
    """What the steps of one run share: set_up() builds it, train() hands it on."""

    cfg: Config
{% if distributed %}
    world: Dist
{% endif %}
    device: torch.device
    progress: Progress
    writes: bool  # checkpoints and logs are written (not under --fast-dev-run)
    command: str  # the command that repeats this run (command.txt)
{% if fsdp %}
    # sharded in place by fully_shard (its parameters are DTensors): checkpoints
    # and evaluation
    raw_model: torch.nn.Module
{% else %}
    raw_model: torch.nn.Module  # plain weights: checkpoints and evaluation
{% endif %}
{% if multi_optim and (ddp or compile) %}
    # what compute_loss gets: raw_model with its optimized sub-models wrapped
{% elif ddp or compile %}
    # what trains: raw_model{% if ddp %}, in DDP when there are several ranks{% endif %}{% if compile %}, compiled{% endif %}

{% endif %}
    model: torch.nn.Module
{% if multi_optim %}
    optimizers: dict[str, Optim]
{% else %}
    optimizer: torch.optim.Optimizer
{% endif %}
{% if amp %}
    amp_dtype: torch.dtype | None
{% endif %}
{% if autocast %}
    autocast: torch.autocast | nullcontext
{% if multi_optim %}
    scalers: dict[str, torch.amp.GradScaler]
{% else %}
    scaler: torch.amp.GradScaler
{% endif %}
{% endif %}
{% if ddp and multi_optim %}
    ddp_parts: dict[str, DDP]  # for no_sync(); empty on one process
{% elif ddp %}
{% if accumulate %}
    ddp_model: torch.nn.Module  # for no_sync(){% if compile %}, which the compiled wrapper hides{% endif %}

{% endif %}
    # Without find_unused_parameters, a parameter that gets no gradient in a step
    # leaves DDP waiting for it and the ranks' collectives out of step: the loop
    # checks, and names it, before the next collective.
    check_all_used: bool
{% endif %}
    train_set: Dataset
    val_loader: DataLoader
    val_batches: int
    test_set: Dataset
    # the length of training, in {{ steps }}
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    val_interval: int  # also validate every N steps inside an epoch (0: never)
{% if compile %}
    drop_last: bool  # the training loader drops an epoch's short last batch
{% endif %}
{% if ema %}
    ema: EMA  # the average of the weights (of --ema-of's sub-model if given)
{% endif %}
    state: TrainState
    resumed: bool = False
    stopping: bool = False  # the last step is done{% if early_stopping %} (or early stopping decided){% endif %}

    csv: CsvLog | None = None  # metrics.csv{{ ", on the writing process" if distributed }}
{% if tensorboard %}
    tb: object | None = None  # a SummaryWriter, when tensorboard is installed
{% endif %}
{% if wandb %}
    wandb: "WandbLog | None" = None  # the W&B run, while it works
{% endif %}
{% if mlflow %}
    mlflow: "MlflowLog | None" = None  # the MLflow run, while it works
{% endif %}
    meter: Meter = field(default_factory=Meter)
    lrs: dict[str, float] = field(default_factory=dict)  # the latest LRs, logged
{% if debug %}
    layer_norms: dict[str, torch.Tensor] = field(default_factory=dict)  # to log
{% endif %}
{% if multi_optim and accumulate %}
    window: list = field(default_factory=list)  # the micro-batches of this step
{% endif %}
    started: float = 0.0  # when training started (for the ETA)
    start_step: int = 0


def main(argv=None) -> int:
    cfg = parse_config(argv)
{% if wandb or mlflow %}
    # a missing tracker package stops here, in one line, before anything is built
{% endif %}
{% if wandb %}
{{ wandb_code.require() }}{# wandb/train.py.jinja #}
{% endif %}
{% if mlflow %}
{{ mlflow_code.require() }}{# mlflow/train.py.jinja #}
{% endif %}
{% if distributed %}
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
{% else %}
    try:
        return train(cfg, pick_device(cfg.device))
    except ContractError as exc:
        sys.exit(str(exc))  # a mistake in model.py or data.py: one line says it
{% endif %}


{% if distributed %}
def train(cfg: Config, world: Dist, device: torch.device) -> int:
    """The outline of a run. Every rank runs every step; those marked "every rank"
    hold collectives, which wait until all ranks reach them."""
    run = set_up(cfg, world, device)
    resume(run)  # every rank
{% else %}
def train(cfg: Config, device: torch.device) -> int:
    """The outline of a run; each step is a function below."""
    run = set_up(cfg, device)
    resume(run)
{% endif %}
    open_logs(run)
    sanity_check(run){% if distributed %}  # every rank{% endif %}


    run.model.train()
    run.started, run.start_step = time.perf_counter(), run.state.step
    run.meter = Meter()  # samples/s counts from here
    run.stopping = run.state.step >= run.total_steps
    while not run.stopping and run.state.epoch < cfg.max_epochs:
        exit_code = train_epoch(run){% if distributed %}  # every rank{% endif %}

        if exit_code is not None:
            return exit_code  # a signal stopped it; last.pt resumes it
    finish(run){% if distributed %}  # every rank{% endif %}

    return 0


{% if distributed %}
def set_up(cfg: Config, world: Dist, device: torch.device) -> Run:
{% else %}
def set_up(cfg: Config, device: torch.device) -> Run:
{% endif %}
    """Everything before the first step: signals, seeds, data, model, optimizer{% if multi_optim %}s{% endif %},
    and the length of training."""
{% if distributed %}
    progress = Progress(world.is_main)
    command = rerun_command(cfg, world)  # before --fast-dev-run changes cfg below
{% else %}
    progress = Progress()
    command = rerun_command(cfg)  # before --fast-dev-run changes cfg below
{% endif %}
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
{% if slurm %}
{{ slurm_code.set_up() }}{# slurm/train.py.jinja #}
{% endif %}
    if device.type == "cuda":
        # TF32 keeps float32's range with a 10-bit mantissa: several times faster
        # matmuls, and training is rarely sensitive to it (--no-tf32 if yours is)
        torch.set_float32_matmul_precision("high" if cfg.tf32 else "highest")
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

{% if distributed %}
    # Same seed on every rank for an identical model initialisation...
    seed_everything(cfg.seed)
    train_set, val_set, test_set = checked_datasets(build_datasets(cfg))
    raw_model = build_model(cfg).to(device)
    # ...then a different stream per rank, for dropout and augmentation.
    seed_everything(cfg.seed + world.rank)
{% if fsdp %}
{% if amp %}
{{ amp_code.set_up() }}{# amp/train.py.jinja #}
{% endif %}
{{ fsdp_code.set_up() }}{# fsdp/train.py.jinja #}
{% endif %}
{% else %}
    seed_everything(cfg.seed)
    train_set, val_set, test_set = checked_datasets(build_datasets(cfg))
    raw_model = build_model(cfg).to(device)
{% endif %}
{% if multi_optim %}
    optimizers = check_optimizers(raw_model, build_optimizers(raw_model, cfg))
{% else %}
    optimizer = build_optimizer(raw_model, cfg)
{% endif %}
{% if amp and not fsdp %}
{{ amp_code.set_up() }}{# amp/train.py.jinja #}
{% endif %}
{% if ema %}
{{ ema_code.set_up() }}{# ema/train.py.jinja #}
{% endif %}

    if cfg.overfit_batches:
        # the same few batches every epoch, for training and validation
{% if distributed %}
        # (N global batches: every rank gets N batches of its own)
        n_samples = cfg.overfit_batches * cfg.batch_size * world.world_size
{% else %}
        n_samples = cfg.overfit_batches * cfg.batch_size
{% endif %}
        train_set = val_set = Subset(train_set, range(min(len(train_set), n_samples)))
    elif cfg.fast_dev_run:
        cfg.limit_train_batches = cfg.limit_val_batches = cfg.limit_test_batches = 2
        cfg.max_epochs, cfg.sanity_val_steps = 1, 0

{% if multi_optim and (ddp or compile) %}
    # compute_loss gets a copy of the model whose optimized sub-models are wrapped
    # (parameters shared); raw_model stays plain, for checkpoints and evaluation
    parts = {name: getattr(raw_model, name) for name in optimizers}
{% if ddp %}
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
{% endif %}
{% if compile %}
    # checkpoints always come from raw_model: no "_orig_mod." prefixes
    parts = {
        name: torch.compile(part, mode=cfg.compile_mode) for name, part in parts.items()
    }
{% endif %}
    model = with_parts(raw_model, parts)
{% elif ddp and not multi_optim %}
    model = raw_model
    if world.world_size > 1:
        model = DDP(
            raw_model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.find_unused_parameters,
            **buffer_sync(raw_model),
        )
{% if accumulate %}
    ddp_model = model
{% endif %}
{% endif %}
{% if compile and not multi_optim %}
    # checkpoints always come from raw_model: no "_orig_mod." prefixes
{% if ddp %}
    model = torch.compile(model, mode=cfg.compile_mode)
{% else %}
    model = torch.compile(raw_model, mode=cfg.compile_mode)
{% endif %}
{% endif %}
{% if ddp or compile %}

{% endif %}
{% if compile %}
    # Only full batches, one shape for torch.compile: the training loader drops
    # an epoch's short last batch (unless there is no full batch: then the one
    # short batch is the only shape)
{% if distributed %}
    per_process = len(train_set) // world.world_size
{% else %}
    per_process = len(train_set)
{% endif %}
    drop_last = per_process >= cfg.batch_size
    full_batches = per_process // cfg.batch_size if drop_last else min(1, per_process)
    batches_per_epoch = fraction_or_count(cfg.limit_train_batches, full_batches)
{% elif distributed %}
    batches_per_epoch = fraction_or_count(
        cfg.limit_train_batches,
        math.ceil(len(train_set) // world.world_size / cfg.batch_size),
    )
{% else %}
    batches_per_epoch = fraction_or_count(
        cfg.limit_train_batches, math.ceil(len(train_set) / cfg.batch_size)
    )
{% endif %}
{% if accumulate %}
    # the last window of an epoch may be shorter than accumulate_steps
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.accumulate_steps)
{% else %}
    steps_per_epoch = batches_per_epoch
{% endif %}
    total_steps = cfg.max_epochs * steps_per_epoch
    if cfg.max_steps > 0:
        total_steps = min(total_steps, cfg.max_steps)
{% if multi_optim %}
    for o in optimizers.values():
        o.total_steps = max(1, total_steps // o.every)
{% endif %}
    if cfg.val_check_interval > 1:
        val_interval = int(cfg.val_check_interval)
    elif cfg.val_check_interval < 1:
        val_interval = max(1, round(cfg.val_check_interval * steps_per_epoch))
    else:
        val_interval = 0  # only at the end of epochs
{% if distributed %}
    val_loader = make_loader(val_set, cfg, world, device, shuffle=False)
{% else %}
    val_loader = make_loader(val_set, cfg, device, shuffle=False)
{% endif %}
    return Run(
        cfg=cfg,
{% if distributed %}
        world=world,
{% endif %}
        device=device,
        progress=progress,
{% if distributed %}
        writes=world.is_main and not cfg.fast_dev_run,
        command=command,
{% else %}
        writes=not cfg.fast_dev_run,
        command=command,
{% endif %}
        raw_model=raw_model,
        model={{ "model" if ddp or compile else "raw_model" }},
{% if multi_optim %}
        optimizers=optimizers,
{% else %}
        optimizer=optimizer,
{% endif %}
{% if amp %}
        amp_dtype=amp_dtype,
{% endif %}
{% if autocast %}
        autocast=autocast,
{% if multi_optim %}
        scalers=scalers,
{% else %}
        scaler=scaler,
{% endif %}
{% endif %}
{% if ddp and multi_optim %}
        ddp_parts=ddp_parts,
{% elif ddp %}
{% if accumulate %}
        ddp_model=ddp_model,
{% endif %}
        check_all_used=world.world_size > 1 and not cfg.find_unused_parameters,
{% endif %}
        train_set=train_set,
        val_loader=val_loader,
        val_batches=fraction_or_count(cfg.limit_val_batches, len(val_loader)),
        test_set=test_set,
        batches_per_epoch=batches_per_epoch,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        val_interval=val_interval,
{% if compile %}
        drop_last=drop_last,
{% endif %}
{% if ema %}
        ema=ema,
{% endif %}
{% if multi_optim %}
        state=TrainState(optimizer_steps=dict.fromkeys(optimizers, 0)),
{% else %}
        state=TrainState(),
{% endif %}
    )


def resume(run: Run) -> None:
    """Continue from --resume's checkpoint ('auto': the newest valid one in
    run_dir): weights, optimizer{% if multi_optim %}s{% endif %}{% if autocast %}, loss scaling{% endif %}, progress and RNG state."""
    cfg = run.cfg
    ckpt_dir = Path(cfg.run_dir) / "checkpoints"
    resume_path = Path(cfg.resume) if cfg.resume not in ("", "auto") else None
    if cfg.resume == "auto":
{% if distributed %}
        # rank 0 looks, and every rank resumes from the file it named (a rank
        # looking for itself could find another one while rank 0 still writes)
        resume_path = find_resumable(Path(cfg.run_dir)) if run.world.is_main else None
        if run.world.world_size > 1:
            # every rank
            resume_path = broadcast_from_rank0(resume_path, run.world, run.device)
{% else %}
        resume_path = find_resumable(Path(cfg.run_dir))
{% endif %}
        if resume_path is None:
            run.progress.print(
                f"resume: no checkpoint in {ckpt_dir}; starting from scratch"
            )
    if resume_path is None:
        return
    checkpoint = upgrade_checkpoint(load_resumable(resume_path), resume_path)
{% if multi_optim %}
    if "optimizers" not in checkpoint:
        sys.exit(
            f"--resume {resume_path}: saved with one optimizer, whose state does not "
            "divide into --multi-optim's: begin a new --run-dir (load_model() "
            "rebuilds its weights)"
        )
{% elif not fsdp %}
    if "optimizer" not in checkpoint:
        sys.exit(
            f"--resume {resume_path}: saved with an optimizer per part of the model, "
            "whose states do not make one: begin a new --run-dir (load_model() "
            "rebuilds its weights)"
        )
{% endif %}
    notes = []  # what this run has that the checkpoint lacks, and the reverse
{% if fsdp %}
    load_shards(run, resume_path)  # every rank
{% else %}
    run.raw_model.load_state_dict(checkpoint["model"])
{% endif %}
{% if multi_optim %}
    for name, o in run.optimizers.items():
        # its moments, its LRs and its initial_lr (the schedule's peak)
        o.optimizer.load_state_dict(checkpoint["optimizers"][name])
{% if autocast %}
    if "scalers" in checkpoint:
        for name, scaler in run.scalers.items():
            scaler.load_state_dict(checkpoint["scalers"][name])
    else:
        notes.append("new loss scalers (--amp is new to this run)")
{% endif %}
{% elif not fsdp %}
    run.optimizer.load_state_dict(checkpoint["optimizer"])
{% if autocast %}
    if "scaler" in checkpoint:
        run.scaler.load_state_dict(checkpoint["scaler"])
    else:
        notes.append("a new loss scaler (--amp is new to this run)")
{% endif %}
{% endif %}
{% if ema %}
{{ ema_code.resume() }}{# ema/train.py.jinja #}
{% endif %}
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
{% if distributed %}
    world = run.world
    if len(checkpoint["rng"]) == world.world_size:
        set_rng_state(checkpoint["rng"][world.rank], run.device)
    else:
        run.progress.print(
            f"resume: saved by {len(checkpoint['rng'])} ranks, running "
            f"{world.world_size}: RNG streams start afresh"
        )
{% else %}
    if len(checkpoint["rng"]) == 1:
        set_rng_state(checkpoint["rng"][0], run.device)
    else:
        run.progress.print(
            f"resume: saved by {len(checkpoint['rng'])} processes, running one: "
            "RNG streams start afresh"
        )
{% endif %}
    state = run.state
    run.progress.print(
        f"resume: {resume_path} at step {state.step} "
        f"(epoch {state.epoch}, batch {state.batch_in_epoch})"
    )


def open_logs(run: Run) -> None:
{% if wandb or mlflow %}
    """config.json, command.txt, a snapshot of the code, metrics.csv (continued
    after the resumed step), {{ loggers | join(", ") }}, and what is about to train."""
{% elif tensorboard %}
    """config.json, command.txt, a snapshot of the code, metrics.csv and TensorBoard
    (continued after the resumed step), and what is about to train."""
{% else %}
    """config.json, command.txt, a snapshot of the code, metrics.csv (continued
    after the resumed step), and what is about to train."""
{% endif %}
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
{% if tensorboard %}
        run.tb = open_tensorboard(run_dir / "tensorboard", resumed_step or 0)
{% endif %}
{% if wandb %}
{{ wandb_code.open_logs() }}{# wandb/train.py.jinja #}
{% endif %}
{% if mlflow %}
{{ mlflow_code.open_logs() }}{# mlflow/train.py.jinja #}
{% endif %}
    progress.print(f"rerun with: {run.command}")
    progress.print(model_summary(run.raw_model))
{% if distributed %}
    world = run.world
    global_batch = cfg.batch_size * world.world_size{% if accumulate %} * cfg.accumulate_steps{% endif %}

    progress.print(
        f"world size {world.world_size} on {run.device}; global batch {global_batch}; "
        f"{run.steps_per_epoch} {{ steps }} per epoch, {run.total_steps} in all"
    )
{% else %}
    progress.print(
        f"device {run.device}; "
        f"{run.steps_per_epoch} {{ steps }} per epoch, {run.total_steps} in all"
    )
{% endif %}
{% if multi_optim %}
    progress.print(
        "optimizers: "
        + ", ".join(
            f"{o.name} every {o.every} step(s), {o.total_steps} steps"
            for o in run.optimizers.values()
        )
    )
{% endif %}


def log_row(run: Run, row: dict) -> None:
{% if wandb or mlflow %}
    """One row of metrics.csv, sent to {{ loggers | join(", ") }} too (if this process
    writes): the one place every logged number passes."""
{% elif tensorboard %}
    """One row of metrics.csv, its numbers as TensorBoard scalars too (if this
    process writes)."""
{% else %}
    """One row of metrics.csv{{ " (if this process writes)" if distributed }}."""
{% endif %}
    if run.csv is not None:
        run.csv.log(row)
{% if tensorboard %}
{{ tensorboard_code.log_row() }}{# tensorboard/train.py.jinja #}
{% endif %}
{% if wandb %}
{{ wandb_code.log_row() }}{# wandb/train.py.jinja #}
{% endif %}
{% if mlflow %}
{{ mlflow_code.log_row() }}{# mlflow/train.py.jinja #}
{% endif %}


def sanity_check(run: Run) -> None:
    """A few validation batches before training (one when --sanity-val-steps is 0).

    Catches evaluation bugs, and a --monitor-metric that names nothing, before
    hours of training. Evaluation draws no random numbers, so the training RNG
    stream is untouched.
    """
    cfg = run.cfg
    sanity = {{ evaluate }}(run, "val", run.val_loader, cfg.sanity_val_steps or 1)
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
    """The rest of the current epoch, then its validation and last{{ ext }}.

    Returns an exit code when a signal stopped the run (after saving last{{ ext }}).
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
{% if distributed %}
        run.world,
{% endif %}
        run.device,
        shuffle=not cfg.overfit_batches,
        epoch=epoch,
        skip_batches=state.batch_in_epoch,
{% if compile %}
        # a short last batch would make torch.compile compile a second graph
        drop_last=run.drop_last,
{% endif %}
    )
    for i, batch in enumerate(loader, start=state.batch_in_epoch):
        if i >= run.batches_per_epoch:
            break
        batch = move_to(batch, run.device)
{% if debug %}
{% if fsdp %}
        if state.step == 0 and i == 0:
            # every rank: the forward gathers the shards; rank 0 prints
            print_module_shapes(run.raw_model, batch, say=run.progress.print)
{% elif distributed %}
        if state.step == 0 and i == 0 and run.world.is_main:
{% else %}
        if state.step == 0 and i == 0:
{% endif %}
{% if not fsdp %}
            print_module_shapes(run.raw_model, batch{% if multi_optim %}, list(run.optimizers){% endif %})
{% endif %}
{% endif %}
{% if accumulate %}
        if not train_step(run, i, batch):
            continue  # inside a window of micro-batches
{% else %}
        train_step(run, i, batch)
{% endif %}
{% if ema %}
{{ ema_code.step() }}{# ema/train.py.jinja #}
{% endif %}
        if state.step % cfg.log_every == 0 or run.stopping:
            log_training(run, epoch){% if distributed %}  # every rank{% endif %}


        # validation inside the epoch, periodic checkpoints, stop requests
        end_of_epoch = state.batch_in_epoch >= run.batches_per_epoch
        t0 = time.perf_counter()
        if run.val_interval and state.step % run.val_interval == 0 and not end_of_epoch:
            validate(run){% if distributed %}  # every rank{% endif %}

        if cfg.ckpt_every and state.step % cfg.ckpt_every == 0:
            save_checkpoint(run, f"step_{state.step:08d}"){% if distributed %}  # every rank{% endif %}

            if run.writes:
                prune_checkpoints(Path(cfg.run_dir) / "checkpoints", cfg.keep_last)
        run.meter.untimed += time.perf_counter() - t0
{% if distributed %}
        requests = agreed_requests(run, end_of_epoch)  # every rank
{% if slurm %}
        if any(requests) and not run.stopping:
            return stop_early(run, requeue=requests[1])  # every rank
{% else %}
        if any(requests) and not run.stopping:
            return stop_early(run)  # every rank
{% endif %}
{% elif slurm %}
        if (Requests.stop or Requests.requeue) and not run.stopping:
            return stop_early(run, requeue=Requests.requeue)
{% else %}
        if Requests.stop and not run.stopping:
            return stop_early(run)
{% endif %}
        if run.stopping:
            break
    end_epoch(run, epoch){% if distributed %}  # every rank{% endif %}

    return None


{% if multi_optim %}
def train_step(run: Run, i: int, batch){% if accumulate %} -> bool{% endif %}:
    """One training step: every optimizer due at it, one after the other in the
    order of build_optimizers. A later one (the generator) sees the update an
    earlier one (the discriminator) made at this same step.
{% if accumulate %}

    With accumulation a step is a window of micro-batches: batch i of the epoch
    joins the window, and the step runs when the window is complete. Returns
    whether it ran.
{% endif %}
    """
{% if accumulate %}
    cfg, state = run.cfg, run.state
    # the micro-batches of a window are kept until it is complete: each
    # optimizer due at this step then runs over all of them in turn
    if i % cfg.accumulate_steps == 0:
        run.window = []
    run.window.append(batch)
{% else %}
    state = run.state
{% endif %}
    run.meter.samples += batch_len(batch)
    state.batch_in_epoch = i + 1
{% if accumulate %}
    # the last window of an epoch may be shorter than accumulate_steps
    if (
        len(run.window) < cfg.accumulate_steps
        and state.batch_in_epoch < run.batches_per_epoch
    ):
        return False
{% endif %}
    for o in run.optimizers.values():
        if (state.step + 1) % o.every:
            continue  # not due: its parameters and its state stay as they are
{% if accumulate %}
        for k, micro in enumerate(run.window):
{% if distributed %}
            # all-reduce on the last micro-batch only: no_sync covers the
            # forward and the backward of the others
            with syncing_only(run.ddp_parts, o.name, sync=k + 1 == len(run.window)):
                forward_backward(run, micro, o, len(run.window))
{% else %}
            forward_backward(run, micro, o, len(run.window))
{% endif %}
{% elif distributed %}
        with syncing_only(run.ddp_parts, o.name):
            forward_backward(run, batch, o)
{% else %}
        forward_backward(run, batch, o)
{% endif %}
        optimizer_step(run, o)
    state.step += 1
    run.stopping = state.step >= run.total_steps
{% if accumulate %}
    return True
{% endif %}


def forward_backward(run: Run, batch, o: Optim{% if accumulate %}, window_size: int{% endif %}) -> None:
    """The loss of optimizer `o` on one {% if accumulate %}micro-{% endif %}batch, backpropagated into its
    parameters."""
    {{ forward_backward_body("run.model, batch, o.name", 'f"loss_{o.name}"', "run.scalers[o.name]", "inputs=o.params") | trim | indent(4) }}


def optimizer_step(run: Run, o: Optim) -> None:
    """Optimizer `o` applies its gradients (a natural place for gradient surgery):
    its schedule runs on its own step counter, scaled to its own LR."""
    cfg, state = run.cfg, run.state
    lr = lr_at(state.optimizer_steps[o.name], cfg, o.total_steps)
    for group in o.optimizer.param_groups:
        group["lr"] = group["initial_lr"] * lr / cfg.lr
    run.lrs[f"lr_{o.name}"] = o.optimizer.param_groups[0]["lr"]
    {{ apply_gradients("o.optimizer", "run.scalers[o.name]", "o.params", 'f"grad_norm_{o.name}"', " ({o.name})") | trim | indent(4) }}
    state.optimizer_steps[o.name] += 1


{% else %}
{% if accumulate %}
def train_step(run: Run, i: int, batch) -> bool:
    """Micro-batch i of the epoch: forward and backward; at the end of its window
    of --accumulate-steps micro-batches, the optimizer step. Returns whether it
    stepped."""
    cfg, state = run.cfg, run.state
    # the window of micro-batch i; an epoch's last window may be shorter
    start = i - i % cfg.accumulate_steps
    window_size = min(cfg.accumulate_steps, run.batches_per_epoch - start)
    last_of_window = i + 1 == start + window_size
{% if fsdp %}
    # Gradients are reduce-scattered only on the last micro-batch of a window:
    # one reduction per step, as without accumulation. The price: until then
    # every rank holds whole (unsharded) gradients of every parameter.
    run.raw_model.set_requires_gradient_sync(last_of_window)
    forward_backward(run, batch, window_size)
{% elif ddp %}
    # Gradients are all-reduced only on the last micro-batch of a window:
    # no_sync must cover the forward and the backward of the others.
    sync = last_of_window or run.world.world_size == 1
    with nullcontext() if sync else run.ddp_model.no_sync():
        forward_backward(run, batch, window_size)
{% else %}
    forward_backward(run, batch, window_size)
{% endif %}
    run.meter.samples += batch_len(batch)
    state.batch_in_epoch = i + 1
    if not last_of_window:
        return False
    optimizer_step(run)
    state.step += 1
    run.stopping = state.step >= run.total_steps
    return True
{% else %}
def train_step(run: Run, i: int, batch) -> None:
    """Batch i of the epoch: forward, backward and the optimizer step."""
    forward_backward(run, batch)
    run.meter.samples += batch_len(batch)
    run.state.batch_in_epoch = i + 1
    optimizer_step(run)
    run.state.step += 1
    run.stopping = run.state.step >= run.total_steps
{% endif %}


def forward_backward(run: Run, batch{% if accumulate %}, window_size: int{% endif %}) -> None:
    """The loss of one {% if accumulate %}micro-{% endif %}batch, backpropagated; its metrics go to the meter."""
    {{ forward_backward_body("run.model, batch", None, "run.scaler", "") | trim | indent(4) }}


def optimizer_step(run: Run) -> None:
    """Apply the gradients (a natural place for gradient surgery)."""
    cfg, state = run.cfg, run.state
{% if ddp %}
    if run.check_all_used:
        unused = [
            name
            for name, p in run.raw_model.named_parameters()
            if p.requires_grad and p.grad is None
        ]
        if unused:
            raise ContractError(
                f"model: no gradient reached {', '.join(unused)} at step "
                f"{state.step}; if some batches leave them unused, pass "
                "--find-unused-parameters"
            )
{% endif %}
    lr = lr_at(state.step, cfg, run.total_steps)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.lrs["lr"] = lr
    {{ apply_gradients("run.optimizer", "run.scaler", "run.raw_model.parameters()", '"grad_norm"', "") | trim | indent(4) }}


{% endif %}
def log_training(run: Run, epoch: int) -> None:
    """The progress line and a row of metrics.csv: the training metrics since the
    last log{% if distributed %}, averaged over the ranks{% endif %}."""
    state, meter = run.state, run.meter
{% if distributed %}
    means = meter.means(run.world)  # every rank
{% else %}
    means = meter.means()
{% endif %}
{% if autocast and clip %}
    # fp16: an overflow makes the gradient norm inf; GradScaler skips that step and
    # lowers the scale (its job, no reason to stop), so only the other metrics
    # must be finite then
    fp16 = run.amp_dtype == torch.float16
    checked = {
        k: v for k, v in means.items() if not (fp16 and k.startswith("grad_norm"))
    }
    if not all(math.isfinite(v) for v in checked.values()):
{% else %}
    if not all(math.isfinite(v) for v in means.values()):
{% endif %}
{% if distributed %}
        # every rank sees the same reduced values, so all stop together
{% endif %}
        raise FloatingPointError(
            f"non-finite training metrics at step {state.step}: {means}"
        )
    elapsed = time.perf_counter() - meter.started - meter.untimed
{% if distributed %}
    samples_per_s = meter.samples * run.world.world_size / elapsed
{% else %}
    samples_per_s = meter.samples / elapsed
{% endif %}
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
{% if amp %}
    dtype = run.amp_dtype or torch.float32
    peak_flops = gpu_peak_flops(run.device, dtype, run.cfg.tf32)
{% else %}
    peak_flops = gpu_peak_flops(run.device, torch.float32, run.cfg.tf32)
{% endif %}
    if flops_per_sample is not None and peak_flops:
{% if distributed %}
        mfu = flops_per_sample() * samples_per_s / run.world.world_size / peak_flops
{% else %}
        mfu = flops_per_sample() * samples_per_s / peak_flops
{% endif %}
        fields.append(f"mfu {100 * mfu:.1f}%")
        row["mfu"] = mfu
    if run.device.type == "cuda":
        row["peak_mem_gb"] = torch.cuda.max_memory_allocated(run.device) / 2**30
        fields.append(f"mem {row['peak_mem_gb']:.2f} GB")
        torch.cuda.reset_peak_memory_stats(run.device)
    fields.append(f"elapsed {format_duration(spent)}")
    run.progress.update(fields)
{% if debug %}
    if run.layer_norms:
        norms = {name: norm.item() for name, norm in run.layer_norms.items()}
        run.progress.print(
            "grad norms: " + ", ".join(f"{k} {v:.3g}" for k, v in norms.items())
        )
        row.update({f"grad_norm/{k}": v for k, v in norms.items()})
        run.layer_norms = {}
{% endif %}
    log_row(run, row)
    run.meter = Meter()


{% if distributed %}
{{ distributed_code.agreed_requests() }}{# distributed/train.py.jinja #}
{% endif %}
{% if slurm %}
def stop_early(run: Run, requeue: bool) -> int:
    """Save last{{ ext }} after a stop signal; requeue the job after SLURM's warning."""
{% else %}
def stop_early(run: Run) -> int:
    """Save last{{ ext }} after a stop signal, and say how to resume."""
{% endif %}
    save_checkpoint(run, "last"){% if distributed %}  # every rank{% endif %}

    last = Path(run.cfg.run_dir) / "checkpoints" / "last{{ ext }}"
    run.progress.print(f"stopped at step {run.state.step}: saved {last}")
{% if slurm %}
    if requeue:
{% if distributed %}
        if run.world.is_main:
            requeue_slurm_job()
{% else %}
        requeue_slurm_job()
{% endif %}
        return 0
{% endif %}
    run.progress.print(
        f"resume with: python train.py --resume auto --run-dir {run.cfg.run_dir}"
    )
    return 130


def end_epoch(run: Run, epoch: int) -> None:
    """After the epoch's last step (or the run's): validation{% if early_stopping %}, early
    stopping{% endif %} and last{{ ext }}."""
    cfg, state = run.cfg, run.state
    t0 = time.perf_counter()
    if state.batch_in_epoch >= run.batches_per_epoch:
        state.epoch, state.batch_in_epoch = epoch + 1, 0
    if (epoch + 1) % cfg.val_every_epochs == 0 or run.stopping:
        validate(run){% if distributed %}  # every rank{% endif %}

{% if early_stopping %}
{{ early_stopping_code.end_epoch() }}{# early-stopping/train.py.jinja #}
{% endif %}
    save_checkpoint(run, "last"){% if distributed %}  # every rank{% endif %}

    run.meter.untimed += time.perf_counter() - t0


@torch.no_grad()
def evaluate(run: Run, split: str, loader: DataLoader, max_batches: int) -> dict:
{% if distributed %}
    """The mean of each metric over the samples seen by all ranks, in eval mode,
    named after the split (val_loss).

    Metrics are summed as value x batch size with the sample count, then divided:
    a mean of per-rank means would weight a rank's short last batch wrongly.
    """
{% else %}
    """The mean of each metric over the samples seen, in eval mode, named after
    the split (val_loss); a short last batch counts for its samples only."""
{% endif %}
    model, device = run.raw_model, run.device
{% if distributed %}
    sync_buffers(model, run.world)  # every rank
{% endif %}
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = torch.zeros((), device=device)
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        batch = move_to(batch, device)
        n = batch_len(batch)
{% if multi_optim %}
        # the metrics of every optimizer's loss (their names must differ)
        metrics = {}
        for name in run.optimizers:
{% if autocast %}
            with run.autocast:
                result = compute_loss(model, batch, name)
{% else %}
            result = compute_loss(model, batch, name)
{% endif %}
            metrics.update(checked_loss(result, f"loss_{name}")[1])
        # their sum: the one loss that every model with these optimizers has
        metrics["loss"] = sum(metrics[f"loss_{name}"] for name in run.optimizers)
{% else %}
{% if autocast %}
        with run.autocast:
            result = compute_loss(model, batch)
{% else %}
        result = compute_loss(model, batch)
{% endif %}
        _, metrics = checked_loss(result)
{% endif %}
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0) + value.detach().float() * n
        count += n
    model.train(was_training)
    names = sorted(sums)
    totals = torch.stack([sums[k] for k in names] + [count])
{% if distributed %}
    if run.world.world_size > 1:
        # every rank reaches this collective: evaluation has no early exits
        dist.all_reduce(totals)
{% endif %}
    *totals, seen = totals.tolist()
    return {f"{split}_{k}": total / max(seen, 1) for k, total in zip(names, totals)}


def validate(run: Run) -> None:
{% if distributed %}
    """Validate; log it, keep best.pt{% if early_stopping %} and count validations without improvement{% endif %}.

    Every rank calls it: evaluation all-reduces, and saving best.pt gathers.
    """
{% elif early_stopping %}
    """Validate; log it, keep best.pt and count validations without improvement."""
{% else %}
    """Validate; log it and keep best.pt."""
{% endif %}
    cfg, state = run.cfg, run.state
    metrics = {{ evaluate }}(run, "val", run.val_loader, run.val_batches)
    run.progress.print(
        f"step {state.step} | validation | "
        + " | ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    )
    epoch = state.epoch_of_step()
    log_row(run, {"step": state.step, "epoch": epoch, "split": "val", **metrics})
    value = metrics[cfg.monitor_metric]
    sign = 1 if cfg.monitor_mode == "max" else -1
{% if early_stopping %}
{{ early_stopping_code.validate() }}{# early-stopping/train.py.jinja #}
{% endif %}
    if state.best is None or sign * (value - state.best) > 0:
        state.best = value
{% if fsdp %}
        save_full_checkpoint(run, "best")  # every rank: gathers the shards
{% else %}
        save_checkpoint(run, "best"){% if distributed %}  # every rank, though only one writes{% endif %}

{% endif %}


{% if fsdp %}
{{ fsdp_code.saving() }}{# fsdp/train.py.jinja #}
{% else %}
def save_checkpoint(run: Run, name: str) -> None:
{% if distributed %}
    """checkpoints/<name>.pt: every rank calls it (all ranks' RNG states are
    gathered, a collective), rank 0 writes."""
    rng = [rng_state(run.device)]
    if run.world.world_size > 1:
        rng = gather_from_ranks(rng[0], run.world, run.device)
    if not run.writes:
        return
{% else %}
    """checkpoints/<name>.pt (nothing under --fast-dev-run)."""
    if not run.writes:
        return
    rng = [rng_state(run.device)]  # one per process, as in every feature set
{% endif %}
    checkpoint = {
        "model": run.raw_model.state_dict(),
{% if multi_optim %}
        # each optimizer's step counter (its schedule's position) is in train_state
        "optimizers": {
            o.name: o.optimizer.state_dict() for o in run.optimizers.values()
        },
{% if autocast %}
        "scalers": {key: scaler.state_dict() for key, scaler in run.scalers.items()},
{% endif %}
{% else %}
        "optimizer": run.optimizer.state_dict(),
{% if autocast %}
        "scaler": run.scaler.state_dict(),
{% endif %}
{% endif %}
        "format": CHECKPOINT_FORMAT,
        "train_state": dataclasses.asdict(run.state),
        "rng": rng,
{% if ema %}
{{ ema_code.checkpoint() }}{# ema/train.py.jinja #}
{% endif %}
        "config": dataclasses.asdict(run.cfg),
    }
    atomic_save(checkpoint, Path(run.cfg.run_dir) / "checkpoints" / f"{name}.pt")


{% endif %}
def finish(run: Run) -> None:
    """Validate and test the best checkpoint; write summary.json."""
    cfg, state = run.cfg, run.state
    best_path = Path(cfg.run_dir) / "checkpoints" / "best.pt"
{% if ema %}
{{ ema_code.finish() }}{# ema/train.py.jinja #}
{% elif fsdp %}
    save_full_checkpoint(run, "final")  # every rank: gathers the shards
    # every rank sees best.pt (resuming from shards needs a shared file system
    # anyway); rank 0 reads it, and every rank takes its shards of it
    if best_path.exists() and not cfg.fast_dev_run:
        load_full_weights(run, best_path)  # every rank
{% elif distributed %}
    # rank 0 wrote best.pt and reads it: on other nodes the run directory may be
    # a stale copy, or not shared at all; the other ranks get its weights
    if run.world.is_main and best_path.exists() and not cfg.fast_dev_run:
        run.raw_model.load_state_dict(load_checkpoint(best_path)["model"])
    if run.world.world_size > 1:
        for tensor in run.raw_model.state_dict().values():
            dist.broadcast(tensor, src=0)  # every rank, in the same order
{% else %}
    if best_path.exists() and not cfg.fast_dev_run:
        run.raw_model.load_state_dict(load_checkpoint(best_path)["model"])
{% endif %}
    val_metrics = {{ evaluate }}(run, "val", run.val_loader, run.val_batches)
{% if distributed %}
    test_loader = make_loader(run.test_set, cfg, run.world, run.device, shuffle=False)
{% else %}
    test_loader = make_loader(run.test_set, cfg, run.device, shuffle=False)
{% endif %}
    test_batches = fraction_or_count(cfg.limit_test_batches, len(test_loader))
    test_metrics = {{ evaluate }}(run, "test", test_loader, test_batches)
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
{% if tensorboard %}
        if run.tb is not None:
            run.tb.close()
{% endif %}
{% if wandb %}
{{ wandb_code.finish() }}{# wandb/train.py.jinja #}
{% endif %}
{% if mlflow %}
{{ mlflow_code.finish() }}{# mlflow/train.py.jinja #}
{% endif %}


{% if ema %}
{{ ema_code.evaluation() }}{# ema/train.py.jinja #}
{% endif %}
{% if tensorboard %}
{{ tensorboard_code.functions() }}{# tensorboard/train.py.jinja #}
{% endif %}
{% if wandb or mlflow %}
{{ trackers_code.functions() }}{# trackers/train.py.jinja #}
{% endif %}
{% if wandb %}
{{ wandb_code.functions() }}{# wandb/train.py.jinja #}
{% endif %}
{% if mlflow %}
{{ mlflow_code.functions() }}{# mlflow/train.py.jinja #}
{% endif %}
if __name__ == "__main__":
{% if fsdp %}
    exit_code = main()
    # torch's DTensor caches hold the process group, and with it gloo's worker
    # threads, until Python shuts down; a worker that frees its last tensor during
    # that shutdown aborts the process ("terminate called without an active
    # exception") after a run that went well. Every file is closed and the
    # process group destroyed by now: leave without Python's shutdown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
{% else %}
    sys.exit(main())
{% endif %}
