"""A GPT-2-small-class model on one GPU: the generated loop against a hand-written one.

    python benchmarks/gpu_gpt.py [--steps 100] [--warmup 30] [--rounds 2]
                                 [--markdown FILE] [--json FILE] [--profile DIR]
    python benchmarks/gpu_gpt.py --device cpu --layers 2 --d-model 64 --heads 2 \\
        --context 64 --vocab-size 512 --batch-size 4 --steps 8 --warmup 3 --rounds 1 \\
        --eager-only

The workload is benchmarks/gpt2/ (model.py, data.py): 12 layers, width 768, 12
heads, context 1024, vocabulary 50304 (124 M parameters), fed from a synthetic
file of token ids that make_tokens.py writes and data.py memory-maps. Programs:

- hand-written: forward (bf16 autocast), backward, clip_grad_norm_, a fused
  AdamW step (foreach on a CPU), zero_grad; nothing else -- no logging, no LR
  schedule, no checkpoint;
- generated: the train.py of `scaffold new --amp --clip`, unmodified but for the
  three Config fields the workload needs (context, vocab_size, tokens_file,
  added where a user adds theirs), run with `--amp-dtype bf16 --schedule
  constant --warmup-steps 0 --ckpt-every 0 --sanity-val-steps 0`;
- each eager and compiled (`torch.compile(model)`; the generated one rendered
  with --compile): the same model, batch, tokens (the same shuffled order),
  AdamW settings and clipping;
- extra rows, generated only: --ema, --fsdp (one process: a one-rank group),
  --accumulate (2 micro-batches of the same size per optimizer step), each
  with --amp --clip --compile.

Runs alternate: hand eager, generated eager, hand compiled, generated compiled,
then the extra rows once, then the base programs' further --rounds while
--budget-s lasts. The section and JSON are rewritten after every run. Every program runs under one
small wrapper that records each optimizer step with a step post-hook: on CUDA
a CUDA event (no host sync: the events are read after the run), on a CPU the
clock. Figures, after --warmup optimizer steps:

- tokens/s: tokens per optimizer step x steps / the time between the events;
- MFU: tokens/s x FLOPs per token / the GPU's dense bf16 peak in the generated
  project's table (train_utils.GPU_PEAK_FLOPS); FLOPs per token 6N + 12 L H Q T
  (model.py's flops_per_token);
- step p50, p90: percentiles of the time between consecutive step events;
- to first step: from the program's main() to the end of its first optimizer
  step (host-synchronised there), which holds compilation;
- compile time: a compiled program's "to first step" less its eager twin's
  (torch.compile's caches start empty in a directory of the benchmark's own: the
  first compiled run, hand-written, compiles cold; later ones find its graphs);
- peak memory: torch.cuda.max_memory_allocated over the steady steps.

A benchmark, not a test: it prints figures and the targets met or missed, and
asserts nothing. No GPU has run it yet; on one H100 or H200 the default run is
meant to take 5-7 minutes (--budget-s 420 starts no further round after 7).
"""

import argparse
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scaffold.generate import build_project
from scaffold.spec import ProjectSpec

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / "gpt2"

# Where a user adds the Config fields of their model and data (train.py); the
# benchmark adds the workload's there, nothing else in train.py changes.
CONFIG_ANCHOR = "    # model and data (read by model.py / data.py; add your own fields here)\n"
CONFIG_FIELDS = '''\
    context: int = option(1024, "tokens per sample (the model's context)")
    vocab_size: int = option(50304, "token ids are below this (GPT-2: 50257, padded)")
    tokens_file: str = option("data/train.bin", "flat file of token ids (data.py)")
'''

