"""The helpers of train.py: how things are done, where train.py says what is done
and when. Nothing here knows the fields of Config or the shape of the loop, so
these rarely need an edit; train.py is the file to read and change.

- options: a dataclass as command-line flags, with --config FILE
- devices and random state
- data: the epoch's sampler, batches onto the device
- the contract with model.py and data.py: a mistake there is one line, at once
- checkpoint files: atomic writes, finding and loading the one to resume
- the output of a run: metrics.csv, the progress line, the code snapshot
"""

import argparse
import csv
import dataclasses
import importlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler, Subset, TensorDataset

# -----------------------------------------------------------------------------
# options


def fraction_or_count(value: float, total: int) -> int:
    """Lightning-style limits: <= 1.0 is a fraction of `total`, > 1 a count."""
    n = int(total * value) if value <= 1.0 else int(value)
    return max(1, min(total, n)) if total else 0


class OptionParser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one line: `train.py: error: ...` and
    exit status 2, without the usage text that would bury it (--help shows that)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def run_dir_problem(run_dir: str) -> str | None:
    """What stops `run_dir` from being created and written, or None: the nearest
    part of it that exists must be a directory that this process may write."""
    path = Path(run_dir).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    if not path.is_dir():
        return f"--run-dir {run_dir}: {path} is not a directory"
    try:
        # a file that no directory entry names: nothing is left behind
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return f"--run-dir {run_dir}: {path} cannot be written ({exc.strerror})"
    return None


def field_type(f: dataclasses.Field) -> type:
    """A dataclass field's type (a class, also where annotations are strings)."""
    return {"int": int, "float": float, "str": str, "bool": bool}.get(f.type, f.type)


def checked_options(
    parser: argparse.ArgumentParser, options: dict, config_class, source: str
) -> dict:
    """`options` (a run's config.json), each checked to be a field of
    config_class of its type: argparse converts only what the command line gives."""
    if not isinstance(options, dict):
        parser.error(f"{source}: not a JSON object of options")
    fields = {f.name: field_type(f) for f in dataclasses.fields(config_class)}
    checked = {}
    for name, value in options.items():
        kind = fields.get(name)
        if kind is None:
            parser.error(f"{source}: {name} is not an option of this project")
        # JSON writes 3.0 as 3.0 and 3 as 3: an int is a fine float, not the reverse
        if kind is float and type(value) is int:
            value = float(value)
        elif type(value) is not kind:
            parser.error(f"{source}: {name} must be {kind.__name__}, not {value!r}")
        checked[name] = value
    return checked


def add_option(parser: argparse.ArgumentParser, name: str, f: dataclasses.Field, **kw):
    """The dataclass field f as the flag of `name` (a bool: --flag / --no-flag)."""
    flag = "--" + name.replace("_", "-")
    if field_type(f) is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
    else:
        parser.add_argument(flag, type=field_type(f), **kw)


