"""Train demo: an explicit PyTorch training loop you own.

The model and data live in model.py and data.py; this file is the loop. Every
option below is a field of `Config` and a command-line flag.

Run on one process (CPU, or the first GPU):

    python train.py
    python train.py --max-epochs 5 --lr 1e-3 --run-dir runs/exp1
    python train.py --resume auto --run-dir runs/exp1   # continue where it stopped
    python train.py --fast-dev-run                      # two batches, writes nothing
"""

import dataclasses
import json
import math
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Subset

from train_utils import (
    ContractError,
    CsvLog,
    EpochSampler,
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
    from model import build_model, compute_loss
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
    seed: int = option(1337, "seeds model init, shuffling and dropout")
    device: str = option("auto", "auto | cpu | cuda | cuda:N | mps")
    deterministic: bool = option(False, "use deterministic algorithms (slower on GPU)")
    tf32: bool = option(True, "CUDA: float32 matmuls on TF32 tensor cores")
    # length of training: whichever limit comes first ends it
    max_epochs: int = option(10, "stop after this many epochs")
    max_steps: int = option(-1, "stop after this many optimizer steps (-1: no limit)")
    min_epochs: int = option(0, "train at least this many epochs")
    # optimization
    batch_size: int = option(256, "samples per batch")
    lr: float = option(3e-3, "peak learning rate (AdamW)")
    min_lr: float = option(3e-4, "learning rate at the end of the cosine decay")
    schedule: str = option(
        "cosine",
        "cosine (linear warmup, then cosine to min_lr) | constant (warmup, then lr)",
    )
    warmup_steps: int = option(100, "optimizer steps of linear warmup")
    weight_decay: float = option(0.1, "AdamW decay of matrices (biases, norms: none)")
    compile_mode: str = option(
        "default",
        "torch.compile mode: default | reduce-overhead | max-autotune "
        "| max-autotune-no-cudagraphs",
    )
    # checkpoints
    ckpt_every: int = option(500, "keep step_N.pt every N optimizer steps (0: off)")
    keep_last: int = option(3, "step_N.pt kept (last.pt and best.pt always)")
    # val_loss: every model has it (the demo's val_acc is worth a look too)
    monitor_metric: str = option("val_loss", "validation metric that picks best.pt")
    monitor_mode: str = option("min", "min | max: is a lower or higher value better")
    # validation and test
    val_every_epochs: int = option(1, "validate at the end of every N-th epoch")
    val_check_interval: float = option(
        1.0,
        "also validate inside an epoch: a fraction of it (<1) "
        "or every N optimizer steps (>1)",
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
    # logging
    log_every: int = option(50, "print/log training metrics every N optimizer steps")
    num_workers: int = option(0, "DataLoader worker processes")
    # model and data (read by model.py / data.py; add your own fields here)
    n_digits: int = option(3, "digits per operand of the addition task")
    n_train: int = option(40000, "training problems")
    n_val: int = option(2000, "validation problems")
    n_test: int = option(2000, "test problems")
    data_seed: int = option(0, "seed of the problem generator (fixed data across runs)")
    d_model: int = option(128, "transformer width")
    n_layers: int = option(2, "transformer blocks")
    n_heads: int = option(4, "attention heads")
    dropout: float = option(0.0, "dropout probability")


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
    at_least_1 += " n_train n_val n_test d_model n_layers n_heads"
    at_least_0 = "min_epochs warmup_steps ckpt_every keep_last sanity_val_steps"
    at_least_0 += " overfit_batches num_workers min_lr weight_decay"
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
        ("lr", lambda v: v > 1e30, "<= 1e30"),
        ("lr", lambda v: v < 0, ">= 0"),
        ("dropout", lambda v: not 0 <= v < 1, "in [0, 1)"),
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
    if cfg.schedule not in ("cosine", "constant"):
        problems.append(f"--schedule must be cosine or constant, not {cfg.schedule!r}")
    if cfg.monitor_mode not in ("min", "max"):
        problems.append(f"--monitor-mode must be min or max, not {cfg.monitor_mode!r}")
    if not cfg.run_dir:
        problems.append("--run-dir must not be empty")
    elif problem := run_dir_problem(cfg.run_dir):
        problems.append(problem)
    # torch.compile would refuse any other mode only when the model is compiled
    modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    if cfg.compile_mode not in modes:
        problems.append(
            f"--compile-mode must be {', '.join(modes[:-1])} or {modes[-1]}, "
            f"not {cfg.compile_mode!r}"
        )
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
# data: shuffling is a pure function of (seed, epoch), so a resumed run sees the
# same batches as an uninterrupted one


def make_loader(
    dataset: Dataset,
    cfg: Config,
    device: torch.device,
    shuffle: bool,
    epoch: int = 0,
    skip_batches: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    skip = skip_batches * cfg.batch_size
    sampler = EpochSampler(len(dataset), shuffle, cfg.seed, epoch, skip)
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
    # On CUDA the fused kernel: one launch for all parameters; on a CPU the
    # multi-tensor (foreach) kernels, faster than a loop.
    # Any torch.optim optimizer imports torch._dynamo when built (seconds on a
    # slow CPU); nothing avoids it.
    on_cuda = any(p.is_cuda for p in params)
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=(0.9, 0.95), foreach=not on_cuda, fused=on_cuda
    )


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
    "optimizer",
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


def load_model(path: str | os.PathLike, device: str = "cpu") -> torch.nn.Module:
    """Rebuild the trained model from a checkpoint, for inference."""
    checkpoint = upgrade_checkpoint(load_checkpoint(Path(path)), Path(path))
    model = build_model(Config(**checkpoint["config"]))
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval()


# -----------------------------------------------------------------------------
# logging


def rerun_command(cfg: Config) -> str:
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
    return shlex.join(["python", "train.py", *args])


# -----------------------------------------------------------------------------
# signals: the handlers only note a request; the loop acts on it between steps


class Requests:
    """Set by the signal handlers, acted on by the loop between steps."""

    stop = False


def request_stop(signum, frame) -> None:
    Requests.stop = True


# -----------------------------------------------------------------------------
# the run: train() is the outline, the functions after it are its steps, and
# `Run` is everything they share


@dataclass
class TrainState:
    """Everything about progress that a checkpoint must restore."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # current epoch
    batch_in_epoch: int = 0  # batches of this epoch already trained on
    best: float | None = None  # best value of cfg.monitor_metric so far

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

    def means(self) -> dict[str, float]:
        """Each metric's mean over the values it was given."""
        names = sorted(self.sums)
        totals = torch.stack([self.sums[k] for k in names])
        # .tolist(): the one host sync of the training loop, once per log
        return {k: v / self.counts[k] for k, v in zip(names, totals.tolist())}


@dataclass
class Run:
    """What the steps of one run share: set_up() builds it, train() hands it on."""

    cfg: Config
    device: torch.device
    progress: Progress
    writes: bool  # checkpoints and logs are written (not under --fast-dev-run)
    command: str  # the command that repeats this run (command.txt)
    raw_model: torch.nn.Module  # plain weights: checkpoints and evaluation
    # what trains: raw_model, compiled
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    train_set: Dataset
    val_loader: DataLoader
    val_batches: int
    test_set: Dataset
    # the length of training, in optimizer steps
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    val_interval: int  # also validate every N steps inside an epoch (0: never)
    drop_last: bool  # the training loader drops an epoch's short last batch
    state: TrainState
    resumed: bool = False
    stopping: bool = False  # the last step is done
    csv: CsvLog | None = None  # metrics.csv
    meter: Meter = field(default_factory=Meter)
    lrs: dict[str, float] = field(default_factory=dict)  # the latest LRs, logged
    started: float = 0.0  # when training started (for the ETA)
    start_step: int = 0


def main(argv=None) -> int:
    cfg = parse_config(argv)
    try:
        return train(cfg, pick_device(cfg.device))
    except ContractError as exc:
        sys.exit(str(exc))  # a mistake in model.py or data.py: one line says it


def train(cfg: Config, device: torch.device) -> int:
    """The outline of a run; each step is a function below."""
    run = set_up(cfg, device)
    resume(run)
    open_logs(run)
    sanity_check(run)

    run.model.train()
    run.started, run.start_step = time.perf_counter(), run.state.step
    run.meter = Meter()  # samples/s counts from here
    run.stopping = run.state.step >= run.total_steps
    while not run.stopping and run.state.epoch < cfg.max_epochs:
        exit_code = train_epoch(run)
        if exit_code is not None:
            return exit_code  # a signal stopped it; last.pt resumes it
    finish(run)
    return 0


def set_up(cfg: Config, device: torch.device) -> Run:
    """Everything before the first step: signals, seeds, data, model, optimizer,
    and the length of training."""
    progress = Progress()
    command = rerun_command(cfg)  # before --fast-dev-run changes cfg below
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    if device.type == "cuda":
        # TF32 keeps float32's range with a 10-bit mantissa: several times faster
        # matmuls, and training is rarely sensitive to it (--no-tf32 if yours is)
        torch.set_float32_matmul_precision("high" if cfg.tf32 else "highest")
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

    seed_everything(cfg.seed)
    train_set, val_set, test_set = checked_datasets(build_datasets(cfg))
    raw_model = build_model(cfg).to(device)
    optimizer = build_optimizer(raw_model, cfg)

    if cfg.overfit_batches:
        # the same few batches every epoch, for training and validation
        n_samples = cfg.overfit_batches * cfg.batch_size
        train_set = val_set = Subset(train_set, range(min(len(train_set), n_samples)))
    elif cfg.fast_dev_run:
        cfg.limit_train_batches = cfg.limit_val_batches = cfg.limit_test_batches = 2
        cfg.max_epochs, cfg.sanity_val_steps = 1, 0

    # checkpoints always come from raw_model: no "_orig_mod." prefixes
    model = torch.compile(raw_model, mode=cfg.compile_mode)

    # Only full batches, one shape for torch.compile: the training loader drops
    # an epoch's short last batch (unless there is no full batch: then the one
    # short batch is the only shape)
    per_process = len(train_set)
    drop_last = per_process >= cfg.batch_size
    full_batches = per_process // cfg.batch_size if drop_last else min(1, per_process)
    batches_per_epoch = fraction_or_count(cfg.limit_train_batches, full_batches)
    steps_per_epoch = batches_per_epoch
    total_steps = cfg.max_epochs * steps_per_epoch
    if cfg.max_steps > 0:
        total_steps = min(total_steps, cfg.max_steps)
    if cfg.val_check_interval > 1:
        val_interval = int(cfg.val_check_interval)
    elif cfg.val_check_interval < 1:
        val_interval = max(1, round(cfg.val_check_interval * steps_per_epoch))
    else:
        val_interval = 0  # only at the end of epochs
    val_loader = make_loader(val_set, cfg, device, shuffle=False)
    return Run(
        cfg=cfg,
        device=device,
        progress=progress,
        writes=not cfg.fast_dev_run,
        command=command,
        raw_model=raw_model,
        model=model,
        optimizer=optimizer,
        train_set=train_set,
        val_loader=val_loader,
        val_batches=fraction_or_count(cfg.limit_val_batches, len(val_loader)),
        test_set=test_set,
        batches_per_epoch=batches_per_epoch,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        val_interval=val_interval,
        drop_last=drop_last,
        state=TrainState(),
    )


def resume(run: Run) -> None:
    """Continue from --resume's checkpoint ('auto': the newest valid one in
    run_dir): weights, optimizer, progress and RNG state."""
    cfg = run.cfg
    ckpt_dir = Path(cfg.run_dir) / "checkpoints"
    resume_path = Path(cfg.resume) if cfg.resume not in ("", "auto") else None
    if cfg.resume == "auto":
        resume_path = find_resumable(Path(cfg.run_dir))
        if resume_path is None:
            run.progress.print(
                f"resume: no checkpoint in {ckpt_dir}; starting from scratch"
            )
    if resume_path is None:
        return
    checkpoint = upgrade_checkpoint(load_resumable(resume_path), resume_path)
    if "optimizer" not in checkpoint:
        sys.exit(
            f"--resume {resume_path}: saved with an optimizer per part of the model, "
            "whose states do not make one: begin a new --run-dir (load_model() "
            "rebuilds its weights)"
        )
    notes = []  # what this run has that the checkpoint lacks, and the reverse
    run.raw_model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
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
    if len(checkpoint["rng"]) == 1:
        set_rng_state(checkpoint["rng"][0], run.device)
    else:
        run.progress.print(
            f"resume: saved by {len(checkpoint['rng'])} processes, running one: "
            "RNG streams start afresh"
        )
    state = run.state
    run.progress.print(
        f"resume: {resume_path} at step {state.step} "
        f"(epoch {state.epoch}, batch {state.batch_in_epoch})"
    )


def open_logs(run: Run) -> None:
    """config.json, command.txt, a snapshot of the code, metrics.csv (continued
    after the resumed step), and what is about to train."""
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
    progress.print(f"rerun with: {run.command}")
    progress.print(model_summary(run.raw_model))
    progress.print(
        f"device {run.device}; "
        f"{run.steps_per_epoch} optimizer steps per epoch, {run.total_steps} in all"
    )


def log_row(run: Run, row: dict) -> None:
    """One row of metrics.csv."""
    if run.csv is not None:
        run.csv.log(row)


def sanity_check(run: Run) -> None:
    """A few validation batches before training (one when --sanity-val-steps is 0).

    Catches evaluation bugs, and a --monitor-metric that names nothing, before
    hours of training. Evaluation draws no random numbers, so the training RNG
    stream is untouched.
    """
    cfg = run.cfg
    sanity = evaluate(run, "val", run.val_loader, cfg.sanity_val_steps or 1)
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
        train_step(run, i, batch)
        if state.step % cfg.log_every == 0 or run.stopping:
            log_training(run, epoch)

        # validation inside the epoch, periodic checkpoints, stop requests
        end_of_epoch = state.batch_in_epoch >= run.batches_per_epoch
        t0 = time.perf_counter()
        if run.val_interval and state.step % run.val_interval == 0 and not end_of_epoch:
            validate(run)
        if cfg.ckpt_every and state.step % cfg.ckpt_every == 0:
            save_checkpoint(run, f"step_{state.step:08d}")
            if run.writes:
                prune_checkpoints(Path(cfg.run_dir) / "checkpoints", cfg.keep_last)
        run.meter.untimed += time.perf_counter() - t0
        if Requests.stop and not run.stopping:
            return stop_early(run)
        if run.stopping:
            break
    end_epoch(run, epoch)
    return None


def train_step(run: Run, i: int, batch) -> None:
    """Batch i of the epoch: forward, backward and the optimizer step."""
    forward_backward(run, batch)
    run.meter.samples += batch_len(batch)
    run.state.batch_in_epoch = i + 1
    optimizer_step(run)
    run.state.step += 1
    run.stopping = run.state.step >= run.total_steps


def forward_backward(run: Run, batch) -> None:
    """The loss of one batch, backpropagated; its metrics go to the meter."""
    result = compute_loss(run.model, batch)
    loss, metrics = checked_loss(result)
    loss.backward()
    run.meter.add(metrics)


def optimizer_step(run: Run) -> None:
    """Apply the gradients (a natural place for gradient surgery)."""
    cfg, state = run.cfg, run.state
    lr = lr_at(state.step, cfg, run.total_steps)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.lrs["lr"] = lr
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)


def log_training(run: Run, epoch: int) -> None:
    """The progress line and a row of metrics.csv: the training metrics since the
    last log."""
    state, meter = run.state, run.meter
    means = meter.means()
    if not all(math.isfinite(v) for v in means.values()):
        raise FloatingPointError(
            f"non-finite training metrics at step {state.step}: {means}"
        )
    elapsed = time.perf_counter() - meter.started - meter.untimed
    samples_per_s = meter.samples / elapsed
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
    peak_flops = gpu_peak_flops(run.device, torch.float32, run.cfg.tf32)
    if flops_per_sample is not None and peak_flops:
        mfu = flops_per_sample() * samples_per_s / peak_flops
        fields.append(f"mfu {100 * mfu:.1f}%")
        row["mfu"] = mfu
    if run.device.type == "cuda":
        row["peak_mem_gb"] = torch.cuda.max_memory_allocated(run.device) / 2**30
        fields.append(f"mem {row['peak_mem_gb']:.2f} GB")
        torch.cuda.reset_peak_memory_stats(run.device)
    fields.append(f"elapsed {format_duration(spent)}")
    run.progress.update(fields)
    log_row(run, row)
    run.meter = Meter()


def stop_early(run: Run) -> int:
    """Save last.pt after a stop signal, and say how to resume."""
    save_checkpoint(run, "last")
    last = Path(run.cfg.run_dir) / "checkpoints" / "last.pt"
    run.progress.print(f"stopped at step {run.state.step}: saved {last}")
    run.progress.print(
        f"resume with: python train.py --resume auto --run-dir {run.cfg.run_dir}"
    )
    return 130


def end_epoch(run: Run, epoch: int) -> None:
    """After the epoch's last step (or the run's): validation and last.pt."""
    cfg, state = run.cfg, run.state
    t0 = time.perf_counter()
    if state.batch_in_epoch >= run.batches_per_epoch:
        state.epoch, state.batch_in_epoch = epoch + 1, 0
    if (epoch + 1) % cfg.val_every_epochs == 0 or run.stopping:
        validate(run)
    save_checkpoint(run, "last")
    run.meter.untimed += time.perf_counter() - t0


@torch.no_grad()
def evaluate(run: Run, split: str, loader: DataLoader, max_batches: int) -> dict:
    """The mean of each metric over the samples seen, in eval mode, named after
    the split (val_loss); a short last batch counts for its samples only."""
    model, device = run.raw_model, run.device
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = torch.zeros((), device=device)
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        batch = move_to(batch, device)
        n = batch_len(batch)
        result = compute_loss(model, batch)
        _, metrics = checked_loss(result)
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0) + value.detach().float() * n
        count += n
    model.train(was_training)
    names = sorted(sums)
    totals = torch.stack([sums[k] for k in names] + [count])
    *totals, seen = totals.tolist()
    return {f"{split}_{k}": total / max(seen, 1) for k, total in zip(names, totals)}