RUNNER = '''"""Run PROGRAM.main(ARGS), recording every optimizer step; dump the record as JSON."""

import json
import os
import sys
import time

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

WARMUP = int(os.environ["BENCH_WARMUP"])
STEPS = int(os.environ["BENCH_STEPS"])  # the measured window ends here
PROFILE = os.environ.get("BENCH_PROFILE")  # profile the steps after the window
PROFILE_STEPS = int(os.environ.get("BENCH_PROFILE_STEPS", "0"))
cuda = torch.device(os.environ["BENCH_DEVICE"]).type == "cuda"
marks, peaks = [], []
record = {}
profiler = None


def synchronize():
    if cuda:
        torch.cuda.synchronize()


def on_step(optimizer, args, kwargs):
    global profiler
    if cuda:  # recorded on the stream: read after the run, no host sync here
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        marks.append(event)
    else:
        marks.append(time.perf_counter())
    n = len(marks)
    if n == 1:  # the first step's end, compilation included: one sync, before the window
        synchronize()
        record["first_step_s"] = time.perf_counter() - main_started
    if cuda and n == WARMUP:  # the window's peak only (not the first steps')
        torch.cuda.reset_peak_memory_stats()
    if cuda and WARMUP < n <= STEPS:  # the allocator's counter: host memory, no sync
        peaks.append(torch.cuda.max_memory_allocated())
    if PROFILE and n == STEPS:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if cuda:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        profiler = torch.profiler.profile(activities=activities)
        profiler.__enter__()
    elif profiler is not None and n == STEPS + PROFILE_STEPS:
        profiler.__exit__(None, None, None)
        key = "self_device_time_total" if cuda else "self_cpu_time_total"
        events = profiler.key_averages()
        with open(PROFILE, "w") as f:
            f.write(events.table(sort_by=key, row_limit=30))
        # operators and kernels; not the ranges that name code (record_function:
        # Optimizer.step, the DataLoader), which hold them and would count twice
        times = sorted(((getattr(e, key), e.key) for e in events
                        if not getattr(e, "is_user_annotation", False)), reverse=True)
        record["profile"] = {"busy_us": sum(t for t, _ in times),
                             "top": [[name, t] for t, name in times[:6]]}
        profiler = None


register_optimizer_step_post_hook(on_step)
sys.path.insert(0, os.getcwd())  # the program's directory comes first
program = __import__(sys.argv[1])
main_started = time.perf_counter()
code = program.main(sys.argv[2:])
synchronize()
if cuda:
    times = [a.elapsed_time(b) / 1e3 for a, b in zip(marks, marks[1:])]
else:
    times = [b - a for a, b in zip(marks, marks[1:])]
record["step_s"] = times[WARMUP - 1 : STEPS - 1]  # steps WARMUP+1 .. STEPS
if "profile" in record:  # the profiled steps' span, for the busy fraction
    record["profile"]["span_us"] = 1e6 * sum(times[STEPS - 1 : STEPS - 1 + PROFILE_STEPS])
record["peak_bytes"] = max(peaks) if peaks else None
record["steps"] = len(marks)
with open(os.environ["BENCH_OUT"], "w") as f:
    json.dump(record, f)
# Without Python's shutdown: a process group's threads (fsdp) may abort it after
# a run that went well (train.py's --fsdp __main__ does the same)
sys.stdout.flush()
sys.stderr.flush()
os._exit(code or 0)
'''

HANDWRITTEN = '''"""A minimal hand-written loop: the same model, data, optimizer as train.py."""

import argparse
import sys

import torch
from torch.utils.data import DataLoader

from data import build_datasets
from model import build_model, compute_loss


def main(argv):
    parser = argparse.ArgumentParser()
    for flag in ("--n-layers", "--d-model", "--n-heads", "--context", "--vocab-size",
                 "--batch-size", "--max-steps"):
        parser.add_argument(flag, type=int, required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--tokens-file", required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--clip-norm", type=float, required=True)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--compile", action="store_true")
    cfg = parser.parse_args(argv)
    cfg.dropout = 0.0
    device = torch.device(cfg.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.set_float32_matmul_precision("high")  # train.py's --tf32 default
    torch.manual_seed(cfg.seed)
    train_set, _, _ = build_datasets(cfg)
    model = build_model(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95),
                                  foreach=not cuda, fused=cuda)
    forward = torch.compile(model) if cfg.compile else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    # train.py's order: a permutation seeded with seed + epoch (epoch 0)
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(cfg.seed))
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=order.tolist(),
                        drop_last=True, pin_memory=cuda)
    model.train()
    step = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast:
            loss, _ = compute_loss(forward, (x, y))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step == cfg.max_steps:
            return 0
    sys.exit(f"only {step} batches in the training split, {cfg.max_steps} asked")
'''


