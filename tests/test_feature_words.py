"""A project speaks only of the features it has.

Each single-feature project (and the base) is rendered, and the words that belong
to the features it does not have -- ranks, micro-batches, scalers, optimizers by
name ... -- must appear nowhere in it: not in code, comments, help texts or its
README. A comment about a feature that is not there misleads the reader of the
code they own.
"""

import re

import pytest

from scaffold.features import feature_names
from scaffold.render import render_project
from scaffold.spec import ProjectSpec

# Words (regular expressions, case-insensitive) that only the feature's own code uses.
WORDS = {
    "ddp": [r"\bDDP\b", "DistributedDataParallel", "no_sync", "find_unused"],
    "fsdp": ["fsdp", "fully_shard", "DTensor", r"\bdcp\b", "MixedPrecisionPolicy",
             "activation.checkpointing", r"\breshard"],
    "amp": ["autocast", "GradScaler", r"\bscaler", r"\bfp16\b", r"\bbf16\b", "mixed precision", "amp_dtype"],
    "clip": [r"\bclip", r"\bgrad_norm(?!/)\b"],
    "accumulate": [r"micro-?batch", r"micro-?step", "accumulat", r"\bwindow"],
    "early-stopping": ["early.stopping", "patience", "min_delta"],
    "compile": ["torch.compile", "compile_mode", "_orig_mod", r"\bcompiled\b"],
    "slurm": ["slurm", r"\bsrun\b", "sbatch", "requeue", "scontrol"],
    "tensorboard": ["tensorboard", "SummaryWriter"],
    "wandb": ["wandb", r"\bW&B\b", "weights & biases"],
    "mlflow": ["mlflow", "mlruns"],
    "debug": ["non-finite gradient", "nonfinite", "layer_grad_norms", "module shapes", "on_nonfinite"],
    "multi-optim": [r"\boptimizers\b", "build_optimizers", "discriminator", r"\bGAN\b", "every_n_steps"],
    "ema": [r"\bema\b", "moving average", "weight averaging"],
}

# Words of training in several processes, which --ddp and --fsdp share.
SHARED = {
    ("ddp", "fsdp"): [r"\brank", r"\bworld", "torchrun", "all_reduce", "process group",
                      "collective", r"\bgloo\b", r"\bnccl\b", "distributed"],
}

# A feature whose README says when to choose it over another, by name: --fsdp's
# (sharding against DDP's copies). Only there, in README.md, may those words be.
COMPARED = {("fsdp", "ddp")}


def test_every_feature_has_its_words():
    assert set(WORDS) == set(feature_names())


@pytest.mark.parametrize("chosen", [None, *feature_names()], ids=lambda name: name or "base")
def test_a_project_has_no_words_of_features_it_lacks(chosen):
    files = render_project(ProjectSpec.create("proj", set() if chosen is None else {chosen}))
    found = []
    groups = [((feature,), words) for feature, words in WORDS.items()] + list(SHARED.items())
    for owners, words in groups:
        if chosen in owners:
            continue
        feature = "/".join(owners)
        for path, text in sorted(files.items()):
            if path == "README.md" and (chosen, feature) in COMPARED:
                continue
            lines = text.splitlines()
            for word in words:
                for match in re.finditer(word, text, re.IGNORECASE):
                    number = text.count("\n", 0, match.start()) + 1
                    found.append(f"{path}:{number}: {feature} word {word!r}: {lines[number - 1].strip()}")
    assert not found, "\n".join(found)


def test_the_words_are_found_where_the_feature_is():
    """The check can fail: each feature's own project uses its words."""
    groups = [((feature,), words) for feature, words in WORDS.items()] + list(SHARED.items())
    for owners, words in groups:
        for feature in owners:
            text = "\n".join(render_project(ProjectSpec.create("proj", {feature})).values())
            assert any(re.search(word, text, re.IGNORECASE) for word in words), feature
