"""Every bad value of every option of train.py is one line before training (issue 32.5).

A property test draws values for every option of the largest projects of the
covering feature sets (tests/feature_sets.py), the base project too, and checks
them against parse_config in this process: a set of values that the rules below
accept gives a Config, any other stops with status 2 and one line that names each
bad option. A few real runs then check the same rules end to end: each trains one
step, or stops with that one line and status 2, and never shows a traceback.

RULES is this test's own statement of what each option accepts, so an option that
train.py gains without a rule here fails the test until one is written.
"""

import contextlib
import dataclasses
import importlib.util
import io
import itertools
import math
import sys
from pathlib import Path

import pytest
from feature_sets import covering_sets
from helpers import TINY_ARGS, load_checkpoint, render, run_train
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# -----------------------------------------------------------------------------
# what each option accepts: (strategy of values, is a value accepted)

INTS = st.one_of(st.integers(-3, 12), st.integers(-(2**70), 2**70))
FLOATS = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, -0.5, -2.0]),
                   st.floats(allow_nan=True, allow_infinity=True))
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
               max_size=12)


def finite(v: float) -> bool:
    return math.isfinite(v)


def fraction_or_whole(v: float) -> bool:
    return finite(v) and (0 < v <= 1 or (v > 1 and v == int(v)))


def enum(*accepted: str):
    return st.sampled_from([*accepted, "bogus", ""]), lambda v: v in accepted


AT_LEAST_1 = (INTS, lambda v: v >= 1)
AT_LEAST_0 = (INTS, lambda v: v >= 0)
FINITE_AT_LEAST_0 = (FLOATS, lambda v: finite(v) and v >= 0)
SEED = (INTS, lambda v: 0 <= v < 2**63)
FREE_TEXT = (TEXT, lambda v: True)
FLAG = (st.booleans(), lambda v: True)

RULES = {
    **dict.fromkeys(
        "max_epochs batch_size log_every val_every_epochs n_train n_val n_test d_model "
        "n_layers n_heads n_modes latent_dim hidden g_every accumulate_steps patience "
        "ema_every".split(), AT_LEAST_1),
    **dict.fromkeys(
        "min_epochs warmup_steps ckpt_every keep_last sanity_val_steps overfit_batches "
        "num_workers".split(), AT_LEAST_0),
    **dict.fromkeys("min_lr weight_decay clip_norm min_delta".split(), FINITE_AT_LEAST_0),
    # torch computes with it as a float32 scalar
    "clip_value": (FLOATS, lambda v: finite(v) and 0 <= v <= 1e30),
    **dict.fromkeys(
        "limit_train_batches limit_val_batches limit_test_batches val_check_interval"
        .split(), (FLOATS, fraction_or_whole)),
    **dict.fromkeys("seed data_seed".split(), SEED),
    **dict.fromkeys(
        "monitor_metric ema_of wandb_project wandb_run_name wandb_tags mlflow_experiment "
        "mlflow_run_name mlflow_tags mlflow_uri".split(), FREE_TEXT),
    **dict.fromkeys(
        "resume_anyway deterministic tf32 fast_dev_run ema_warmup ema_on_cpu "
        "find_unused_parameters activation_checkpointing".split(), FLAG),
    "max_steps": (INTS, lambda v: v == -1 or v >= 1),
    "n_digits": (INTS, lambda v: 1 <= v <= 18),
    "dist_timeout_s": (INTS, lambda v: 1 <= v <= 365 * 24 * 3600),
    # > 0 with --multi-optim, below; at most 1e30, a float32 scalar for torch
    "lr": (FLOATS, lambda v: finite(v) and 0 <= v <= 1e30),
    "dropout": (FLOATS, lambda v: finite(v) and 0 <= v < 1),
    "mode_std": (FLOATS, lambda v: finite(v) and v > 0),
    "ema_decay": (FLOATS, lambda v: finite(v) and 0 <= v < 1),
    "schedule": enum("cosine", "constant"),
    "monitor_mode": enum("min", "max"),
    "amp_dtype": enum("auto", "bf16", "fp16", "off"),
    "on_nonfinite": enum("skip", "stop"),
    "ema_eval": enum("both", "ema"),
    "wandb_mode": enum("online", "offline", "disabled"),
    "compile_mode": enum("default", "reduce-overhead", "max-autotune",
                         "max-autotune-no-cudagraphs"),
    # this machine has no GPU (checked in the fixture): cpu and auto only
    "device": (st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "gpu", "meta", "cpu:1",
                                "mps", ""]), lambda v: v in ("auto", "cpu")),
    # the paths that the fixture `paths` names: (key, accepted)
    "run_dir": (st.sampled_from(["fresh", "existing", "file", "under_file",
                                 "unwritable", "empty"]),
                lambda v: v in ("fresh", "existing")),
    "resume": (st.sampled_from(["", "auto", "missing", "file", "directory"]), None),
}