class Program:
    """One way of training: a directory, a module to run, its arguments; its runs."""

    def __init__(self, name: str, cwd: Path, module: str, argv: list[str],
                 tokens_per_step: int, twin: str | None = None):
        self.name, self.cwd, self.module, self.argv = name, cwd, module, argv
        self.tokens_per_step = tokens_per_step
        self.twin = twin  # the eager program of a compiled one (compile time)
        self.runs: list[dict] = []
        self.failed: str | None = None  # why its last run gave no figures

    def run(self, runner: Path, args: argparse.Namespace, profile: Path | None) -> dict:
        out = self.cwd / f"bench_{len(self.runs)}.json"
        env = dict(os.environ, BENCH_OUT=str(out), BENCH_WARMUP=str(args.warmup),
                   BENCH_STEPS=str(args.steps), BENCH_DEVICE=args.device,
                   PYTHONUNBUFFERED="1")
        env.pop("RANK", None)
        env.pop("WORLD_SIZE", None)
        # compilation caches of this benchmark's own: the first compiled program
        # compiles from nothing, the later ones find its graphs (and kernels) there
        caches = runner.parent / "caches"
        env.update(TORCHINDUCTOR_CACHE_DIR=str(caches / "inductor"),
                   TRITON_CACHE_DIR=str(caches / "triton"))
        if profile is not None:
            env.update(BENCH_PROFILE=str(profile), BENCH_PROFILE_STEPS=str(args.profile_steps))
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(runner), self.module, *self.argv],
                              cwd=self.cwd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        # its checkpoints (GBs at GPT-2 size) go; the next run starts afresh
        shutil.rmtree(self.cwd / "runs", ignore_errors=True)
        if done.returncode != 0:
            # one program's failure must not lose the others' figures
            self.failed = f"exit {done.returncode}"
            print(f"{self.name}: exited {done.returncode}:\n"
                  f"{done.stdout[-3000:]}{done.stderr[-3000:]}", flush=True)
            return None
        record = json.loads(out.read_text())
        if len(record["step_s"]) != args.steps - args.warmup:
            self.failed = f"{record['steps']} steps"
            print(f"{self.name}: {record['steps']} optimizer steps recorded, "
                  f"{args.steps + args.profile_steps} expected", flush=True)
            return None
        record["wall_s"] = wall
        self.runs.append(record)
        return record


def write_project(root: Path, name: str, features: set[str]) -> Path:
    """A generated project with the workload as its model.py and data.py."""
    project = root / name
    for relative, text in build_project(ProjectSpec.create("gpt", features)).items():
        if relative == "train.py":
            if CONFIG_ANCHOR not in text:
                sys.exit("train.py's Config has no line\n" + CONFIG_ANCHOR +
                         "to add the workload's fields after: update CONFIG_ANCHOR")
            text = text.replace(CONFIG_ANCHOR, CONFIG_ANCHOR + CONFIG_FIELDS)
        path = project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for name_ in ("model.py", "data.py"):
        (project / name_).write_text((WORKLOAD / name_).read_text())
    return project


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def flops_per_token(args: argparse.Namespace) -> tuple[float, int]:
    """model.py's FLOPs per token and parameter count, built on the meta device."""
    import torch

    model_py = load_module(WORKLOAD / "model.py", "gpt2_model")
    with torch.device("meta"):
        model = model_py.GPT(args.vocab_size, args.context, args.layers, args.d_model,
                             args.heads)
    return model.flops_per_token(), sum(p.numel() for p in model.parameters())


def device_name(device: str) -> tuple[str, str]:
    """The device's name as torch reports it ("CPU" for a CPU), and torch's version."""
    probe = ("import sys, torch; d = torch.device(sys.argv[1]); "
             "print(torch.cuda.get_device_name(d) if d.type == 'cuda' else 'CPU'); "
             "print(torch.__version__)")
    out = subprocess.run([sys.executable, "-c", probe, device], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"no usable device {device!r}:\n{out.stderr[-2000:]}")
    name, version = out.stdout.strip().splitlines()
    return name, version