def parse_dataclass(
    config_class,
    argv,
    description: str,
    renamed: dict[str, str] | None = None,
    defaults: dict | None = None,
) -> tuple[object, argparse.ArgumentParser]:
    """An instance of the dataclass `config_class` from the command line, one flag
    per field (max_epochs: --max-epochs; a bool: --tf32 / --no-tf32), and the
    parser, whose error() reports a bad value in one line and exits with status 2.

    renamed: {old field name: new field name}; the old flag still sets the new
    field (hidden from --help). defaults: options that replace the fields'
    defaults (a resumed run's own). --config FILE, a run's config.json, gives the
    defaults too: flags given with it override them.
    """
    # No abbreviations: `--lr` must never quietly stand for another option.
    parser = OptionParser(description=description, allow_abbrev=False)
    parser.add_argument(
        "--config",
        default="",
        help="a run's config.json: its options are the defaults, flags override them",
    )
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    for f in fields.values():
        text = f.metadata["help"]
        if field_type(f) is not bool:
            text += " (default: %(default)s)"
        add_option(parser, f.name, f, default=f.default, help=text)
    for old, new in (renamed or {}).items():
        hidden = {"default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
        add_option(parser, old, fields[new], dest=new, **hidden)
    if defaults:
        source = "the resumed run's config.json"
        parser.set_defaults(**checked_options(parser, defaults, config_class, source))
    # --config next: the file's options become the defaults, so that the flags
    # given with it override them
    config_path = parser.parse_known_args(argv)[0].config
    if config_path:
        try:
            saved = json.loads(Path(config_path).read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"--config {config_path}: {exc}")
        source = f"--config {config_path}"
        parser.set_defaults(**checked_options(parser, saved, config_class, source))
    args = vars(parser.parse_args(argv))
    del args["config"]  # where the options came from is not one of them
    return config_class(**args), parser


# -----------------------------------------------------------------------------
# devices and random state


def pick_device(name: str) -> torch.device:
    """'auto' takes the first GPU, then Apple's MPS, then the CPU.

    A GPU becomes the current CUDA device: kernels and caches that name no index
    go to it, also when it is not cuda:0.
    """
    if name == "auto" and not torch.cuda.is_available():
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    device = torch.device("cuda" if name == "auto" else name)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", 0)
        torch.cuda.set_device(device)
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state(device: torch.device) -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        # the GPU this process trains on only
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# -----------------------------------------------------------------------------
# data: shuffling is a pure function of (seed, epoch), so a resumed run sees the
# same batches as an uninterrupted one


class EpochSampler(Sampler):
    """The indices of one epoch, from sample `skip` on: with shuffle in the order
    of torch.randperm seeded with seed + epoch, otherwise in order."""

    def __init__(
        self, n: int, shuffle: bool, seed: int = 0, epoch: int = 0, skip: int = 0
    ):
        if shuffle:
            generator = torch.Generator().manual_seed(seed + epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        self.indices = order[skip:].tolist()

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def indexes_batches(dataset: Dataset) -> bool:
    """A TensorDataset (also inside a Subset) returns a whole batch for a list of
    indices: one indexing per batch, not batch_size __getitem__ calls and a collate."""
    if isinstance(dataset, Subset):
        return indexes_batches(dataset.dataset)
    return isinstance(dataset, TensorDataset)


def move_to(batch, device: torch.device):
    """Tensors (also inside tuples, lists and dicts) onto `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


def batch_len(batch) -> int:
    """Samples in a batch: the length of its first tensor."""
    while not isinstance(batch, torch.Tensor):
        batch = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
    return len(batch)


# -----------------------------------------------------------------------------
# the contract with model.py and data.py: a mistake there is one line, at once


class ContractError(Exception):
    """model.py or data.py does not return what train.py relies on (see README)."""


# what train.py imports from model.py and data.py, with what each must do
CONTRACT = {
    "data": {"build_datasets": "build_datasets(cfg) -> (train, val, test) datasets"},
    "model": {
        "build_model": "build_model(cfg) -> a torch.nn.Module",
        "compute_loss": "compute_loss(model, batch) -> (loss, metrics)",
    },
}


def contract_gaps(error: ImportError) -> str:
    """One line naming all that model.py and data.py lack of CONTRACT, for the
    ImportError of train.py's import of them (a model.py or data.py of your own,
    written before train.py). Any other ImportError, such as a package that your
    files import and that is not installed, is raised again as it is."""
    if error.name not in CONTRACT:
        raise error
    gaps = []
    for module_name, wanted in CONTRACT.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as missing:
            if missing.name != module_name:
                raise
            gaps.append(f"there is no {module_name}.py")
            continue
        lacking = [text for name, text in wanted.items() if not hasattr(module, name)]
        if lacking:
            gaps.append(f"{module_name}.py lacks {' and '.join(lacking)}")
    if not gaps:
        raise error
    return "not ready to train: " + "; ".join(gaps) + " (see the contract in README.md)"


def describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def checked_datasets(datasets) -> tuple[Dataset, Dataset, Dataset]:
    """build_datasets' (train, val, test): three map-style datasets."""
    if not isinstance(datasets, (tuple, list)) or len(datasets) != 3:
        raise ContractError(
            "data.build_datasets must return (train, val, test) datasets, "
            f"not {describe(datasets)}"
        )
    for split, dataset in zip(("train", "val", "test"), datasets):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise ContractError(
                f"data.build_datasets: the {split} dataset ({describe(dataset)}) "
                "needs __len__ and __getitem__, as a map-style Dataset has"
            )
    return tuple(datasets)


def checked_loss(result, loss_name: str = "loss") -> tuple[torch.Tensor, dict]:
    """compute_loss's (loss, metrics), the metrics as detached scalar tensors,
    the loss among them as `loss_name`: every model reports its loss."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise ContractError(
            f"model.compute_loss must return (loss, metrics), not {describe(result)}"
        )
    loss, metrics = result
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise ContractError(
            "model.compute_loss: the loss must be a scalar tensor (the batch mean), "
            f"not {describe(loss)}"
        )
    if not isinstance(metrics, dict):
        raise ContractError(
            f"model.compute_loss: the metrics must be a dict, not {describe(metrics)}"
        )
    checked = {}
    for name, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # filled on the device: torch.tensor(value, device=...) would copy
            # from the host, and wait for the GPU, at every step
            value = torch.full((), float(value), device=loss.device)
        elif not isinstance(value, torch.Tensor) or value.dim() != 0:
            raise ContractError(
                f"model.compute_loss: metric {name!r} must be a number or a scalar "
                f"tensor, not {describe(value)}"
            )
        checked[name] = value.detach()
    checked[loss_name] = loss.detach()
    return loss, checked


# -----------------------------------------------------------------------------
# checkpoint files: atomic writes, plain weights


def atomic_save(obj, path: Path) -> None:
    """Write to a temporary file, then rename: a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    # mmap: tensors are read from the file when used, so that looking up a
    # checkpoint's step reads a few bytes, not the whole model
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def find_resumable(run_dir: Path) -> Path | None:
    """The newest checkpoint in run_dir that loads; truncated files are skipped."""
    ckpt_dir = run_dir / "checkpoints"
    if any(ckpt_dir.glob("*/meta.pt")):  # a run begun sharded: its state in shards
        sys.exit(
            f"--resume auto: {ckpt_dir} holds directories of shards, of a run begun "
            "sharded, which this train.py (one file a checkpoint) cannot continue: "
            "finish the run sharded, or begin a new --run-dir"
        )
    candidates = (
        [p for p in ckpt_dir.glob("*.pt") if p.name != "best.pt"]
        if ckpt_dir.is_dir()
        else []
    )
    best_step, newest = -1, None
    for path in candidates:
        try:
            meta = load_checkpoint(path)
            step = meta["train_state"]["step"]
        except Exception as exc:  # a truncated or foreign file: not a candidate
            print(f"resume: ignoring unreadable {path.name} ({type(exc).__name__})")
            continue
        if step > best_step or (step == best_step and path.name == "last.pt"):
            best_step, newest = step, path
    return newest


def load_resumable(path: Path) -> dict:
    """The checkpoint to resume from; anything else ends the run with one line."""
    try:
        checkpoint = load_checkpoint(path)
    except Exception as exc:  # not written by torch.save, or cut short
        sys.exit(f"--resume {path}: not a readable checkpoint ({type(exc).__name__})")
    if not isinstance(checkpoint, dict) or "train_state" not in checkpoint:
        sys.exit(f"--resume {path}: not a checkpoint written by train.py")
    return checkpoint


def prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    periodic = sorted(ckpt_dir.glob("step_*.pt"))
    for path in periodic[: max(0, len(periodic) - keep)]:
        path.unlink()


# -----------------------------------------------------------------------------
# the output of a run


class CsvLog:
    """metrics.csv: one row per logged step and per validation, across resumes.

    New metric names extend the header (the file is rewritten, which happens only
    for the first rows). On resume, rows after the resumed step are dropped: they
    were logged after the checkpoint and will be logged again.
    """

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        self.rows: list[dict] = []
        if path.exists() and resume_step is not None:
            with path.open(newline="") as f:
                self.rows = [
                    r for r in csv.DictReader(f) if int(r["step"]) <= resume_step
                ]
        self.fields = ["step", "epoch", "split"]
        for row in self.rows:
            self.fields += [k for k in row if k not in self.fields]
        self._rewrite()

    def _rewrite(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, self.fields)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)

    def log(self, row: dict) -> None:
        row = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
        self.rows.append(row)
        if any(k not in self.fields for k in row):
            self.fields += [k for k in row if k not in self.fields]
            self._rewrite()
            return
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(row)


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (
        f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
    )