def bad_options(values: dict, features: frozenset[str]) -> set[str]:
    """The options that the line must name: those out of their own bounds, and
    one of each pair that contradicts itself."""
    bad = {name for name, value in values.items()
           if name not in ("resume",) and not RULES[name][1](value)}
    if values["resume"] not in ("", "auto"):
        if values["resume"] != ("directory" if "fsdp" in features else "file"):
            bad.add("resume")
    if "multi-optim" in features and not values["lr"] > 0:
        bad.add("lr")
    if (values["schedule"] == "cosine" and finite(values["lr"]) and values["lr"] >= 0
            and finite(values["min_lr"]) and values["min_lr"] > values["lr"]):
        bad.add("min_lr")
    if values["max_epochs"] >= 1 and values["min_epochs"] > values["max_epochs"]:
        bad.add("min_epochs")
    if "multi-optim" not in features:
        if values["n_heads"] >= 1 and values["d_model"] % values["n_heads"]:
            bad.add("d_model")
        n = values["n_digits"]
        if 1 <= n <= 18 and values["n_train"] + values["n_val"] + values["n_test"] > (
                10 ** (2 * n) // 2):
            bad.add("n_train")
    if {"fsdp", "amp"} <= features and values["amp_dtype"] == "fp16":
        bad.add("amp_dtype")
    return bad


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def argv_of(changed: dict, paths: dict[str, str]) -> list[str]:
    """The command line that sets these options (`--name=value`: a value may
    begin with a minus sign)."""
    argv = []
    for name, value in changed.items():
        if name in ("run_dir", "resume"):
            value = paths.get(f"{name}:{value}", value)
        if isinstance(value, bool):
            argv.append(flag(name) if value else "--no-" + flag(name)[2:])
        else:
            argv.append(f"{flag(name)}={value}")
    return argv


# -----------------------------------------------------------------------------
# the projects, and their train.py imported into this process


def largest(sets, **wanted: bool) -> frozenset[str]:
    """The largest covering set with (True) or without (False) these features."""
    fits = [s for s in sets
            if all((name.replace("_", "-") in s) == on for name, on in wanted.items())]
    return max(fits, key=len)


def feature_sets() -> list[frozenset[str]]:
    """The base project and the largest covering sets: with each engine, with and
    without several optimizers. Together they have every option and every check
    that depends on a pair of features."""
    sets = covering_sets()
    picked = [frozenset()] + [largest(sets, **{engine: True, "multi_optim": multi})
                              for engine in ("ddp", "fsdp") for multi in (False, True)
                              if any(engine in s and ("multi-optim" in s) == multi
                                     for s in sets)]
    return list(dict.fromkeys(picked))


def import_train(project: Path):
    """The project's train.py as a module; its siblings (train_utils, model, data)
    leave sys.modules again, so that the next project imports its own."""
    siblings = ("train_utils", "model", "data")
    sys.path.insert(0, str(project))
    try:
        spec = importlib.util.spec_from_file_location(f"train_{project.name}",
                                                      project / "train.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(project))
        for name in siblings:
            sys.modules.pop(name, None)
    return module


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    """Run directories and checkpoints of each kind the strategies name."""
    import torch

    assert not torch.cuda.is_available(), "RULES['device'] is for a machine without GPU"
    root = tmp_path_factory.mktemp("paths")
    (root / "existing").mkdir()
    (root / "a_file").write_text("not a directory")
    (root / "ckpt.pt").write_text("")
    (root / "ckpt_dir").mkdir()
    return {
        "run_dir:fresh": str(root / "new" / "run"),
        "run_dir:existing": str(root / "existing"),
        "run_dir:file": str(root / "a_file"),
        "run_dir:under_file": str(root / "a_file" / "run"),
        # a directory that even root cannot write into
        "run_dir:unwritable": "/proc/run",
        "run_dir:empty": "",
        "resume:missing": str(root / "missing.pt"),
        "resume:file": str(root / "ckpt.pt"),
        "resume:directory": str(root / "ckpt_dir"),
    }


@pytest.fixture(scope="module")
def modules(tmp_path_factory) -> list[tuple[frozenset[str], object]]:
    root = tmp_path_factory.mktemp("options")
    # the demo model.py: the --multi-optim one has build_optimizers
    return [(features, import_train(render(root, features, name=f"p{i}", tiny=False)))
            for i, features in enumerate(feature_sets())]


def test_every_option_has_a_rule(modules):
    for features, train in modules:
        unruled = [f.name for f in dataclasses.fields(train.Config) if f.name not in RULES]
        assert not unruled, f"{sorted(features)}: no rule in RULES for {unruled}"


def test_the_projects_cover_every_feature(modules):
    covered = set().union(*(features for features, _ in modules))
    assert covered == set().union(*covering_sets())


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(data=st.data())
def test_parse_config_accepts_exactly_the_good_values(modules, paths, data):
    index = data.draw(st.integers(0, len(modules) - 1), label="project")
    features, train = modules[index]
    defaults = dataclasses.asdict(train.Config())
    names = sorted(defaults)
    chosen = data.draw(st.lists(st.sampled_from(names), max_size=4, unique=True),
                       label="options")
    changed = {name: data.draw(RULES[name][0], label=name) for name in chosen}
    # the defaults' run dir, "runs/<project>", is relative: an accepted one
    values = {**defaults, "run_dir": "fresh", "resume": "", **changed}
    argv = argv_of({"run_dir": values["run_dir"], **changed}, paths)
    bad = bad_options(values, features)
    stderr, cfg, code = io.StringIO(), None, None
    with contextlib.redirect_stderr(stderr):
        try:
            cfg = train.parse_config(argv)
        except SystemExit as stop:
            code = stop.code
    if not bad:
        assert cfg is not None, f"{argv} refused: {stderr.getvalue()}"
        for name, value in changed.items():
            if name not in ("run_dir", "resume") and not (
                    isinstance(value, float) and math.isnan(value)):
                assert getattr(cfg, name) == value, name
        return
    lines = stderr.getvalue().splitlines()
    assert cfg is None and code == 2, f"{argv} accepted, but {sorted(bad)} are bad"
    # argparse's prog: train.py when run, this process's script here
    assert len(lines) == 1 and f"{Path(sys.argv[0]).name}: error: " in lines[0], lines
    for name in bad:
        assert flag(name) in lines[0], (name, lines[0])


# -----------------------------------------------------------------------------
# real runs: one step, or one line and status 2

# options a one-step run can take any drawn value of, cheaply (sizes stay small)
CHEAP = {
    "lr": FLOATS, "min_lr": FLOATS, "weight_decay": FLOATS, "schedule": None,
    "warmup_steps": st.integers(-2, 4), "batch_size": st.integers(-1, 64),
    "max_epochs": st.integers(-1, 3), "min_epochs": st.integers(-1, 4),
    "val_check_interval": FLOATS, "limit_train_batches": FLOATS,
    "limit_val_batches": FLOATS, "limit_test_batches": FLOATS,
    "sanity_val_steps": st.integers(-1, 3), "overfit_batches": st.integers(-1, 2),
    "log_every": st.integers(-1, 5), "ckpt_every": st.integers(-1, 2),
    "keep_last": st.integers(-1, 3), "seed": st.integers(-2, 2**64),
    "clip_norm": FLOATS, "clip_value": FLOATS, "accumulate_steps": st.integers(-1, 3),
    "amp_dtype": None, "ema_decay": FLOATS, "ema_every": st.integers(-1, 3),
    "ema_eval": None, "patience": st.integers(-1, 3), "min_delta": FLOATS,
    "on_nonfinite": None, "device": None, "run_dir": None,
    "dist_timeout_s": st.integers(-1, 100),
    # the tiny model reports val_loss and val_acc (and val_ema_loss with --ema)
    "monitor_metric": st.sampled_from(["val_loss", "val_acc", "val_nothing"]),
}
RUN_IDS = itertools.count()
RUN_FEATURES = ("ddp", "amp", "clip", "accumulate", "early-stopping", "ema", "debug",
                "slurm")


@pytest.fixture(scope="module")
def run_project(tmp_path_factory) -> Path:
    return render(tmp_path_factory.mktemp("runs"), RUN_FEATURES)


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(data=st.data())
def test_a_run_trains_one_step_or_stops_with_one_line(run_project, paths, data):
    chosen = data.draw(st.lists(st.sampled_from(sorted(CHEAP)), min_size=1, max_size=3,
                                unique=True), label="options")
    changed = {name: data.draw(CHEAP[name] or RULES[name][0], label=name)
               for name in chosen}
    changed.setdefault("run_dir", "fresh")
    # a directory of its own for each example's fresh run
    paths = {**paths, "run_dir:fresh": f"{paths['run_dir:fresh']}{next(RUN_IDS)}"}
    defaults = dataclasses.asdict(import_train(run_project).Config())
    tiny = dict(zip(TINY_ARGS[::2], TINY_ARGS[1::2], strict=True))
    for option, value in tiny.items():
        name = option[2:].replace("-", "_")
        defaults[name] = type(defaults[name])(value)
    values = {**defaults, "resume": "", **changed}
    bad = bad_options(values, frozenset(RUN_FEATURES))
    monitor_ok = values["monitor_metric"] in ("val_loss", "val_acc")
    result = run_train(run_project, *argv_of(changed, paths), "--max-steps", "1",
                       check=False, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    if bad or not monitor_ok:
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (changed, result.stderr)
        named = bad or {"monitor_metric"}
        assert all(flag(name) in lines[0] for name in named), (named, lines[0])
        return
    assert result.returncode == 0, (changed, result.stdout[-2000:], result.stderr)
    run_dir = Path(paths[f"run_dir:{values['run_dir']}"])
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["train_state"]["step"] == 1
