"""What the generated loop costs over a minimal hand-written one (and over Lightning).

    python benchmarks/loop_overhead.py [--steps 1000] [--warmup 100] [--repeats 5]
                                       [--paired-repeats 5]

Renders two projects -- default features, and --amp --clip --accumulate -- and
plugs in a 784-256-256-10 MLP on random data through the model.py/data.py
contract. Each program then trains for the same optimizer steps on the same data:

- generated: the project's own train.py (unmodified, default options apart from
  the data sizes and --ckpt-every 0, so no periodic checkpoint lands mid-window);
- hand-written: the loop anyone would write first -- the same model, data order
  (torch.randperm seeded 1337), AdamW settings, LR schedule, accumulation and
  clipping, a print every 50 steps, then one pass over val and test and a
  torch.save; no sanity check, no CSV, no checkpoints, no git snapshot;
- Lightning (when `pytorch_lightning` is importable: `pip install -e .[bench]`):
  the same model as a LightningModule under Trainer with its defaults, and with
  logging, checkpointing, progress bar and model summary off.

All programs run through one small wrapper, which registers a global optimizer
step post-hook (torch.optim.optimizer.register_optimizer_step_post_hook: the same
clock in every program, Lightning included) and calls the program's main(). The
runs alternate (A B C ... A B C ...), so that slow drifts of the machine hit all
alike; its faster swings (10-20 % within seconds on a shared VM) they do not.

Figures, per program (median [min-max] over the runs):
- step: steady-state time per optimizer step, (t[last] - t[warmup]) / steps
  between them: it includes everything the loop does on the way, logging
  included; the warm-up steps and the final validation/test are outside it;
- first step: from spawning the process to the end of the first optimizer step
  (interpreter, imports, data, model, everything the program does first);
- wall: the whole process; peak RSS, user and system CPU time, minor page
  faults (from wait4).

The allocator rows run the base programs again with glibc's malloc tuned by
environment variables (see ALLOCATOR_ENV): a loop that frees and re-allocates
large blocks can pay page faults for them every step when glibc hands them back
to the kernel; faults/step and sys/step (steady window) show whether it does.
Whole-process minor faults are mostly the first touch of the data set.

Paired runs (the targets are judged on them): each pair of programs compared
also runs side by side on one CPU core, so that both see the same machine --
lock-step (after the warm-up they take turns of TURN_STEPS optimizer steps:
the step ratio) and interleaved (the whole processes take turns of 20 ms: CPU
time to the first step and in all). A program paired with itself shows how
finely the two methods can tell programs apart.

A benchmark, not a test: it prints figures and the targets met or missed, and
asserts nothing.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from log_every import DATA, MODEL

from scaffold.generate import build_project
from scaffold.spec import ProjectSpec

# glibc malloc: a fixed mmap threshold (the largest glibc accepts, 32 MiB) stops
# it from moving large blocks between mmap and the heap, and a large trim
# threshold and top pad keep freed heap memory for the next step instead of
# returning it to the kernel and faulting it back in.
ALLOCATOR_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(2**30),
    "MALLOC_TOP_PAD_": str(64 * 2**20),
}

RUNNER = '''"""Run PROGRAM.main(ARGS) with a clock on every optimizer step; dump it as JSON."""

import hashlib
import json
import os
import resource
import sys
import time

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils._python_dispatch import TorchDispatchMode

torch_imported = time.perf_counter()
WARMUP = int(os.environ["BENCH_WARMUP"])
COUNT = int(os.environ.get("BENCH_COUNT_STEPS", "0"))  # 0: a timed run
BATON = os.environ.get("BENCH_BATON")  # a lock-step run: "go_fd,ready_fd,chunk,chunks"
steps, cpu = [], []
usage = {}
seen = {}
work = {"ops": 0, "calls": 0}


class OpCounter(TorchDispatchMode):
    """Counts the aten operations that reach the dispatcher."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        work["ops"] += 1
        return func(*args, **(kwargs or {}))


def count_calls(frame, event, arg):
    if event in ("call", "c_call"):
        work["calls"] += 1


counter = OpCounter()


class Baton:
    """Lock-step with a partner process: after the warm-up, run `chunk` optimizer
    steps, say so on `ready`, and wait on `go` for the turn to come back. Each
    turn is timed from the moment it came, so the partner's steps are not in it."""

    def __init__(self, spec):
        self.go, self.ready, self.chunk, self.chunks = map(int, spec.split(","))
        self.turns, self.turn_began = [], None

    def at(self, steady_steps):
        if steady_steps % self.chunk or steady_steps > self.chunk * self.chunks:
            return
        now = time.perf_counter()
        if self.turn_began is not None:
            self.turns.append(now - self.turn_began)
        os.write(self.ready, b".")
        # after the last turn too: what follows (validation, saving) must not
        # run beside the partner's last turn
        os.read(self.go, 1)
        self.turn_began = time.perf_counter()


