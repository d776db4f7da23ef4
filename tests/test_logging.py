"""What a generated train.py shows while it trains: progress, logs, snapshots, debugging.

Every test runs the generated train.py (with the tiny MLP fixtures) and checks
what it printed or wrote: the progress line with and without a terminal and under
torchrun, metrics.csv across interruptions, the config and code snapshots, the
model summary, the --debug aids and the --tensorboard event files.
"""

import fcntl
import importlib.util
import json
import math
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import types
from pathlib import Path

import pytest
from helpers import (
    FIXTURES,
    TINY_ARGS,
    load_checkpoint,
    read_metrics,
    render,
    render_probe,
    run_torchrun,
    run_train,
    train_env,
)

# "step 4/32 | epoch 0  25% | acc 0.5547 | loss 1.1554 | lr 5.00e-02 | ..."
STATUS = re.compile(r"^step (\d+)/(\d+) \| epoch (\d+) +(\d+)% \| ")
DOCUMENTED = [r"\| loss \d", r"\| lr \d\.\d\de[-+]\d\d", r"\| [\d,]+ samples/s", r"\| elapsed \d+:\d\d", r"\| eta \d+:\d\d"]
STEPS_PER_EPOCH = re.compile(r"(\d+) optimizer steps per epoch, (\d+) in all")

# Appended to the tiny model.py of one project: a frozen parameter (so trainable
# and total counts differ) and a model that tells its tokens per sample.
TOKENS = 10
FROZEN_AND_TOKENS = f'''

TinyNet.tokens_per_sample = lambda self: {TOKENS}
_unfrozen_build_model = build_model


def build_model(cfg):
    model = _unfrozen_build_model(cfg)
    model.head.bias.requires_grad_(False)
    return model
'''

# Appended to model.py: sends this process a real signal before a given training
# batch (TEST_SIGNAL="SIGTERM@10"), so an interruption lands at a known place.
SIGNAL_AT_BATCH = '''

import os as _os
import signal as _signal

_train_batches = 0
_plain_compute_loss = compute_loss


def compute_loss(model, batch):
    global _train_batches
    if model.training:
        name, _, at = _os.environ.get("TEST_SIGNAL", "@-1").partition("@")
        if _train_batches == int(at):
            _os.kill(_os.getpid(), getattr(_signal, name))
        _train_batches += 1
    return _plain_compute_loss(model, batch)
'''


def status_lines(text: str) -> list[re.Match]:
    return [m for m in map(STATUS.match, text.splitlines()) if m]


def expected_log_steps(total: int, every: int) -> list[int]:
    """Steps with a progress update: every `every` steps, and the last one."""
    return sorted(set(range(every, total + 1, every)) | {total})


def train_steps(rows: list[dict]) -> list[int]:
    return [int(r["step"]) for r in rows if r["split"] == "train"]