def validate(run: Run) -> None:
    """Validate; log it and keep best.pt."""
    cfg, state = run.cfg, run.state
    metrics = evaluate(run, "val", run.val_loader, run.val_batches)
    run.progress.print(
        f"step {state.step} | validation | "
        + " | ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    )
    epoch = state.epoch_of_step()
    log_row(run, {"step": state.step, "epoch": epoch, "split": "val", **metrics})
    value = metrics[cfg.monitor_metric]
    sign = 1 if cfg.monitor_mode == "max" else -1
    if state.best is None or sign * (value - state.best) > 0:
        state.best = value
        save_checkpoint(run, "best")


def save_checkpoint(run: Run, name: str) -> None:
    """checkpoints/<name>.pt (nothing under --fast-dev-run)."""
    if not run.writes:
        return
    rng = [rng_state(run.device)]  # one per process, as in every feature set
    checkpoint = {
        "model": run.raw_model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "format": CHECKPOINT_FORMAT,
        "train_state": dataclasses.asdict(run.state),
        "rng": rng,
        "config": dataclasses.asdict(run.cfg),
    }
    atomic_save(checkpoint, Path(run.cfg.run_dir) / "checkpoints" / f"{name}.pt")


def finish(run: Run) -> None:
    """Validate and test the best checkpoint; write summary.json."""
    cfg, state = run.cfg, run.state
    best_path = Path(cfg.run_dir) / "checkpoints" / "best.pt"
    if best_path.exists() and not cfg.fast_dev_run:
        run.raw_model.load_state_dict(load_checkpoint(best_path)["model"])
    val_metrics = evaluate(run, "val", run.val_loader, run.val_batches)
    test_loader = make_loader(run.test_set, cfg, run.device, shuffle=False)
    test_batches = fraction_or_count(cfg.limit_test_batches, len(test_loader))
    test_metrics = evaluate(run, "test", test_loader, test_batches)
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


if __name__ == "__main__":
    sys.exit(main())