baton = Baton(BATON) if BATON else None


def on_step(optimizer, args, kwargs):
    steps.append(time.perf_counter())
    cpu.append(time.process_time())
    if len(steps) == 1:  # CPU time to the first step, child processes (git) included
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        usage["first_step_cpu"] = cpu[0] + children.ru_utime + children.ru_stime
    if len(steps) >= WARMUP:  # page faults and system time of the steady window
        ru = resource.getrusage(resource.RUSAGE_SELF)
        usage.setdefault("first", (ru.ru_minflt, ru.ru_stime))
        usage["last"] = (ru.ru_minflt, ru.ru_stime)
    seen["optimizer"] = optimizer
    # a counting run: the work of COUNT whole steps after the warm-up
    if COUNT and len(steps) == WARMUP:
        counter.__enter__()
        sys.setprofile(count_calls)
    elif COUNT and len(steps) == WARMUP + COUNT:
        sys.setprofile(None)
        counter.__exit__(None, None, None)
        seen["work"] = {k: v / COUNT for k, v in work.items()}
    if baton and len(steps) >= WARMUP:
        baton.at(len(steps) - WARMUP)


register_optimizer_step_post_hook(on_step)
sys.path.insert(0, os.getcwd())  # the program's directory comes first
program = __import__(sys.argv[1])
main_started = time.perf_counter()
code = program.main(sys.argv[2:])
digest = hashlib.sha256()
for group in seen["optimizer"].param_groups if seen else []:
    for p in group["params"]:
        digest.update(p.detach().cpu().numpy().tobytes())
with open(os.environ["BENCH_OUT"], "w") as f:
    json.dump(
        {
            "torch_imported": torch_imported,
            "main_started": main_started,
            "steps": steps,
            "cpu": cpu,
            "usage": usage,
            "weights": digest.hexdigest(),
            "work": seen.get("work"),
            "turns": baton.turns if baton else None,
        },
        f,
    )
sys.exit(code or 0)
'''

HANDWRITTEN = '''"""A minimal hand-written loop: the same model, data, optimizer steps as train.py."""

import argparse
import math
import os
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader

from data import build_datasets
from model import build_model, compute_loss

# train.py's defaults
SEED, LR, MIN_LR, WARMUP, WEIGHT_DECAY = 1337, 3e-3, 3e-4, 100, 0.1


def lr_at(step, total):
    if step < WARMUP:
        return LR * (step + 1) / (WARMUP + 1)
    progress = min(1.0, (step - WARMUP) / max(1, total - WARMUP))
    return MIN_LR + 0.5 * (LR - MIN_LR) * (1 + math.cos(math.pi * progress))


def parse(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--n-eval", type=int, required=True)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--clip", type=float, default=0.0)
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args(argv)
    args.cfg = SimpleNamespace(
        n_train=args.steps * args.accumulate * args.batch_size,
        n_val=args.n_eval,
        n_test=args.n_eval,
    )
    return args


def shuffled(dataset):
    """train.py's order: torch.randperm seeded with seed + epoch (epoch 0 here)."""
    return torch.randperm(len(dataset), generator=torch.Generator().manual_seed(SEED)).tolist()


def optimizer_for(model):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.95), foreach=True)


def main(argv):
    args = parse(argv)
    torch.manual_seed(SEED)
    train_set, val_set, test_set = build_datasets(args.cfg)
    model = build_model(args.cfg)
    optimizer = optimizer_for(model)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=shuffled(train_set))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else nullcontext()
    step = 0
    model.train()
    for i, batch in enumerate(loader):
        with autocast:
            loss, _ = compute_loss(model, batch)
        if args.accumulate > 1:
            loss = loss / args.accumulate
        loss.backward()
        if (i + 1) % args.accumulate:
            continue
        if args.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args.steps)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
        if step == args.steps:
            break
    model.eval()
    with torch.no_grad(), autocast:
        for name, dataset in (("val", val_set), ("test", test_set)):
            sums, count = {}, 0
            for batch in DataLoader(dataset, batch_size=args.batch_size):
                _, metrics = compute_loss(model, batch)
                n = len(batch[0])
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0.0) + value.item() * n
                count += n
            print(name, {key: round(value / count, 4) for key, value in sums.items()})
    Path("runs").mkdir(exist_ok=True)
    # one file per process: a paired run starts this loop twice in one directory
    torch.save(model.state_dict(), f"runs/handwritten_{os.getpid()}.pt")
'''

LIGHTNING = '''"""The same model and steps as a LightningModule under pytorch_lightning.Trainer."""

import sys

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from handwritten import LR, SEED, lr_at, optimizer_for, parse, shuffled
from model import build_model, compute_loss


