"""How fast the scaffold command line is, next to the real cookiecutter.

    python benchmarks/cli_speed.py [--repeats 5]

Whole-process wall time (and the CPU time of the process, from wait4, which
machine load inflates less) of:

- `python -c pass`: the interpreter alone, the floor under every figure;
- `scaffold --help`;
- `scaffold new NAME` with default features and with all of them, each into a
  fresh directory under a name not used before (as a user would). Cold: an empty
  cache directory ($XDG_CACHE_HOME), as on the first run after installing; warm:
  the cache left by the earlier runs (scaffold keeps no cache of its own today,
  so the two differ only by the OS file cache and noise);
- `scaffold update` on an all-features project with user edits (committed to
  git, as update wants), whose recorded base is made older than today's
  templates, so the update does a real three-way merge; a fresh copy every run;
- `scaffold add amp` on a default project with user edits; a fresh copy every run;
- `cookiecutter --no-input templates/` with the same answers (its post-generation
  hook runs black, which scaffold does not need), defaults and all features.

The commands alternate (A B C ... A B C ...). XDG_CACHE_HOME always points into a
temporary directory, so your own cache is neither used nor touched. A benchmark,
not a test: it prints figures and the targets met or missed, and asserts nothing.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scaffold.features import FEATURES, compatible_with

REPO = Path(__file__).resolve().parent.parent
ALL = sorted(compatible_with("ddp"))  # the largest project
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
TARGETS = {  # command -> median wall seconds to stay under
    "scaffold --help": 0.15,
    "scaffold new (defaults, warm)": 0.3,
    "scaffold new (defaults, cold)": 0.3,
    "scaffold update (all features, edited)": 0.5,
}


def scaffold_exe() -> list[str]:
    """The installed console script, as a user runs it (else python -m scaffold)."""
    exe = Path(sys.executable).parent / "scaffold"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "scaffold"]


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall s, user+sys CPU s) of one process; exits with its output if it fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {proc.returncode}:\n{output.decode()[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def git_commit(project: Path, message: str) -> None:
    if not (project / ".git").exists():
        subprocess.run([*GIT, "init", "-q"], cwd=project, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=project, check=True)
    subprocess.run([*GIT, "commit", "-qm", message], cwd=project, check=True)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if old not in text:
        sys.exit(f"benchmark setup: {old!r} not found in {path}")
    path.write_text(text.replace(old, new, 1))


def edited_project(root: Path, name: str, features: list[str], env: dict[str, str],
                   older_base: bool) -> Path:
    """A project a user has worked on: edits to train.py and model.py, committed."""
    flags = [f"--{f}" for f in features]
    subprocess.run([*scaffold_exe(), "new", name, "--yes", *flags], cwd=root, env=env,
                   check=True, capture_output=True)
    project = root / name
    edit(project / "train.py", "    seed: int = option(", "    # my note\n    seed: int = option(")
    edit(project / "model.py", "import torch", "import torch  # my model")
    if older_base:
        # pretend the templates changed since `new`: an older recorded base
        edit(project / ".scaffold" / "base" / "train.py", "def main(argv=None)",
             "def main(argv=None)  # old")
    git_commit(project, "my edits")
    return project


class Command:
    def __init__(self, label: str, make):
        self.label, self.make = label, make  # make(i) -> (argv, cwd, env)
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.unavailable = ""

    def run(self, i: int) -> None:
        argv, cwd, env = self.make(i)
        wall, cpu = timed(argv, cwd, env)
        self.wall.append(wall)
        self.cpu.append(cpu)

    @staticmethod
    def fmt(values: list[float]) -> str:
        return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def available(exe: list[str], command: str) -> bool:
    probe = subprocess.run([*exe, command, "--help"], capture_output=True)
    return probe.returncode == 0


def build_commands(root: Path, args: argparse.Namespace) -> list[Command]:
    exe = scaffold_exe()
    # SCAFFOLD_NO_CACHE switched off the Jinja bytecode cache of earlier versions
    base_env = {k: v for k, v in os.environ.items() if k not in ("SCAFFOLD_NO_CACHE",)}
    warm_cache = root / "warm-cache"
    warm = {**base_env, "XDG_CACHE_HOME": str(warm_cache)}
    work = root / "work"
    work.mkdir()

    def cold_env(i: int, tag: str) -> dict[str, str]:
        return {**base_env, "XDG_CACHE_HOME": str(root / f"cold-{tag}-{i}")}

    def fresh(tag: str, i: int) -> Path:
        directory = work / f"{tag}-{i}"
        directory.mkdir()
        return directory

    all_flags = [f"--{f}" for f in ALL]
    cc_answers = [f"{f.key}=y" for f in FEATURES if f.name in ALL]
    cc_config = root / "cookiecutter.yaml"
    cc_config.write_text(f"replay_dir: {root / 'cc-replay'}\ncookiecutters_dir: {root / 'cc-dir'}\n")
    cookiecutter = shutil.which("cookiecutter", path=str(Path(sys.executable).parent)) or shutil.which("cookiecutter")

    commands = [
        Command("python -c pass", lambda i: ([sys.executable, "-c", "pass"], work, warm)),
        Command("scaffold --help", lambda i: ([*exe, "--help"], work, warm)),
        Command("scaffold new (defaults, cold)", lambda i: (
            [*exe, "new", f"cold{i}", "--yes"], fresh("new-cold", i), cold_env(i, "new"))),
        Command("scaffold new (defaults, warm)", lambda i: (
            [*exe, "new", f"warm{i}", "--yes"], fresh("new-warm", i), warm)),
        Command("scaffold new (all features, cold)", lambda i: (
            [*exe, "new", f"allcold{i}", "--yes", *all_flags], fresh("all-cold", i),
            cold_env(i, "all"))),
        Command("scaffold new (all features, warm)", lambda i: (
            [*exe, "new", f"allwarm{i}", "--yes", *all_flags], fresh("all-warm", i), warm)),
    ]
    for label, sub, features in (
        ("scaffold update (all features, edited)", "update", ALL),
        ("scaffold add amp (defaults, edited)", "add", []),
    ):
        command = Command(label, None)
        if not available(exe, sub):
            command.unavailable = f"`scaffold {sub}` is not available yet"
            commands.append(command)
            continue
        setup = root / f"setup-{sub}"
        setup.mkdir()
        # the pristine project, made with a cache of its own, so the warm cache
        # holds only what the measured `new` runs put there
        setup_env = {**base_env, "XDG_CACHE_HOME": str(root / "setup-cache")}
        template = edited_project(setup, "edited", features, setup_env, older_base=sub == "update")

        def make(i: int, template=template, sub=sub) -> tuple[list[str], Path, dict[str, str]]:
            target = fresh(sub, i) / "edited"
            shutil.copytree(template, target, symlinks=True)
            argv = [*exe, "update"] if sub == "update" else [*exe, "add", "amp"]
            return argv, target, warm

        command.make = make
        commands.append(command)
    if cookiecutter:
        def cc(features_y: list[str], tag: str):
            def make(i: int) -> tuple[list[str], Path, dict[str, str]]:
                out = fresh(tag, i)
                argv = [cookiecutter, "--no-input", "--config-file", str(cc_config), "-o", str(out),
                        str(REPO / "templates"), f"project_name=cc{i}", *features_y]
                return argv, out, warm
            return make
        commands += [
            Command("cookiecutter --no-input (defaults)", cc([], "cc-default")),
            Command("cookiecutter --no-input (all features)", cc(cc_answers, "cc-all")),
        ]
    else:
        missing = Command("cookiecutter --no-input", None)
        missing.unavailable = "cookiecutter is not installed"
        commands.append(missing)
    # warm the warm cache (and the OS file cache) once, unmeasured
    for label in ("scaffold new (defaults, warm)", "scaffold new (all features, warm)"):
        command = next(c for c in commands if c.label == label)
        argv, cwd, env = command.make("warmup")
        timed(argv, cwd, env)
    return commands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command (alternating)")
    parser.add_argument("--markdown", type=Path, help="also write the results as a RESULTS.md section")
    parser.add_argument("--json", type=Path, help="also write the raw figures as JSON")
    args = parser.parse_args()

    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        commands = build_commands(Path(tmp), args)
        runnable = [c for c in commands if not c.unavailable]
        for i in range(args.repeats):
            for command in runnable:
                command.run(i)
            print(f"  round {i + 1}: " + "  ".join(f"{c.wall[-1]:.2f}" for c in runnable), flush=True)
    load_after = os.getloadavg()

    width = max(len(c.label) for c in commands) + 2
    lines = [f"{'':{width}}{'wall (s)':>24}{'CPU (s)':>24}"]
    for c in commands:
        if c.unavailable:
            lines.append(f"{c.label:{width}}not available: {c.unavailable}")
        else:
            lines.append(f"{c.label:{width}}{c.fmt(c.wall):>24}{c.fmt(c.cpu):>24}")
    load_note = (f"load average (1 min) before/after: {load[0]:.2f} / {load_after[0]:.2f} "
                 f"on {os.cpu_count()} cores")
    print(f"\nmedian [min-max] over {args.repeats} runs; {load_note}")
    print("\n".join(lines))

    by_label = {c.label: c for c in commands}
    target_rows = []
    print("\ntargets (median wall time)")
    for label, limit in TARGETS.items():
        c = by_label.get(label)
        if c is None or c.unavailable:
            target_rows.append((label, limit, None))
            print(f"  n/a     {label} <= {limit} s: not measured")
            continue
        value = statistics.median(c.wall)
        target_rows.append((label, limit, value))
        print(f"  {'met   ' if value <= limit else 'MISSED'}  {label} <= {limit} s: {value:.3f} s")
    ratios = []
    for ours, theirs in (("scaffold new (defaults, warm)", "cookiecutter --no-input (defaults)"),
                         ("scaffold new (all features, warm)", "cookiecutter --no-input (all features)"),
                         ("scaffold new (all features, cold)", "cookiecutter --no-input (all features)")):
        a, b = by_label.get(ours), by_label.get(theirs)
        if a and b and not a.unavailable and not b.unavailable:
            ratios.append((ours, theirs, statistics.median(a.wall) / statistics.median(b.wall)))
            print(f"  {ours} / {theirs}: {ratios[-1][2]:.2f}")

    if args.json:
        args.json.write_text(json.dumps({c.label: {"wall": c.wall, "cpu": c.cpu} for c in runnable}, indent=1))
    if args.markdown:
        out = [
            "## CLI speed: scaffold next to cookiecutter",
            "",
            f"`python benchmarks/cli_speed.py --repeats {args.repeats}`",
            "",
            f"Whole process, median [min-max] over {args.repeats} runs (alternating). "
            "CPU = user + system time of the process. Cold: empty scaffold cache; warm: "
            "the cache of earlier runs, each run under a new project name.",
            f"{load_note}.",
            "",
            "| command | wall (s) | CPU (s) |",
            "|---|---:|---:|",
        ]
        for c in commands:
            if c.unavailable:
                out.append(f"| {c.label} | not available: {c.unavailable} | |")
            else:
                out.append(f"| {c.label} | {c.fmt(c.wall)} | {c.fmt(c.cpu)} |")
        out += ["", "| target (median wall) | measured | met |", "|---|---:|---|"]
        for label, limit, value in target_rows:
            shown = "not measured" if value is None else f"{value:.3f} s"
            met = "n/a" if value is None else ("yes" if value <= limit else "**no**")
            out.append(f"| {label} <= {limit} s | {shown} | {met} |")
        if ratios:
            out += ["", "| ratio of median wall times | |", "|---|---:|"]
            out += [f"| {a} / {b} | {r:.2f} |" for a, b, r in ratios]
        args.markdown.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