def build_programs(root: Path, args: argparse.Namespace, tokens_file: Path) -> list[Program]:
    size = ["--n-layers", str(args.layers), "--d-model", str(args.d_model),
            "--n-heads", str(args.heads), "--context", str(args.context),
            "--vocab-size", str(args.vocab_size), "--tokens-file", str(tokens_file),
            "--batch-size", str(args.batch_size), "--device", args.device,
            "--lr", str(args.lr), "--clip-norm", "1.0"]
    steps = ["--max-steps", str(args.steps + args.profile_steps)]
    generated = [*size, *steps, "--amp-dtype", "bf16", "--schedule", "constant",
                 "--warmup-steps", "0", "--ckpt-every", "0", "--sanity-val-steps", "0",
                 "--log-every", str(args.log_every), "--limit-val-batches", "1",
                 "--limit-test-batches", "1", "--run-dir", "runs/bench"]
    per_step = args.batch_size * args.context
    hand_dir = root / "hand"
    hand_dir.mkdir()
    for name in ("model.py", "data.py"):
        (hand_dir / name).write_text((WORKLOAD / name).read_text())
    (hand_dir / "handwritten.py").write_text(HANDWRITTEN)
    base = {"amp", "clip"}
    programs = [
        Program("hand-written, eager", hand_dir, "handwritten", [*size, *steps], per_step),
        Program("generated, eager", write_project(root, "eager", base), "train", generated,
                per_step),
    ]
    compiled = base if args.eager_only else base | {"compile"}
    if not args.eager_only:
        programs += [
            Program("hand-written, compiled", hand_dir, "handwritten",
                    [*size, *steps, "--compile"], per_step, twin="hand-written, eager"),
            Program("generated, compiled", write_project(root, "compiled", compiled), "train",
                    generated, per_step, twin="generated, eager"),
        ]
    # the fsdp row last: the longest compilation, and the feature most likely to fail
    extras = [
        Program("generated + ema", write_project(root, "ema", compiled | {"ema"}), "train",
                generated, per_step),
        Program("generated + accumulate 2", write_project(root, "accumulate",
                                                          compiled | {"accumulate"}),
                "train", [*generated, "--accumulate-steps", "2"], 2 * per_step),
        Program("generated + fsdp (1 GPU)" if args.device.startswith("cuda") else
                "generated + fsdp (1 process)", write_project(root, "fsdp", compiled | {"fsdp"}),
                "train", [*generated, "--dist-timeout-s", "120"], per_step),
    ]
    return programs + [p for p in extras if p.name.split(" + ")[1].split()[0] not in args.skip]