class Module(pl.LightningModule):
    def __init__(self, model, total_steps):
        super().__init__()
        self.model = model
        self.total_steps = total_steps

    def training_step(self, batch, batch_idx):
        loss, metrics = compute_loss(self.model, batch)
        self.log_dict({f"train_{k}": v for k, v in metrics.items()})
        return loss

    def validation_step(self, batch, batch_idx):
        _, metrics = compute_loss(self.model, batch)
        self.log_dict({f"val_{k}": v for k, v in metrics.items()}, batch_size=len(batch[0]))

    def test_step(self, batch, batch_idx):
        _, metrics = compute_loss(self.model, batch)
        self.log_dict({f"test_{k}": v for k, v in metrics.items()}, batch_size=len(batch[0]))

    def configure_optimizers(self):
        optimizer = optimizer_for(self.model)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_at(step, self.total_steps) / LR
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def main(argv):
    variant, argv = argv[0], argv[1:]
    args = parse(argv)
    torch.manual_seed(SEED)
    from data import build_datasets

    train_set, val_set, test_set = build_datasets(args.cfg)
    module = Module(build_model(args.cfg), args.steps)
    off = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False)
    trainer = pl.Trainer(
        max_steps=args.steps, max_epochs=1, accelerator="cpu", devices=1,
        default_root_dir="runs/lightning", **(off if variant == "off" else {}),
    )
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=shuffled(train_set))
    trainer.fit(module, loader, DataLoader(val_set, batch_size=args.batch_size))
    trainer.test(module, DataLoader(test_set, batch_size=args.batch_size), verbose=False)