def load_fixture(name: str):
    spec = importlib.util.spec_from_file_location(f"fixture_{name}", FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def no_git_env(tmp_path: Path) -> dict[str, str]:
    """Keep git from finding a repository above tmp_path (CI may run inside one)."""
    return {"GIT_CEILING_DIRECTORIES": str(tmp_path)}


def run_on_pty(project: Path, *args: str, columns: int = 200) -> tuple[int, str, str]:
    """Run train.py with stdout on a pseudo-terminal `columns` wide; return (exit code,
    raw terminal output, stderr)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    argv = [sys.executable, "train.py", *TINY_ARGS, *args]
    env = {k: v for k, v in train_env().items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(argv, cwd=project, stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=subprocess.PIPE, env=env)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + 300
    while time.monotonic() < deadline:
        if not select.select([master], [], [], 1)[0]:
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    else:
        proc.kill()
    os.close(master)
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=120)
    return proc.returncode, b"".join(chunks).decode(), stderr


def screen(raw: str, columns: int | None = None) -> list[str]:
    """What a terminal shows for `raw`: \\r returns, ESC[K erases to the line's end,
    and a line longer than `columns` wraps onto the next one."""
    lines, col = [""], 0
    i = 0
    while i < len(raw):
        if raw.startswith("\033[K", i):
            lines[-1] = lines[-1][:col]
            i += 3
            continue
        ch = raw[i]
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("")
            col = 0
        else:
            if columns is not None and col == columns:  # the cursor wraps
                lines.append("")
                col = 0
            line = lines[-1]
            lines[-1] = line[:col] + ch + line[col + 1:]
            col += 1
        i += 1
    return lines


def config_from_args(defaults: dict, argv: list[str]) -> dict:
    """The Config that argparse makes of `argv` (later flags override earlier ones)."""
    config = dict(defaults)
    i = 0
    while i < len(argv):
        name = argv[i][2:].replace("-", "_")
        if name.startswith("no_") and isinstance(defaults.get(name[3:]), bool):
            config[name[3:]], i = False, i + 1
        elif isinstance(defaults[name], bool):
            config[name], i = True, i + 1
        else:
            config[name], i = type(defaults[name])(argv[i + 1]), i + 2
    return config


# -----------------------------------------------------------------------------
# one piped run, looked at by several tests

PIPED_ARGS = ["--seed", "7", "--lr", "0.04", "--log-every", "3", "--schedule", "constant",
              "--deterministic", "--run-dir", "runs/piped"]


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
    """A base project (frozen head.bias, tokens_per_sample) run once with stdout piped."""
    root = tmp_path_factory.mktemp("piped")
    project = render(root)
    with (project / "model.py").open("a") as f:
        f.write(FROZEN_AND_TOKENS)
    result = run_train(project, *PIPED_ARGS, env=no_git_env(root))
    return project, project / "runs/piped", result


def test_piped_output_has_one_line_per_update_with_the_documented_fields(piped):
    _, run_dir, result = piped
    out = result.stdout
    assert "\r" not in out and "\033[K" not in out, "no terminal control codes when stdout is not a terminal"
    per_epoch, total = map(int, STEPS_PER_EPOCH.search(out).groups())
    updates = status_lines(out)
    assert [int(m[1]) for m in updates] == expected_log_steps(total, 3)
    assert {int(m[2]) for m in updates} == {total}
    for m in updates:
        step, line = int(m[1]), m.string
        epoch, within = divmod(step - 1, per_epoch)
        assert (int(m[3]), int(m[4])) == (epoch, round(100 * (within + 1) / per_epoch)), line
        for field in DOCUMENTED + [r"\| [\d,]+ tokens/s"]:
            assert re.search(field, line), f"{field!r} missing from {line!r}"
        assert "mem " not in line and "mfu " not in line, "no GPU fields on a CPU"
    # the same updates are rows of metrics.csv; tokens/s = samples/s x tokens per sample
    rows = [r for r in read_metrics(run_dir) if r["split"] == "train"]
    assert train_steps(rows) == [int(m[1]) for m in updates]
    assert not hasattr(load_fixture("tiny_model").TinyNet, "tokens_per_sample"), "only the appended one"
    for row in rows:
        assert float(row["tokens_per_s"]) == pytest.approx(TOKENS * float(row["samples_per_s"]), rel=1e-4)


def test_config_json_is_the_options_used(piped):
    project, run_dir, _ = piped
    defaults = json.loads(subprocess.run(
        [sys.executable, "-c", "import dataclasses, json, train; print(json.dumps(dataclasses.asdict(train.Config())))"],
        cwd=project, capture_output=True, text=True, check=True, env=train_env()).stdout)
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved == config_from_args(defaults, TINY_ARGS + PIPED_ARGS)
    # and the options are really the ones given, not defaults that happen to match
    assert (saved["seed"], saved["lr"], saved["log_every"], saved["schedule"], saved["deterministic"]) == (
        7, 0.04, 3, "constant", True)
    assert defaults["seed"] != 7 and defaults["deterministic"] is False


def test_outside_a_git_work_tree_a_note_and_no_snapshot(piped):
    _, run_dir, result = piped
    assert "code snapshot: not a git work tree" in result.stdout
    assert not (run_dir / "git_commit.txt").exists() and not (run_dir / "git_diff.patch").exists()


def test_model_summary_counts_match_the_model(piped):
    _, _, result = piped
    tiny = load_fixture("tiny_model")
    model = tiny.TinyNet()
    model.head.bias.requires_grad_(False)  # as FROZEN_AND_TOKENS does
    expected = {}
    for name, child in [*model.named_children(), ("total", model)]:
        params = list(child.parameters())
        expected[name] = (sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad))
    assert expected["head"][0] != expected["head"][1], "the frozen bias makes trainable differ"
    table = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in expected:
            table[parts[0]] = (int(parts[1].replace(",", "")), int(parts[2].replace(",", "")))
    assert table == expected
    assert result.stdout.count("\ntotal ") == 1


def test_demo_model_tells_the_tokens_of_its_samples(tmp_path):
    """The demo's tokens_per_sample (for tokens/s) is the length of its input sequences."""
    project = render(tmp_path, tiny=False)
    cfg = types.SimpleNamespace(n_digits=3, n_train=8, n_val=4, n_test=4, data_seed=0, d_model=16, n_layers=1,
                                n_heads=2, dropout=0.0)
    modules = {}
    for name in ("model", "data"):
        spec = importlib.util.spec_from_file_location(f"demo_{name}", project / f"{name}.py")
        modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[name])
    x, _ = modules["data"].build_datasets(cfg)[0][:8]
    assert modules["model"].build_model(cfg).tokens_per_sample() == x.shape[1]


# -----------------------------------------------------------------------------
# a terminal, and torchrun


def test_on_a_terminal_the_status_line_is_redrawn_in_place(tmp_path):
    project = render(tmp_path)
    code, raw, stderr = run_on_pty(project, "--run-dir", "runs/tty")
    assert code == 0, raw + stderr
    assert STEPS_PER_EPOCH.search(raw), repr(raw) + stderr
    per_epoch, total = map(int, STEPS_PER_EPOCH.search(raw).groups())
    # every update is drawn over the line it is on: carriage return + erase line
    updates = re.findall(r"\r\033\[K(step \d+/\d+ \| [^\r\n]*)", raw)
    steps = [int(STATUS.match(u)[1]) for u in updates]
    assert steps == expected_log_steps(total, 4)
    for update in updates:
        assert all(re.search(field, update) for field in DOCUMENTED), update
    # what the terminal shows: one status line per stretch between permanent
    # lines (the last update before each validation stays visible), nothing garbled
    shown = screen(raw)
    shown_status = [int(m[1]) for m in map(STATUS.match, shown) if m]
    assert shown_status == list(range(per_epoch, total + 1, per_epoch))
    assert len(shown_status) < len(steps)
    for line in shown:
        assert line.count("step ") <= 1 and line.count("eta ") <= 1, f"garbled line: {line!r}"
    validations = [line for line in shown if " | validation | " in line]
    assert [line.split()[1] for line in validations] == [str(s) for s in shown_status]
    assert all(line.startswith("step ") for line in validations)
    assert shown[-2].startswith("final (best checkpoint) | ") and shown[-1] == ""


def test_on_an_80_column_terminal_the_status_line_fits_and_redraws_cleanly(tmp_path):
    """The demo's fields do not fit in 80 columns: the line keeps the first fields
    that fit, so it never wraps and every redraw replaces the whole line."""
    project = render(tmp_path)
    # the frozen bias and tokens/s: more fields, as a real model has
    with (project / "model.py").open("a") as f:
        f.write(FROZEN_AND_TOKENS)
    code, raw, stderr = run_on_pty(project, "--run-dir", "runs/tty", columns=80)
    assert code == 0, raw + stderr
    updates = re.findall(r"\r\033\[K(step \d+/\d+ \| [^\r\n]*)", raw)
    assert updates, repr(raw)
    for update in updates:
        assert len(update) < 80, update  # text in the last column would wrap too
        assert STATUS.match(update) and re.search(r"\| eta \d+:\d\d \| \w+ \d", update), update
    # without a terminal nothing is left out: the fields the terminal could not show
    piped = run_train(project, "--run-dir", "runs/piped")
    assert piped.returncode == 0, piped.stderr
    full = [m.string for m in status_lines(piped.stdout)]
    assert len(full) == len(updates) and all(len(line) >= 80 for line in full), full
    assert all("elapsed " in line and "elapsed " not in update for line, update in zip(full, updates, strict=True))
    # and the terminal shows each status line whole, without wrapped fragments
    shown = screen(raw, columns=80)
    status = [line for line in shown if STATUS.match(line)]
    assert status and all(line in updates for line in status), shown
    for line in shown:
        assert line.count("step ") <= 1 and line.count("eta ") <= 1, f"garbled line: {line!r}"
        # the tail of a wrapped status line starts with one of its later fields (the
        # "rerun with:" command printed at start wraps too, but is not redrawn)
        fragment = r"^([\d.,]+ (samples|tokens)/s|elapsed [\d:]+|lr [\d.e+-]+)( \||$)"
        assert not re.match(fragment, line), f"fragment: {line!r}"


def test_under_torchrun_only_rank_0_prints(tmp_path):
    # every feature that prints something at start or while training
    project = render(tmp_path, ["ddp", "amp", "debug", "tensorboard", "clip"])
    logs = tmp_path / "logs"
    run_torchrun(project, 2, "--run-dir", "runs/ddp",
                 launcher_args=("--standalone", "--log-dir", str(logs), "--redirects", "3"))
    outputs = {}
    for path in logs.rglob("*.log"):
        outputs[(path.parent.name, path.stem)] = path.read_text()
    assert set(outputs) == {("0", "stdout"), ("0", "stderr"), ("1", "stdout"), ("1", "stderr")}
    assert outputs[("1", "stdout")] == "" and outputs[("1", "stderr")] == ""
    rank0 = outputs[("0", "stdout")]
    total = int(STEPS_PER_EPOCH.search(rank0)[2])
    assert [int(m[1]) for m in status_lines(rank0)] == expected_log_steps(total, 4)
    for once in ("\ntotal ", "world size 2", "module shapes for one batch:", "final (best checkpoint)", "amp: "):
        assert rank0.count(once) == 1, once


# -----------------------------------------------------------------------------
# metrics.csv across interruptions


def interruptible(tmp_path: Path) -> Path:
    project = render(tmp_path)
    with (project / "model.py").open("a") as f:
        f.write(SIGNAL_AT_BATCH)
    return project


def assert_each_step_once(run_dir: Path, total: int, per_epoch: int) -> None:
    rows = read_metrics(run_dir)
    assert train_steps(rows) == expected_log_steps(total, 4)
    assert [int(r["step"]) for r in rows if r["split"] == "val"] == list(range(per_epoch, total + 1, per_epoch))
    assert [r["split"] for r in rows].count("test") == 1


def test_metrics_csv_after_sigterm_and_resume_has_each_step_once(tmp_path):
    project = interruptible(tmp_path)
    args = ("--run-dir", "runs/r", "--ckpt-every", "8")
    first = run_train(project, *args, check=False, env={"TEST_SIGNAL": "SIGTERM@10"})
    assert first.returncode == 130, first.stdout + first.stderr
    # the step under way finishes, is saved, and the run says how to resume
    assert "stopped at step 11:" in first.stdout and "--resume auto" in first.stdout
    assert train_steps(read_metrics(project / "runs/r")) == [4, 8]
    second = run_train(project, *args, "--resume", "auto")
    assert "resume: " in second.stdout and "at step 11" in second.stdout
    per_epoch, total = map(int, STEPS_PER_EPOCH.search(second.stdout).groups())
    assert_each_step_once(project / "runs/r", total, per_epoch)


def test_metrics_csv_after_a_crash_past_the_checkpoint_has_each_step_once(tmp_path):
    project = interruptible(tmp_path)
    args = ("--run-dir", "runs/r", "--ckpt-every", "8")
    # killed during batch 14: step_8 is the newest checkpoint, rows 4, 8 and 12 are written
    first = run_train(project, *args, check=False, env={"TEST_SIGNAL": "SIGKILL@14"})
    assert first.returncode == -9
    ckpt_steps = [load_checkpoint(p)["train_state"]["step"] for p in (project / "runs/r/checkpoints").glob("*.pt")]
    assert max(ckpt_steps) == 8
    assert train_steps(read_metrics(project / "runs/r")) == [4, 8, 12], "a row logged after the checkpoint"
    second = run_train(project, *args, "--resume", "auto")
    assert "at step 8" in second.stdout
    per_epoch, total = map(int, STEPS_PER_EPOCH.search(second.stdout).groups())
    assert_each_step_once(project / "runs/r", total, per_epoch)


# -----------------------------------------------------------------------------
# code snapshot inside git


def test_git_snapshot_of_a_dirty_work_tree(tmp_path):
    project = render(tmp_path)
    env = {**os.environ, **no_git_env(tmp_path)}

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false",
                               *args], cwd=project, capture_output=True, text=True, check=True, env=env).stdout

    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "generated")
    edit = "# an experiment not yet committed"
    with (project / "model.py").open("a") as f:
        f.write(f"\n{edit}\n")
    result = run_train(project, "--run-dir", "runs/g", "--max-steps", "4", env=no_git_env(tmp_path))
    head = git("rev-parse", "HEAD").strip()
    run_dir = project / "runs/g"
    assert (run_dir / "git_commit.txt").read_text().strip() == head
    patch = (run_dir / "git_diff.patch").read_text()
    assert f"+{edit}" in patch and "model.py" in patch
    assert f"code snapshot: commit {head[:12]} + uncommitted changes" in result.stdout


