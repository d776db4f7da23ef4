"""Every command the READMEs show works.

Fenced blocks marked ```bash are runnable on a CPU: each runs as one bash script
in a sandbox. Blocks marked ```shell need a cluster, several machines or start a
server (torchrun across nodes, sbatch, tensorboard): their syntax is checked
with `bash -n`. Any other fence in these READMEs fails the test, so nothing
escapes both.

Where a block runs:
- README.md: in a copy of this checkout, with PYTHONPATH pointing at the copy,
  so that `python tools/examples.py` writes there and not here; except a
  block that runs train.py without making a project first, which runs in a copy
  of generated_examples/all/ (every feature).
- generated_examples/README.md: a feature's block in a copy of that feature's
  example project; the closing "Regenerating" block like README.md's.

What the sandbox changes, and why (bash functions defined before the block):
- `python train.py ...` and `torchrun ... train.py ...` get the demo's data
  shrunk (--n-train 256 --n-val 64 --n-test 64) appended: the commands run as
  written, on less data; the full demo run is tests/test_generated_runs.py's.
- `pip install ...` checks what it would install (the paths, extras and
  requirement files exist; a pinned torch is the torch installed) and installs
  nothing: the suite runs in the environment that command line built.
- `python -m pytest -n 2` (the whole suite) is checked to be .ci/run's
  command, which is how it runs: a test cannot start the suite it belongs to.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
READMES = ["README.md", "generated_examples/README.md"]
SHRINK = "--n-train 256 --n-val 64 --n-test 64"
FENCE = re.compile(r"^```(\S*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)

PIP_CHECK = r'''
"""Check a `pip install` command line without installing anything."""
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

args = sys.argv[1:]
assert args and args[0] == "install", f"pip {args}: only `pip install` is expected"
args = args[1:]
while args:
    arg = args.pop(0)
    if arg == "-e":
        continue
    if arg == "-r":
        target = Path(args.pop(0))
        assert target.is_file(), f"pip install -r {target}: no such file"
        continue
    local = re.fullmatch(r"(\.[^\[]*)(?:\[(.*)\])?", arg)
    if local:
        project = Path(local.group(1)) / "pyproject.toml"
        assert project.is_file(), f"pip install {arg}: {project} is missing"
        extras = tomllib.loads(project.read_text())["project"].get("optional-dependencies", {})
        for extra in filter(None, (local.group(2) or "").split(",")):
            assert extra in extras, f"pip install {arg}: no extra {extra!r}"
        continue
    pin = re.fullmatch(r"([A-Za-z0-9_.-]+)==(.+)", arg)
    assert pin, f"pip install {arg}: expected a path, -r FILE or NAME==VERSION"
    installed = importlib.metadata.version(pin.group(1)).split("+")[0]
    assert installed == pin.group(2), f"{arg}: {installed} is installed"
print("pip: checked, nothing installed:", *sys.argv[1:])
'''

PRELUDE = f"""
set -euo pipefail
python() {{
    if [ "${{1:-}}" = train.py ]; then
        command python "$@" {SHRINK}
    elif [ "$*" = "-m pytest -n 2" ]; then
        grep -qxF "pip install -e '.[test]' && python -m pytest -n 2" "$CI_RUN"
        echo "the whole suite: run by .ci/run, not from inside itself"
    else
        command python "$@"
    fi
}}
torchrun() {{ command torchrun "$@" {SHRINK}; }}
pip() {{ command python "$PIP_CHECK" "$@"; }}
"""


def fenced_blocks(readme: str) -> list[tuple[str, str, str]]:
    """(language, code, the nearest `## ` heading above) for every fenced block."""
    text = (REPO / readme).read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        headings = re.findall(r"^## (.+)$", text[: match.start()], re.MULTILINE)
        blocks.append((match.group(1), match.group(2), headings[-1] if headings else ""))
    return blocks


def block_cases() -> list:
    cases = []
    for readme in READMES:
        for index, (language, code, heading) in enumerate(fenced_blocks(readme)):
            case_id = f"{readme}#{index + 1}-{language or 'plain'}"
            cases.append(pytest.param(readme, language, code, heading, id=case_id))
    return cases


def copy_checkout(dest: Path) -> Path:
    """The files of this checkout that the README's commands use."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", "runs")
    for name in ("scaffold", "templates", "generated_examples", "tests", "benchmarks", "tools", ".ci"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore, symlinks=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    return dest


def sandbox_for(readme: str, code: str, heading: str, tmp: Path) -> Path:
    example = REPO / "generated_examples" / heading
    if readme == "generated_examples/README.md" and heading != "Regenerating":
        assert (example / "train.py").is_file(), f"no example project for section {heading!r}"
        return Path(shutil.copytree(example, tmp / heading))
    makes_a_project = "scaffold new" in code
    if "train.py" in code and not makes_a_project:
        return Path(shutil.copytree(REPO / "generated_examples" / "all", tmp / "all"))
    return copy_checkout(tmp / "checkout")


def test_the_readmes_have_runnable_blocks():
    for readme in READMES:
        assert any(lang == "bash" for lang, _, _ in fenced_blocks(readme)), readme


@pytest.mark.parametrize("readme,language,code,heading", block_cases())
def test_readme_block(readme, language, code, heading, tmp_path):
    assert language in ("bash", "shell"), (
        f"{readme}: a ```{language} block; mark commands ```bash (run by this test) "
        "or ```shell (syntax-checked), and other text as ```text"
    )
    if language == "shell":
        result = subprocess.run(["bash", "-n"], input=code, capture_output=True, text=True)
        assert result.returncode == 0, f"bash -n:\n{code}\n{result.stderr}"
        return
    cwd = sandbox_for(readme, code, heading, tmp_path)
    pip_check = tmp_path / "pip_check.py"
    pip_check.write_text(PIP_CHECK)
    env = {
        **os.environ,
        "PIP_CHECK": str(pip_check),
        "CI_RUN": str(REPO / ".ci" / "run"),
        "PYTHONPATH": str(cwd) if (cwd / "scaffold").is_dir() else "",
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")),
    }
    result = subprocess.run(
        ["bash", "-c", PRELUDE + code], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=600,
    )
    assert result.returncode == 0, (
        f"{readme} ({heading}) exit {result.returncode}:\n{code}\n"
        f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    )