'''


def lightning_available() -> bool:
    probe = [sys.executable, "-c", "import pytorch_lightning"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def cpu_has_amx_bf16() -> bool:
    """What train.py's `--amp-dtype auto` asks on a CPU (pick_amp_dtype)."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False


def write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def make_project(root: Path, name: str, features: set[str]) -> Path:
    """A generated project with the MLP plugged in, committed to git like a user's."""
    files = build_project(ProjectSpec.create(name, features))
    project = write(root / name, {**files, "model.py": MODEL, "data.py": DATA})
    if shutil.which("git"):
        git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "generated"]):
            subprocess.run(git + args, cwd=project, check=True, capture_output=True)
    return project


def figure(values: list[float], fmt: str) -> str:
    """median [min-max]"""
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


class Program:
    """One way of running the training: its command, directory and environment."""

    def __init__(self, name: str, cwd: Path, argv: list[str], env: dict[str, str]):
        self.name, self.cwd, self.argv, self.env = name, cwd, argv, env
        self.runs: list[dict] = []
        self.work: dict[str, float] = {}

    def spawn(self, runner: Path, tag: str, env: dict[str, str], log_file, **popen) -> subprocess.Popen:
        """Start the program under the runner, output to log_file."""
        argv = [a.replace("{tag}", tag) for a in self.argv]
        return subprocess.Popen(
            [sys.executable, str(runner), *argv], cwd=self.cwd, env={**self.env, **env},
            stdout=log_file, stderr=subprocess.STDOUT, **popen,
        )

    def run(self, runner: Path, warmup: int, log_dir: Path, count_steps: int = 0) -> None:
        """One timed run, or with count_steps one run that counts the work of
        that many steady steps (its times, slowed by the counting, are dropped)."""
        tag = f"{self.name.replace(' ', '_').replace('/', '-')}_{len(self.runs)}"
        if count_steps:
            tag += "_count"
        out, log = log_dir / f"{tag}.json", log_dir / f"{tag}.log"
        env = {"BENCH_OUT": str(out), "BENCH_WARMUP": str(warmup),
               "BENCH_COUNT_STEPS": str(count_steps)}
        with log.open("w") as log_file:
            start = time.perf_counter()
            proc = self.spawn(runner, tag, env, log_file)
            _, status, usage = os.wait4(proc.pid, 0)
            end = time.perf_counter()
            proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            sys.exit(f"{self.name} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        clock = json.loads(out.read_text())
        if count_steps:
            self.work = clock["work"]
            return
        steps = clock["steps"]
        steady, steady_cpu = steps[warmup - 1 :], clock["cpu"][warmup - 1 :]
        self.runs.append({
            "step_ms": 1000 * (steady[-1] - steady[0]) / (len(steady) - 1),
            "step_cpu_ms": 1000 * (steady_cpu[-1] - steady_cpu[0]) / (len(steady) - 1),
            "step_faults": (clock["usage"]["last"][0] - clock["usage"]["first"][0]) / (len(steady) - 1),
            "step_sys_us": 1e6 * (clock["usage"]["last"][1] - clock["usage"]["first"][1]) / (len(steady) - 1),
            "first_step_s": steps[0] - start,
            "setup_s": steps[0] - clock["main_started"],
            "import_torch_s": clock["torch_imported"] - start,
            "wall_s": end - start,
            "tail_s": end - steps[-1],
            "user_s": usage.ru_utime,
            "sys_s": usage.ru_stime,
            "rss_mb": usage.ru_maxrss / 1024,
            "minflt_k": usage.ru_minflt / 1000,
            "steps": len(steps),
            "weights": clock["weights"],
        })

    def median(self, key: str) -> float:
        return statistics.median(r[key] for r in self.runs)

    def figure(self, key: str, fmt: str = ".3f") -> str:
        return figure([r[key] for r in self.runs], fmt)


COUNT_STEPS = 20  # steady steps whose work one extra run per program counts

COLUMNS = [
    ("step_ms", "step (ms)", ".3f"),
    ("step_cpu_ms", "step CPU (ms)", ".3f"),
    ("step_faults", "faults/step", ".1f"),
    ("step_sys_us", "sys/step (us)", ".0f"),
    ("first_step_s", "first step (s)", ".2f"),
    ("setup_s", "main() to 1st step (s)", ".2f"),
    ("tail_s", "last step to exit (s)", ".2f"),
    ("wall_s", "wall (s)", ".2f"),
    ("user_s", "user (s)", ".2f"),
    ("sys_s", "sys (s)", ".2f"),
    ("minflt_k", "minor faults (k)", ".0f"),
    ("rss_mb", "peak RSS (MB)", ".0f"),
]


def build_programs(root: Path, args: argparse.Namespace, with_lightning: bool) -> list[Program]:
    base = make_project(root, "bench_base", set())
    acc = make_project(root, "bench_acc", {"amp", "clip", "accumulate"})
    harness = write(root / "harness", {
        "model.py": MODEL, "data.py": DATA, "handwritten.py": HANDWRITTEN,
        "lightning_loop.py": LIGHTNING,
    })
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    for name in ALLOCATOR_ENV:
        env.pop(name, None)
    tuned = {**env, **ALLOCATOR_ENV}
    k = 2  # train.py's default --accumulate-steps
    sizes = ["--batch-size", str(args.batch_size)]
    generated = ["train", "--run-dir", "runs/{tag}", "--max-epochs", "1", "--ckpt-every", "0",
                 "--n-val", str(args.n_eval), "--n-test", str(args.n_eval), *sizes]
    n_base = ["--n-train", str(args.steps * args.batch_size)]
    n_acc = ["--n-train", str(args.steps * k * args.batch_size)]
    hand = ["handwritten", "--steps", str(args.steps), "--n-eval", str(args.n_eval), *sizes]
    # --amp-dtype auto trains in fp32 on a CPU without AMX: so does the hand-written loop
    hand_acc = [*hand, "--accumulate", str(k), "--clip", "1.0"]
    if cpu_has_amx_bf16():
        hand_acc.append("--bf16")
    programs = [
        Program("generated", base, generated + n_base, env),
        Program("hand-written", harness, hand, env),
        Program("generated amp+clip+acc", acc, generated + n_acc, env),
        Program("hand-written amp+clip+acc", harness, hand_acc, env),
    ]
    if with_lightning:
        programs += [
            Program("lightning defaults", harness, ["lightning_loop", "defaults", *hand[1:]], env),
            Program("lightning off", harness, ["lightning_loop", "off", *hand[1:]], env),
        ]
    if not args.no_allocator:
        programs += [
            Program("generated, tuned malloc", base, generated + n_base, tuned),
            Program("hand-written, tuned malloc", harness, hand, tuned),
        ]
    return programs


# Lock-step runs: optimizer steps per turn, and turns compared as one group. A
# short turn keeps each program's turn close in time to the other's (noise on
# this VM changes within a tenth of a second); a group spans one logging
# interval (train.py's --log-every default, the hand-written loop's print every
# 50 steps), so each group holds exactly one logging step of either program.
TURN_STEPS = 10
LOG_INTERVAL = 50


def lockstep(pair: tuple[Program, Program], runner: Path, warmup: int, turns: int,
             log_dir: Path, tag: str) -> tuple[float, float, float]:
    """Run two programs at once on one CPU core, taking turns after the warm-up:
    each runs the same TURN_STEPS optimizer steps while the other waits, `turns`
    times. Whatever slows the machine down for a while (other tenants of the
    host, CPU clocks) then slows both alike, which separate runs seconds apart
    cannot promise. Returns each program's mean time per optimizer step over its
    turns (ms), and the median over logging intervals of first/second: the time
    each program took for the same LOG_INTERVAL steps, in interleaved turns."""
    core = {max(os.sched_getaffinity(0))}
    started = []
    for i, program in enumerate(pair):
        go_read, go_write = os.pipe()
        ready_read, ready_write = os.pipe()
        name = f"{tag}_{i}"
        env = {"BENCH_OUT": str(log_dir / f"{name}.json"), "BENCH_WARMUP": str(warmup),
               "BENCH_BATON": f"{go_read},{ready_write},{TURN_STEPS},{turns}"}
        with (log_dir / f"{name}.log").open("w") as log_file:
            proc = program.spawn(runner, name, env, log_file, pass_fds=(go_read, ready_write),
                                 preexec_fn=lambda: os.sched_setaffinity(0, core))
        os.close(go_read)
        os.close(ready_write)
        started.append((program, proc, name, go_write, ready_read))

    def failed(program: Program, proc: subprocess.Popen, name: str) -> str:
        log = (log_dir / f"{name}.log").read_text()[-3000:]
        return f"{program.name} exited {proc.wait()} in a lock-step run:\n{log}"

    def wait_turn(program: Program, proc: subprocess.Popen, name: str, ready: int) -> None:
        if not os.read(ready, 1):  # end of file: the program is gone
            sys.exit(failed(program, proc, name))

    for program, proc, name, _, ready in started:  # both at the end of the warm-up
        wait_turn(program, proc, name, ready)
    for _ in range(turns):
        for program, proc, name, go, ready in started:
            os.write(go, b".")
            wait_turn(program, proc, name, ready)
    for _, _, _, go, _ in started:  # both done: on to validation and exit
        os.write(go, b".")
    times = []
    for program, proc, name, go, ready in started:
        if proc.wait() != 0:
            sys.exit(failed(program, proc, name))
        os.close(go)
        os.close(ready)
        times.append(json.loads((log_dir / f"{name}.json").read_text())["turns"])
    first, second = (1000 * sum(t) / (len(t) * TURN_STEPS) for t in times)
    group = LOG_INTERVAL // TURN_STEPS
    intervals = [[sum(t[i : i + group]) for i in range(0, len(t), group)] for t in times]
    return first, second, statistics.median(a / b for a, b in zip(*intervals, strict=True))


def interleaved(pair: tuple[Program, Program], runner: Path, warmup: int, log_dir: Path,
                tag: str, slice_s: float = 0.02) -> list[tuple[float, float]]:
    """Run two whole programs on one CPU core, taking turns of `slice_s` seconds:
    this script stops one (SIGSTOP to its process group) and continues the other
    until both have exited, so that a slow spell of the machine slows both alike.
    Wall time then means nothing; CPU time does. Returns, for each, its CPU time
    (user + system, child processes included) to the first optimizer step and
    for the whole process (s)."""
    core = {max(os.sched_getaffinity(0))}
    running = []
    for i, program in enumerate(pair):
        name = f"{tag}_{i}"
        env = {"BENCH_OUT": str(log_dir / f"{name}.json"), "BENCH_WARMUP": str(warmup)}
        with (log_dir / f"{name}.log").open("w") as log_file:
            proc = program.spawn(runner, name, env, log_file, start_new_session=True,
                                 preexec_fn=lambda: os.sched_setaffinity(0, core))
        os.killpg(proc.pid, signal.SIGSTOP)
        running.append((program, proc, name))
    whole: dict[int, float] = {}
    while len(whole) < len(running):
        for program, proc, name in running:
            if proc.pid in whole:
                continue
            os.killpg(proc.pid, signal.SIGCONT)
            time.sleep(slice_s)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == 0:
                os.killpg(proc.pid, signal.SIGSTOP)
                continue
            if os.waitstatus_to_exitcode(status) != 0:
                for _, other, _ in running:
                    if other.pid not in whole and other is not proc:
                        os.killpg(other.pid, signal.SIGKILL)
                log = (log_dir / f"{name}.log").read_text()[-3000:]
                sys.exit(f"{program.name} failed in an interleaved run:\n{log}")
            whole[proc.pid] = usage.ru_utime + usage.ru_stime
    return [
        (json.loads((log_dir / f"{name}.json").read_text())["usage"]["first_step_cpu"],
         whole[proc.pid])
        for _, proc, name in running
    ]


PAIRS = [
    ("generated", "hand-written"),
    ("generated amp+clip+acc", "hand-written amp+clip+acc"),
    # the same program against itself: how closely the method can tell two apart
    ("hand-written", "hand-written"),
]


def run_paired(by_name: dict[str, Program], runner: Path, args: argparse.Namespace,
               log_dir: Path) -> dict[tuple[str, str], list[dict[str, float]]]:
    """--paired-repeats of a lock-step and an interleaved run of each of PAIRS,
    which program starts first alternating."""
    paired = {pair: [] for pair in PAIRS} if args.paired_repeats else {}
    turns = (args.steps - args.warmup) // LOG_INTERVAL * (LOG_INTERVAL // TURN_STEPS)
    for repeat in range(args.paired_repeats):
        for a, b in paired:
            swap = repeat % 2 == 1
            order = (by_name[b], by_name[a]) if swap else (by_name[a], by_name[b])
            tag = f"paired_{repeat}_{a}_{b}".replace(" ", "_").replace("/", "-")
            step_ms = list(lockstep(order, runner, args.warmup, turns, log_dir, tag + "_lockstep"))
            cpu = interleaved(order, runner, args.warmup, log_dir, tag + "_interleaved")
            if swap:
                step_ms = [step_ms[1], step_ms[0], 1 / step_ms[2]]
                cpu.reverse()
            run = {"step_ms_a": step_ms[0], "step_ms_b": step_ms[1], "step_ratio": step_ms[2],
                   "first_cpu_a": cpu[0][0], "first_cpu_b": cpu[1][0],
                   "first_cpu_diff": cpu[0][0] - cpu[1][0],
                   "cpu_a": cpu[0][1], "cpu_b": cpu[1][1], "cpu_ratio": cpu[0][1] / cpu[1][1]}
            paired[a, b].append(run)
            print(f"  paired {repeat + 1}  {a} / {b}: step {run['step_ratio']:.3f}, "
                  f"CPU to first step {run['first_cpu_diff']:+.2f} s, "
                  f"whole-process CPU {run['cpu_ratio']:.3f}", flush=True)
    return paired


PAIRED_COLUMNS = [
    ("step_ms_a", "step, first (ms)", ".3f"),
    ("step_ms_b", "step, second (ms)", ".3f"),
    ("step_ratio", "step ratio", ".3f"),
    ("first_cpu_a", "CPU to 1st step, first (s)", ".2f"),
    ("first_cpu_b", "CPU to 1st step, second (s)", ".2f"),
    ("first_cpu_diff", "difference (s)", "+.2f"),
    ("cpu_a", "CPU, first (s)", ".2f"),
    ("cpu_b", "CPU, second (s)", ".2f"),
    ("cpu_ratio", "CPU ratio", ".3f"),
]


def report(programs: list[Program], paired: dict[tuple[str, str], list[dict[str, float]]],
           args: argparse.Namespace, lightning: bool) -> dict:
    by_name = {p.name: p for p in programs}
    width = max(len(p.name) for p in programs) + 2
    lines = [f"{'':{width}}" + "".join(f"{title:>24}" for _, title, _ in COLUMNS)]
    for p in programs:
        lines.append(f"{p.name:{width}}" + "".join(f"{p.figure(key, fmt):>24}" for key, _, fmt in COLUMNS))
    print("\n".join(lines))
    print(f"\nwork per steady step (one counting run of {COUNT_STEPS} steps each; "
          "the same on any machine)")
    for p in programs:
        print(f"  {p.name:<{width}} aten ops {p.work['ops']:8.1f}   "
              f"Python calls {p.work['calls']:9.1f}")

    def ratio(a: str, b: str, key: str) -> float:
        return by_name[a].median(key) / by_name[b].median(key)

    def same_weights(a: str, b: str) -> str:
        wa = {r["weights"] for r in by_name[a].runs}
        wb = {r["weights"] for r in by_name[b].runs}
        return "identical" if len(wa | wb) == 1 else "different"

    pairs = [("generated", "hand-written"), ("generated amp+clip+acc", "hand-written amp+clip+acc")]
    if lightning:
        pairs += [("lightning defaults", "hand-written"), ("lightning off", "hand-written")]
    if not args.no_allocator:
        pairs += [("generated, tuned malloc", "hand-written, tuned malloc"),
                  ("hand-written", "hand-written, tuned malloc")]
    comparisons = []
    print("\nratios of medians (first step: difference)")
    for a, b in pairs:
        row = {
            "pair": f"{a} / {b}",
            "step": ratio(a, b, "step_ms"),
            "step_cpu": ratio(a, b, "step_cpu_ms"),
            "wall": ratio(a, b, "wall_s"),
            "first_step_diff_s": by_name[a].median("first_step_s") - by_name[b].median("first_step_s"),
            "weights": same_weights(a, b),
            "ops_diff": by_name[a].work["ops"] - by_name[b].work["ops"],
            "calls_diff": by_name[a].work["calls"] - by_name[b].work["calls"],
        }
        comparisons.append(row)
        print(f"  {row['pair']:<60} step {row['step']:.3f} (CPU {row['step_cpu']:.3f})  wall {row['wall']:.3f}  "
              f"first step {row['first_step_diff_s']:+.2f} s  final weights {row['weights']}  "
              f"per step: {row['ops_diff']:+.1f} aten ops, {row['calls_diff']:+.1f} Python calls")

    if paired:
        print(f"\npaired runs, median [min-max] over {args.paired_repeats} runs of each pair: "
              f"lock-step ({TURN_STEPS} steps a turn; step ratio: median over {LOG_INTERVAL}-step "
              "logging intervals) and interleaved (whole processes in 20 ms slices; CPU times)")
    paired_rows = {}
    for (a, b), runs in paired.items():
        paired_rows[a, b] = {key: figure([run[key] for run in runs], fmt)
                             for key, _, fmt in PAIRED_COLUMNS}
        print(f"  {a} / {b}: " + ", ".join(
            f"{title} {paired_rows[a, b][key]}" for key, title, _ in PAIRED_COLUMNS))

    def paired_median(a: str, b: str, key: str) -> float:
        return statistics.median(run[key] for run in paired[a, b])

    targets = []
    for a, b in pairs[:2]:
        if (a, b) in paired:
            targets += [
                (f"{a}: step time <= 1.03 x hand-written (lock-step)",
                 paired_median(a, b, "step_ratio"), 1.03, ".3f"),
                (f"{a}: whole process <= 1.05 x hand-written (interleaved, CPU time)",
                 paired_median(a, b, "cpu_ratio"), 1.05, ".3f"),
                (f"{a}: first step <= hand-written + 0.2 s (interleaved, CPU time)",
                 paired_median(a, b, "first_cpu_diff"), 0.2, "+.2f"),
            ]
            continue
        targets += [  # without paired runs (--paired-repeats 0): the noisier separate runs
            (f"{a}: step time <= 1.03 x hand-written (separate runs)",
             ratio(a, b, "step_ms"), 1.03, ".3f"),
            (f"{a}: whole process <= 1.05 x hand-written (separate runs, wall)",
             ratio(a, b, "wall_s"), 1.05, ".3f"),
            (f"{a}: first step <= hand-written + 0.2 s (separate runs, wall)",
             by_name[a].median("first_step_s") - by_name[b].median("first_step_s"), 0.2, "+.2f"),
        ]
    print("\ntargets")
    target_rows = []
    for label, value, limit, fmt in targets:
        met = value <= limit
        target_rows.append({"target": label, "value": f"{value:{fmt}}", "met": met})
        print(f"  {'met ' if met else 'MISSED'}  {label}: {value:{fmt}}")
    return {"comparisons": comparisons, "paired": paired_rows, "targets": target_rows}


def markdown(programs: list[Program], summary: dict, args: argparse.Namespace, notes: list[str]) -> str:
    out = [
        "## Loop overhead: generated train.py vs a hand-written loop",
        "",
        f"`python benchmarks/loop_overhead.py --steps {args.steps} --warmup {args.warmup} "
        f"--repeats {args.repeats} --paired-repeats {args.paired_repeats} "
        f"--batch-size {args.batch_size} --threads {args.threads}`",
        "",
        f"784-256-256-10 MLP, batch {args.batch_size}, {args.steps} optimizer steps per run "
        f"(first {args.warmup} left out of the step time), OMP_NUM_THREADS={args.threads}, "
        f"{args.repeats} runs of each program, alternating. Median [min-max] over the runs.",
        "",
        *[f"- {note}" for note in notes],
        "",
        "| program | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for p in programs:
        out.append(f"| {p.name} | " + " | ".join(p.figure(key, fmt) for key, _, fmt in COLUMNS) + " |")
    out += ["", f"Work per steady step, counted in one extra run of {COUNT_STEPS} steps per "
            "program (aten operations that reach torch's dispatcher, Python function calls): "
            "the same on any machine, unlike the times.", "",
            "| program | aten ops/step | Python calls/step |", "|---|---:|---:|"]
    for p in programs:
        out.append(f"| {p.name} | {p.work['ops']:.1f} | {p.work['calls']:.1f} |")
    out += ["", "Separate runs:", "", "| ratio of medians | step | step CPU | wall | first step (difference) | final weights "
            "| extra aten ops/step | extra Python calls/step |",
            "|---|---:|---:|---:|---:|---|---:|---:|"]
    for row in summary["comparisons"]:
        out.append(f"| {row['pair']} | {row['step']:.3f} | {row['step_cpu']:.3f} | {row['wall']:.3f} | "
                   f"{row['first_step_diff_s']:+.2f} s | {row['weights']} | {row['ops_diff']:+.1f} | "
                   f"{row['calls_diff']:+.1f} |")
    if summary["paired"]:
        out += ["", "### Paired runs: both programs under the same machine conditions", "",
                "On a shared VM the speed of one and the same program drifts by 10-20 % within "
                "seconds, so runs seconds apart differ by more than the targets allow. Each pair "
                "therefore also runs twice side by side on one CPU core, which program starts "
                "first alternating between repeats:", "",
                f"- lock-step: after the warm-up the two take turns of {TURN_STEPS} optimizer "
                "steps, each waiting while the other runs. Step: each one's mean time per step "
                f"over its turns. Step ratio: the median, over {LOG_INTERVAL}-step logging "
                "intervals (each holding one logging step of either program), of the time "
                "first/second took for the same steps in interleaved turns.",
                "- interleaved: the whole processes, from spawn to exit, take turns of 20 ms "
                "of wall time (this script stops one with SIGSTOP and continues the other). "
                "Wall time means nothing there; CPU time (user + system, child processes "
                "such as git included) does: to the first optimizer step, and in all.",
                "",
                f"Median [min-max] over {args.paired_repeats} repeats. The last pair, a program "
                "against itself, shows how finely the methods tell two programs apart.", "",
                "| pair | " + " | ".join(title for _, title, _ in PAIRED_COLUMNS) + " |",
                "|---|" + "---:|" * len(PAIRED_COLUMNS)]
        for (a, b), row in summary["paired"].items():
            out.append(f"| {a} / {b} | " + " | ".join(row[key] for key, _, _ in PAIRED_COLUMNS)
                       + " |")
    out += ["", "| target | measured | met |", "|---|---:|---|"]
    for row in summary["targets"]:
        out.append(f"| {row['target']} | {row['value']} | {'yes' if row['met'] else '**no**'} |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=100, help="steps left out of the step time")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-eval", type=int, default=512, help="validation and test samples")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each program (alternating)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every run")
    parser.add_argument("--paired-repeats", type=int, default=5,
                        help="lock-step and interleaved runs of each pair (0: none)")
    parser.add_argument("--no-lightning", action="store_true", help="leave Lightning out")
    parser.add_argument("--no-allocator", action="store_true", help="leave the tuned-malloc runs out")
    parser.add_argument("--markdown", type=Path, help="also write the results as a RESULTS.md section")
    args = parser.parse_args()
    if not 1 <= args.warmup <= args.steps - max(COUNT_STEPS, LOG_INTERVAL):
        parser.error(f"--warmup must be at least 1 and leave {max(COUNT_STEPS, LOG_INTERVAL)} "
                     "steps of --steps to count the work of and to take turns")
    if args.warmup % LOG_INTERVAL and args.paired_repeats:
        parser.error(f"--warmup must be a multiple of {LOG_INTERVAL} for lock-step runs, so "
                     "that each logging interval of turns holds one logging step")

    lightning = not args.no_lightning and lightning_available()
    notes = [
        "final validation/test, checkpoints and the process start are in `wall`, not in `step`",
        "`--amp` with `--amp-dtype auto`: "
        + ("bf16 autocast (this CPU has AMX), in both loops" if cpu_has_amx_bf16() else
           "fp32 on this CPU (no AMX bf16 units), so the hand-written loop uses no autocast either"),
        "tuned malloc: " + " ".join(f"{k}={v}" for k, v in ALLOCATOR_ENV.items()),
    ]
    if not lightning:
        notes.append("Lightning skipped: pytorch_lightning is not importable "
                     "(`pip install -e .[bench]`)" if not args.no_lightning else
                     "Lightning left out (--no-lightning)")
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        programs = build_programs(root, args, lightning)
        runner = write(root, {"runner.py": RUNNER}) / "runner.py"
        logs = root / "logs"
        logs.mkdir()
        print(f"784-256-256-10 MLP, batch {args.batch_size}, {args.steps} steps per run, first "
              f"{args.warmup} left out, OMP_NUM_THREADS={args.threads}, {args.repeats} runs each, "
              f"alternating")
        for note in notes:
            print(f"  {note}")
        for repeat in range(args.repeats):
            for program in programs:
                program.run(runner, args.warmup, logs)
                r = program.runs[-1]
                print(f"  run {repeat + 1}  {program.name:<28} step {r['step_ms']:7.3f} ms  "
                      f"first step {r['first_step_s']:5.2f} s  wall {r['wall_s']:6.2f} s  "
                      f"sys {r['sys_s']:5.2f} s", flush=True)
        for program in programs:
            program.run(runner, args.warmup, logs, count_steps=COUNT_STEPS)
        paired = run_paired({p.name: p for p in programs}, runner, args, logs)
    load_after = os.getloadavg()
    notes.append(f"load average (1 min) before/after: {load[0]:.2f} / {load_after[0]:.2f} "
                 f"on {os.cpu_count()} cores")
    print(f"\n{notes[-1]}\nmedian [min-max] over {args.repeats} runs")
    summary = report(programs, paired, args, lightning)
    if args.markdown:
        args.markdown.write_text(markdown(programs, summary, args, notes))


if __name__ == "__main__":
    main()