# Dense (not sparse) peak FLOP/s for the MFU estimate: (16-bit, tf32, fp32),
# by the exact name torch.cuda.get_device_name reports, since variants of one
# chip differ (an H100 PCIe has 3/4 of an SXM's peak). A GPU without tf32 units
# lists its fp32 peak twice. Add yours from its datasheet; others get no MFU.
GPU_PEAK_FLOPS = {
    "NVIDIA H200": (989e12, 495e12, 67e12),
    "NVIDIA H200 NVL": (835e12, 418e12, 60e12),
    "NVIDIA H100 80GB HBM3": (989e12, 495e12, 67e12),
    "NVIDIA H100 NVL": (835e12, 418e12, 60e12),
    "NVIDIA H100 PCIe": (756e12, 378e12, 51e12),
    "NVIDIA A100-SXM4-40GB": (312e12, 156e12, 19.5e12),
    "NVIDIA A100-SXM4-80GB": (312e12, 156e12, 19.5e12),
    "NVIDIA A100-PCIE-40GB": (312e12, 156e12, 19.5e12),
    "NVIDIA A100 80GB PCIe": (312e12, 156e12, 19.5e12),
    "NVIDIA L40S": (362e12, 183e12, 91.6e12),
    "NVIDIA L40": (181e12, 90.5e12, 90.5e12),
    "NVIDIA L4": (121e12, 60e12, 30.3e12),
    "NVIDIA A10": (125e12, 62.5e12, 31.2e12),
    "Tesla V100-SXM2-16GB": (125e12, 15.7e12, 15.7e12),
    "Tesla V100-SXM2-32GB": (125e12, 15.7e12, 15.7e12),
    "Tesla V100-PCIE-16GB": (112e12, 14e12, 14e12),
    "Tesla V100-PCIE-32GB": (112e12, 14e12, 14e12),
    "Tesla T4": (65e12, 8.1e12, 8.1e12),
    "NVIDIA GeForce RTX 4090": (165e12, 82.6e12, 82.6e12),
    "NVIDIA GeForce RTX 3090": (71e12, 35.6e12, 35.6e12),
}


