"""The torch and Python that generated projects state and run on (issue 32.4).

Each requirements.txt states the oldest torch that its features need, the floor
that tools/compat_matrix.py ran them on (its TORCH_FLOORS; the README's table has
the runs). The generated code compiles on every Python from 3.10 that pyenv has
here, and uses nothing of the standard library newer than 3.10.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from feature_sets import covering_sets
from helpers import render

from scaffold.features import FEATURES
from scaffold.generate import build_project
from scaffold.spec import ProjectSpec
from tools.compat_matrix import TORCH_FLOORS, check_feature, torch_floor

# Pythons other than this one (3.11) that the generated code must compile on
PYTHONS = ("3.10", "3.12", "3.13")
PYENV = Path.home() / ".pyenv" / "versions"

# names that Python 3.11 or later added to the standard library
# (tomllib, exception groups, asyncio.TaskGroup, enum.StrEnum, typing's new names,
# datetime.UTC, BaseException.add_note)
NEWER_THAN_310 = {"tomllib", "ExceptionGroup", "BaseExceptionGroup", "TaskGroup",
                  "StrEnum", "Self", "LiteralString", "Never", "assert_never",
                  "reveal_type", "UTC", "add_note"}


def floor_stated(features) -> str:
    text = build_project(ProjectSpec.create("x", set(features)))["requirements.txt"]
    floors = re.findall(r"^torch>=([\d.]+)$", text, flags=re.MULTILINE)
    assert len(floors) == 1, text
    return floors[0]


def test_every_feature_states_the_floor_that_was_tested():
    assert set(TORCH_FLOORS) <= {"base", *(f.name for f in FEATURES)}
    assert floor_stated([]) == TORCH_FLOORS["base"]
    for feature in FEATURES:
        assert floor_stated([feature.name]) == torch_floor([feature.name]), feature.name


def test_a_project_states_the_highest_floor_of_its_features():
    for features in covering_sets():
        assert floor_stated(features) == torch_floor(features), sorted(features)


def largest_projects(root: Path) -> list[Path]:
    """The base project and the largest covering sets with each engine."""
    sets = covering_sets()
    picked = [frozenset()]
    for engine in ("ddp", "fsdp"):
        picked.append(max((s for s in sets if engine in s), key=len))
    return [render(root, features, name=f"p{i}", tiny=False)
            for i, features in enumerate(picked)]


def test_the_generated_code_uses_nothing_newer_than_python_310(tmp_path):
    for project in largest_projects(tmp_path):
        for path in project.rglob("*.py"):
            names = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Name):
                    names.add(node.id)
                elif isinstance(node, ast.Attribute):
                    names.add(node.attr)
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    names |= {part for alias in node.names
                              for part in alias.name.split(".")}
                    names |= set((getattr(node, "module", None) or "").split("."))
            assert not names & NEWER_THAN_310, (path, names & NEWER_THAN_310)


@pytest.mark.parametrize("version", PYTHONS)
def test_the_generated_code_compiles_on(tmp_path, version):
    found = sorted(PYENV.glob(f"{version}.*/bin/python"))
    if not found:
        pytest.skip(f"no Python {version} under {PYENV}")
    for project in largest_projects(tmp_path):
        result = subprocess.run([str(found[-1]), "-m", "compileall", "-q", str(project)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_matrix_script_runs_a_project_with_this_torch():
    # what tools/compat_matrix.py does for each feature under another torch, here
    # with the suite's own: a fast-dev-run, and a resume that ends bit-identical
    assert check_feature(sys.executable, "clip-value", timeout=300) == {
        "fast_dev_run": "ok", "resume": "ok"}