# -----------------------------------------------------------------------------
# --debug


@pytest.fixture
def nan_project(tmp_path):
    project = render(tmp_path, ["debug", "clip"])
    (project / "model.py").write_text((FIXTURES / "nan_model.py").read_text())
    return project


def test_debug_skip_names_the_layer_and_leaves_that_step_out(nan_project):
    nan = load_fixture("nan_model")
    # clip by value: the skipped step reaches the clipping with no gradients at all
    result = run_train(nan_project, "--run-dir", "runs/s", "--on-nonfinite", "skip", "--clip-value", "0.5",
                       "--ckpt-every", "1", "--keep-last", "1000")
    out = result.stdout
    assert f"step {nan.NAN_STEP}: non-finite gradients in {nan.POISONED}\n" in out
    assert out.count("non-finite gradients") == 1
    ckpts = nan_project / "runs/s/checkpoints"

    def weights(step):
        return load_checkpoint(ckpts / f"step_{step:08d}.pt")["model"]

    def same(a, b):
        return all(a[k].equal(b[k]) for k in a)

    # the weights after NAN_STEP steps are those after NAN_STEP + 1: that step changed nothing
    assert same(weights(nan.NAN_STEP), weights(nan.NAN_STEP + 1))
    assert not same(weights(nan.NAN_STEP - 1), weights(nan.NAN_STEP))
    assert not same(weights(nan.NAN_STEP + 1), weights(nan.NAN_STEP + 2))
    final = load_checkpoint(ckpts / "last.pt")["model"]
    assert all(v.isfinite().all() for v in final.values())

    # per-layer gradient norms every log step, printed and in metrics.csv
    names = [k for k in final]
    grad_lines = [line for line in out.splitlines() if line.startswith("grad norms: ")]
    rows = [r for r in read_metrics(nan_project / "runs/s") if r["split"] == "train"]
    assert len(grad_lines) == len(status_lines(out)) == len(rows)
    for line in grad_lines:
        assert [part.split()[0] for part in line[len("grad norms: "):].split(", ")] == names
    for row in rows:
        assert all(math.isfinite(float(row[f"grad_norm/{n}"])) for n in names)

    # module shapes, once, for a batch of 32 samples of 8 features
    assert out.count("module shapes for one batch:") == 1
    shapes = {line.split()[0]: line for line in out.splitlines() if " in=" in line}
    assert set(shapes) == {"body.0", "body.1", "body", "head", "(model)"}
    assert "in=[(32, 8)] out=(32, 32)" in shapes["body.0"] and "out=(32, 4)" in shapes["head"]


