"""The feature registry: every optional piece of generated code, as data.

The CLI builds its flags from this table, ``scaffold features`` prints it, the spec
validates against it, and the templates receive one ``"y"``/``"n"`` answer per
feature under the feature's ``key``. Adding a feature means adding a row here and
``{% if %}`` blocks in the templates.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Feature:
    """One optional feature of a generated project."""

    name: str  # as typed by users: `scaffold add early-stopping`
    help: str  # one line, shown by `scaffold features` and `--help`
    conflicts: tuple[str, ...] = ()
    why_conflicts: str = ""  # the reason, said with the error
    files: tuple[str, ...] = ()  # files that exist only with this feature

    @property
    def key(self) -> str:
        """The template variable holding this feature's answer."""
        return self.name.replace("-", "_")

    @property
    def flag(self) -> str:
        """The `scaffold new` option that selects this feature."""
        return f"--{self.name}"


FEATURES: tuple[Feature, ...] = (
    Feature(
        "ddp",
        "Multi-GPU / multi-node DistributedDataParallel under torchrun (gloo on CPU).",
    ),
    Feature(
        "fsdp",
        "Sharded training (FSDP2) under torchrun: sharded checkpoints, exact resume.",
        conflicts=("ddp", "multi-optim", "ema"),
        why_conflicts=(
            "--fsdp shards the model where --ddp copies it (choose one), and "
            "it does not shard several optimizers or an average of the weights"
        ),
    ),
    Feature(
        "amp",
        "Mixed precision: torch.autocast bf16/fp16, GradScaler for fp16 only.",
    ),
    Feature("clip", "Gradient clipping by norm or value; pre-clip norm logged."),
    Feature(
        "accumulate",
        "Gradient accumulation over K micro-batches (exact last window, no_sync).",
    ),
    Feature(
        "early-stopping",
        "Stop when the monitored validation metric stops improving.",
    ),
    Feature("compile", "torch.compile the model; checkpoints keep plain weights."),
    Feature(
        "slurm",
        "SLURM sbatch scripts, preemption requeue with auto-resume, and sweeps.",
        files=("slurm/train.sbatch", "slurm/sweep.sbatch"),
    ),
    Feature(
        "tensorboard",
        "TensorBoard scalars via torch.utils.tensorboard (needs `tensorboard`).",
    ),
    Feature(
        "wandb",
        "Weights & Biases: config, metrics, summary, files; resumes its run.",
    ),
    Feature(
        "mlflow",
        "MLflow: params, metrics, summary, artifacts; resumes its run.",
    ),
    Feature(
        "debug",
        "Per-layer grad norms, non-finite gradient report, module shapes.",
    ),
    Feature(
        "multi-optim",
        "Several optimizers stepping at their own intervals (GANs); a GAN demo.",
    ),
    Feature(
        "ema",
        "An exponential moving average of the weights, validated beside them.",
    ),
)

FEATURES_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}


def feature_names() -> list[str]:
    """All feature names, in registry order."""
    return [f.name for f in FEATURES]


def compatible_with(name: str) -> frozenset[str]:
    """Every feature that can be in one project with feature `name`, itself
    included: the largest such project (`all` with `--ddp`)."""
    own = FEATURES_BY_NAME[name].conflicts
    return frozenset(
        f.name for f in FEATURES if f.name not in own and name not in f.conflicts
    )