def summarise(program: Program, by_name: dict[str, Program], fpt: float,
              peak_flops: float | None) -> dict:
    """The figures of a program: each the median over its runs."""
    def median(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    tokens = median(program.tokens_per_step * len(r["step_s"]) / sum(r["step_s"])
                    for r in program.runs)
    steps = [s for r in program.runs for s in r["step_s"]]
    quantiles = statistics.quantiles(steps, n=10, method="inclusive") if len(steps) > 1 else steps * 9
    first = median(r["first_step_s"] for r in program.runs)
    peak = median(r["peak_bytes"] for r in program.runs)
    compile_s = None
    twin_first = median(r["first_step_s"] for r in by_name[program.twin].runs) if program.twin else None
    if twin_first is not None:
        compile_s = first - twin_first
    profile = next((r["profile"] for r in program.runs if "profile" in r), None)
    return {
        "program": program.name,
        "runs": len(program.runs),
        "profile": profile,
        "tokens_per_s": tokens,
        "mfu": tokens * fpt / peak_flops if peak_flops else None,
        "step_p50_ms": 1e3 * statistics.median(steps),
        "step_p90_ms": 1e3 * quantiles[8],
        "first_step_s": first,
        "compile_s": compile_s,
        "peak_memory_gb": peak / 2**30 if peak is not None else None,
    }


def targets(rows: dict[str, dict]) -> list[dict]:
    """The issue's targets, judged where both sides ran."""
    out = []

    def add(label, value, limit, at_least, fmt):
        if value is None:
            return
        met = value >= limit if at_least else value <= limit
        out.append({"target": label, "value": f"{value:{fmt}}", "met": met})

    def ratio(a, b, key):
        if a in rows and b in rows and rows[a][key] and rows[b][key]:
            return rows[a][key] / rows[b][key]
        return None

    for mode in ("eager", "compiled"):
        add(f"generated >= 0.98 x hand-written tokens/s ({mode})",
            ratio(f"generated, {mode}", f"hand-written, {mode}", "tokens_per_s"), 0.98, True, ".3f")
    for loop in ("generated", "hand-written"):
        add(f"{loop}: compiled >= 1.2 x eager tokens/s",
            ratio(f"{loop}, compiled", f"{loop}, eager", "tokens_per_s"), 1.2, True, ".2f")
    mfu = rows.get("generated, compiled", {}).get("mfu")
    add("generated, compiled: MFU >= 35 %", mfu, 0.35, True, ".1%")
    for mode in ("eager", "compiled"):
        add(f"generated peak memory <= 1.05 x hand-written ({mode})",
            ratio(f"generated, {mode}", f"hand-written, {mode}", "peak_memory_gb"), 1.05, False,
            ".3f")
    return out


def fmt(value, spec: str) -> str:
    return "n/a" if value is None else f"{value:{spec}}"


COLUMNS = [("tokens_per_s", "tokens/s", ",.0f"), ("mfu", "MFU", ".1%"),
           ("step_p50_ms", "step p50 (ms)", ".1f"), ("step_p90_ms", "step p90 (ms)", ".1f"),
           ("first_step_s", "to first step (s)", ".1f"), ("compile_s", "compile (s)", ".1f"),
           ("peak_memory_gb", "peak memory (GB)", ".2f")]


def markdown(rows: list[dict], checks: list[dict], notes: list[str], command: str,
             gpu_ran: bool) -> str:
    lines = ["## gpu_gpt.py: a GPT-2-small-class model, generated loop vs hand-written", "",
             f"`{command}`", "", *[f"- {note}" for note in notes], "",
             "| program | runs | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(COLUMNS)]
    for row in rows:
        lines.append(f"| {row['program']} | {row['runs']} | "
                     + " | ".join(fmt(row[key], spec) for key, _, spec in COLUMNS) + " |")
    lines += ["", "| target | measured | met |", "|---|---:|---|"]
    for check in checks:
        lines.append(f"| {check['target']} | {check['value']} | "
                     f"{'yes' if check['met'] else '**no**'} |")
    profiled = [row for row in rows if row.get("profile")]
    if profiled:
        unit = "GPU kernels" if gpu_ran else "CPU operators"
        lines += ["", "Where the time goes (torch.profiler, the steps after the window; "
                  f"busy: the {unit}' own time over the steps' span; the top {unit} by "
                  "their own time, as shares of it):", ""]
        for row in profiled:
            profile = row["profile"]
            busy = profile["busy_us"] / profile["span_us"] if profile["span_us"] else 0.0
            top = ", ".join(f"`{name[:60]}` {t / profile['busy_us']:.0%}"
                            for name, t in profile["top"] if profile["busy_us"])
            lines.append(f"- {row['program']}: busy {busy:.0%}; {top}")
    if not gpu_ran:
        lines += ["", "Not a GPU run: the targets are for one H100 or H200 and mean nothing here."]
    return "\n".join(lines) + "\n"


def report(programs: list[Program], args: argparse.Namespace, setup: dict, started: float,
           done: bool) -> None:
    """The figures so far: the table and targets printed (when done), the
    Markdown section and JSON written (after every run, so a stopped benchmark
    leaves what it measured)."""
    fpt, peak_flops = setup["flops_per_token"], setup["peak_flops"]
    by_name = {p.name: p for p in programs}
    rows = [summarise(p, by_name, fpt, peak_flops) for p in programs if p.runs]
    failed = [f"{p.name} ({p.failed})" for p in programs if p.failed and not p.runs]
    waiting = [p.name for p in programs if not p.runs and not p.failed]
    by_row = {row["program"]: row for row in rows}
    base_row = by_row.get("generated, compiled") or by_row.get("generated, eager") or {}
    base_peak = base_row.get("peak_memory_gb")
    for row in rows:
        row["extra_memory_gb"] = (row["peak_memory_gb"] - base_peak
                                  if "+" in row["program"] and base_peak is not None
                                  and row["peak_memory_gb"] is not None else None)
    checks = targets(by_row)
    gpu_ran = args.device.startswith("cuda")
    elapsed = time.perf_counter() - started
    if done:
        print_table(rows, checks, gpu_ran, elapsed)
    notes = build_notes(rows, args, setup, elapsed)
    if failed:
        notes.append(f"failed, no figures: {', '.join(failed)}")
    if not done:
        notes.append(f"**partial**: written after each run; not run yet: {', '.join(waiting) or 'none'}"
                     " (if this note stays, the benchmark was stopped)")
    argv = " ".join(sys.argv[1:])
    command = f"python benchmarks/gpu_gpt.py{' ' + argv if argv else ''}"
    if args.markdown:
        args.markdown.write_text(markdown(rows, checks, notes, command, gpu_ran))
    if args.json:
        args.json.write_text(json.dumps({**setup, "rows": rows, "targets": checks,
                                         "notes": notes, "done": done}, indent=2) + "\n")


def print_table(rows: list[dict], checks: list[dict], gpu_ran: bool, elapsed: float) -> None:
    print("\n" + " " * 30 + "".join(f"{title:>20}" for _, title, _ in COLUMNS))
    for row in rows:
        print(f"{row['program']:<30}" + "".join(f"{fmt(row[k], s):>20}" for k, s in
                                                 ((k, s) for k, _, s in COLUMNS)))
    print("\ntargets" + ("" if gpu_ran else " (not a GPU: for the record only)"))
    for check in checks:
        print(f"  {'met ' if check['met'] else 'MISSED'}  {check['target']}: {check['value']}")
    print(f"\nall runs in {elapsed:.0f} s")


def build_notes(rows: list[dict], args: argparse.Namespace, setup: dict, elapsed: float) -> list[str]:
    name, version, fpt = setup["device"], setup["torch"], setup["flops_per_token"]
    n_params, peak_flops = setup["params"], setup["peak_flops"]
    notes = [
        f"{name}, torch {version}; {n_params / 1e6:.2f} M parameters ({args.layers} layers, "
        f"width {args.d_model}, {args.heads} heads, context {args.context}, vocabulary "
        f"{args.vocab_size}), batch {args.batch_size} x {args.context} tokens, bf16 autocast, "
        f"AdamW (fused on CUDA) and clipping at 1.0 in every program",
        f"{args.steps} optimizer steps per run, the first {args.warmup} left out; runs "
        f"alternate, up to {args.rounds} of each base program (--budget-s "
        f"{args.budget_s:.0f}), the extra rows once; figures are medians over the runs; the "
        f"generated loop logs every {args.log_every} steps (one host sync each)",
        f"MFU: {fpt / 1e6:,.1f} MFLOPs per token (6N + 12 L H Q T) against "
        + (f"{peak_flops / 1e12:,.0f} TFLOPS (the project's dense bf16 peak for {name})"
           if peak_flops else f"no peak (the project's table does not list {name})"),
        "peak memory over the steady steps (torch.cuda.max_memory_allocated); an extra row's "
        "extra over the generated compiled one: "
        + (", ".join(f"{row['program'].split(' + ')[1]} {row['extra_memory_gb']:+.2f} GB"
                     for row in rows if row["extra_memory_gb"] is not None) or "n/a"),
        "compile (s): a compiled program's time to its first step less its eager twin's; "
        "the caches of torch.compile (inductor, Triton) start empty for the benchmark, so "
        "the first compiled run (hand-written) compiles from nothing and the later ones "
        "find the same graphs cached, as a user's second run would",
        f"the whole benchmark took {elapsed:.0f} s",
    ]
    if args.profile:
        notes.append(f"profiles (torch.profiler, {args.profile_steps} steps after the window) "
                     f"in {args.profile}")
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (cuda:N), or cpu at a toy size")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--vocab-size", type=int, default=50304)
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=30, help="steps left out of the figures")
    parser.add_argument("--log-every", type=int, default=10, help="the generated loop's")
    parser.add_argument("--rounds", type=int, default=2,
                        help="runs of each base program (alternating); extra rows run once")
    parser.add_argument("--budget-s", type=float, default=420,
                        help="start no run of a second or later round past this many seconds")
    parser.add_argument("--eager-only", action="store_true",
                        help="no compiled runs (the extra rows eager too): a quick CPU check")
    parser.add_argument("--skip", nargs="*", default=[], choices=["ema", "fsdp", "accumulate"],
                        help="extra rows left out")
    parser.add_argument("--profile", type=Path,
                        help="directory: torch.profiler tables of --profile-steps steps after "
                             "the window, of each compiled program's first run (eager-only: "
                             "each eager program's)")
    parser.add_argument("--profile-steps", type=int, default=0)
    parser.add_argument("--markdown", type=Path, help="also write the results as a RESULTS.md section")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    if not 1 <= args.warmup <= args.steps - 2:
        parser.error("--warmup must be at least 1 and leave 2 steps of --steps to measure")
    if args.profile and args.profile_steps < 1:
        args.profile_steps = 3
    if not args.profile:
        args.profile_steps = 0
    started = time.perf_counter()

    import torch  # the benchmark's own use: FLOPs of the model, on the meta device

    name, version = device_name(args.device)
    fpt, n_params = flops_per_token(args)
    # the runs' checkpoints (1.5 GB each at GPT-2 size) land fast in memory, where
    # there is room for them
    shm = Path("/dev/shm")
    tmp_root = str(shm) if shm.is_dir() and shutil.disk_usage(shm).free > 16 * 2**30 else None
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="gpu_gpt_") as tmp:
        root = Path(tmp)
        make_tokens = load_module(WORKLOAD / "make_tokens.py", "gpt2_make_tokens")
        # enough training windows for the longest run (accumulate: 2 per step),
        # within one epoch, and the split's 90 %
        windows = 2 * args.batch_size * (args.steps + args.profile_steps) + 2 * args.batch_size
        n_tokens = math.ceil(windows * args.context / 0.9 * 1.05) + 40 * (args.context + 1)
        tokens_file = make_tokens.write_tokens(root / "tokens.bin", n_tokens, args.vocab_size)
        programs = build_programs(root, args, tokens_file)
        peak_table = load_module(root / "eager" / "train_utils.py", "gpt_train_utils")
        peak_flops = peak_table.GPU_PEAK_FLOPS.get(name, (None,))[0]
        del torch
        setup = {"device": name, "torch": version, "params": n_params,
                 "flops_per_token": fpt, "peak_flops": peak_flops}
        runner = root / "runner.py"
        runner.write_text(RUNNER)
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        print(f"{name} (torch {version}): GPT {n_params / 1e6:.2f} M parameters, "
              f"{args.layers} layers, width {args.d_model}, {args.heads} heads, context "
              f"{args.context}, vocabulary {args.vocab_size}; batch {args.batch_size} x "
              f"{args.context} tokens; {args.steps} steps per run, first {args.warmup} left out",
              flush=True)
        # round 1 of the base programs, the extra rows, then the other rounds
        # while the time budget lasts (a run may take as long as the longest yet)
        base = [p for p in programs if "+" not in p.name]
        schedule = base + [p for p in programs if "+" in p.name]
        schedule += [p for _ in range(args.rounds - 1) for p in base]
        longest = 0.0
        for i, program in enumerate(schedule):
            if program.failed:
                continue
            if i >= len(programs) and time.perf_counter() - started + longest > args.budget_s:
                skipped_runs = len(schedule) - i
                print(f"  --budget-s {args.budget_s}: {skipped_runs} more run(s) left out",
                      flush=True)
                break
            profiled = ("compiled" in program.name or args.eager_only) and "+" not in program.name
            profile = None
            if args.profile and profiled and not program.runs:
                profile = args.profile / (program.name.replace(", ", "_").replace(" ", "_") + ".txt")
            r = program.run(runner, args, profile)
            report(programs, args, setup, started, done=False)
            if r is None:
                continue
            longest = max(longest, r["wall_s"])
            steps = r["step_s"]
            print(f"  {program.name:<28} {program.tokens_per_step * len(steps) / sum(steps):>12,.0f}"
                  f" tokens/s  first step {r['first_step_s']:6.1f} s  whole run {r['wall_s']:6.1f} s",
                  flush=True)
    report(programs, args, setup, started, done=True)


if __name__ == "__main__":
    main()