def test_debug_stop_exits_nonzero_naming_the_layer(nan_project):
    nan = load_fixture("nan_model")
    # clip by norm (the default): clipping a NaN norm would spread it to every layer
    result = run_train(nan_project, "--run-dir", "runs/x", "--on-nonfinite", "stop", "--ckpt-every", "1",
                       check=False)
    assert result.returncode != 0
    assert f"step {nan.NAN_STEP}: non-finite gradients in {nan.POISONED}\n" in result.stdout
    assert f"FloatingPointError: non-finite gradients in {nan.POISONED} at step {nan.NAN_STEP}" in result.stderr
    assert "final (best checkpoint)" not in result.stdout
    saved = sorted(p.name for p in (nan_project / "runs/x/checkpoints").glob("step_*.pt"))
    assert saved[-1] == f"step_{nan.NAN_STEP:08d}.pt", "no step was taken with the NaN gradient"


# -----------------------------------------------------------------------------
# --tensorboard


def test_tensorboard_events_read_back_with_tensorboards_reader(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed (pip install -e .[test])")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    project = render(tmp_path, ["tensorboard", "clip"])
    run_train(project, "--run-dir", "runs/tb")
    run_dir = project / "runs/tb"
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/samples_per_s", "val/val_loss", "val/val_acc"} <= tags
    rows = read_metrics(run_dir)
    for split, names in (("train", ("loss", "lr", "grad_norm")), ("val", ("val_loss", "val_acc"))):
        csv_rows = [r for r in rows if r["split"] == split]
        for name in names:
            scalars = events.Scalars(f"{split}/{name}")
            assert [s.step for s in scalars] == [int(r["step"]) for r in csv_rows]
            for s, r in zip(scalars, csv_rows, strict=True):
                assert s.value == pytest.approx(float(r[name]), rel=1e-5)


def test_tensorboard_missing_says_so_and_trains_on_with_csv(tmp_path):
    project = render(tmp_path, ["tensorboard"])
    # as if the package were not installed: `import tensorboard` fails
    launcher = ("import runpy, sys; sys.modules['tensorboard'] = None; sys.argv = ['train.py', *sys.argv[1:]]; "
                "runpy.run_path('train.py', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", launcher, *TINY_ARGS, "--run-dir", "runs/nt"], cwd=project,
                            capture_output=True, text=True, timeout=300, env=train_env(), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    message = [line for line in result.stdout.splitlines() if line.startswith("tensorboard: ")]
    assert len(message) == 1 and "pip install tensorboard" in message[0] and "metrics.csv only" in message[0]
    run_dir = project / "runs/nt"
    assert not (run_dir / "tensorboard").exists()
    total = int(STEPS_PER_EPOCH.search(result.stdout)[2])
    assert train_steps(read_metrics(run_dir)) == expected_log_steps(total, 4)


def test_debug_stop_leaves_fp16_overflows_to_the_grad_scaler(tmp_path):
    # a loss scaled up 1000x overflows fp16 gradients at GradScaler's initial
    # scale (as in tests/test_loop.py): the scaler skips those steps and lowers
    # the scale, which is no reason to stop
    project = render_probe(tmp_path, ["debug", "amp"])
    result = run_train(project, "--run-dir", "runs/f", "--amp-dtype", "fp16",
                       "--on-nonfinite", "stop", "--max-epochs", "1", check=False,
                       env={"PROBE_LOSS_MUL": "1000"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "non-finite gradients" not in result.stdout
    assert "final (best checkpoint)" in result.stdout