def gpu_peak_flops(
    device: torch.device, dtype: torch.dtype, tf32: bool
) -> float | None:
    """This GPU's peak FLOP/s for matmuls in `dtype`, or None if it is not listed."""
    if device.type != "cuda":
        return None
    peaks = GPU_PEAK_FLOPS.get(torch.cuda.get_device_name(device))
    if peaks is None:
        return None
    half, tf32_peak, fp32 = peaks
    if dtype in (torch.bfloat16, torch.float16):
        return half
    return tf32_peak if tf32 else fp32


class Progress:
    """One status line: redrawn in place on a terminal, appended otherwise."""

    def __init__(self):
        self.tty = sys.stdout.isatty()
        self.open = False  # a status line without its newline is on the terminal

    def update(self, fields: list[str]) -> None:
        """The fields, most important first, joined by " | "."""
        text = " | ".join(fields)
        if not self.tty:
            print(text, flush=True)
            return
        # A line longer than the terminal wraps, and redrawing it in place would
        # leave the wrapped part behind: show the fields that fit.
        width = shutil.get_terminal_size().columns - 1
        while len(text) > width and len(fields) > 1:
            fields = fields[:-1]
            text = " | ".join(fields)
        print(f"\r\033[K{text[:width]}", end="", flush=True)
        self.open = True

    def print(self, text: str) -> None:
        """A permanent line (validation results, notices), above the status line."""
        print(f"\n{text}" if self.open else text, flush=True)
        self.open = False


def model_summary(model: torch.nn.Module) -> str:
    lines = [f"{'module':<24}{'params':>12}{'trainable':>12}"]
    for name, child in model.named_children():
        total = sum(p.numel() for p in child.parameters())
        trainable = sum(p.numel() for p in child.parameters() if p.requires_grad)
        lines.append(f"{name:<24}{total:>12,}{trainable:>12,}")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines.append(f"{'total':<24}{total:>12,}{trainable:>12,}")
    return "\n".join(lines)


def snapshot_code(run_dir: Path) -> str:
    """Save the git commit and uncommitted diff of this project; say what was saved."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True)
        if done.returncode:
            raise OSError(done.stderr)
        return done.stdout

    try:
        commit, diff = git("rev-parse", "HEAD").strip(), git("diff", "HEAD")
    except OSError:  # no git, not a work tree, or no commit yet
        return "code snapshot: not a git work tree (or no commit yet); nothing saved"
    (run_dir / "git_commit.txt").write_text(commit + "\n")
    (run_dir / "git_diff.patch").write_text(diff)
    return f"code snapshot: commit {commit[:12]}" + (
        " + uncommitted changes" if diff else ""
    )
