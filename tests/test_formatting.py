"""Formatting: what `scaffold new` writes is what black makes of it, unformatted.

Nothing formats a render (see scaffold/generate.py): the templates are written
in black's layout. These tests compare the built project with black run for real
on it, for names of every kind, check that black is not even imported, and that
a template producing invalid Python is a RenderError.
"""

import subprocess
import sys

import black
import pytest

from scaffold.errors import RenderError
from scaffold.features import compatible_with
from scaffold.generate import build_project, check_compiles
from scaffold.render import render_project
from scaffold.spec import ProjectSpec

ALL = set(compatible_with("ddp"))  # the largest project


# one letter; a name that is also a word of the templates; hyphens and spaces;
# names long enough that a line holding them no longer fits
NAMES = ["x", "demo", "model", "My Project-2", "a" * 60, "n" * 100 + " z"]


@pytest.mark.parametrize("features", [set(), ALL], ids=["base", "all"])
@pytest.mark.parametrize("name", NAMES)
def test_build_equals_black_on_the_real_render(name, features):
    spec = ProjectSpec.create(name, features)
    built = build_project(spec)
    assert built == render_project(spec)  # the render, as it is
    for path, text in built.items():
        if path.endswith(".py"):
            assert black.format_str(text, mode=black.Mode()) == text, path


def test_generating_needs_no_black(tmp_path):
    """`scaffold new` does not even import black."""
    code = (
        "import sys\n"
        "from scaffold.generate import build_project\n"
        "from scaffold.spec import ProjectSpec\n"
        f"for features in (set(), {sorted(ALL)!r}):\n"
        "    build_project(ProjectSpec.create('some-name', set(features)))\n"
        "assert 'black' not in sys.modules, 'black was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr


def test_invalid_python_is_a_render_error():
    with pytest.raises(RenderError, match="generated a.py does not compile"):
        check_compiles("a.py", "def f(:\n")


def test_a_template_that_renders_invalid_python_fails_the_build(tmp_path):
    import shutil

    from scaffold.render import PROJECT_DIR_NAME, template_root

    root = shutil.copytree(template_root(), tmp_path / "templates")
    model = root / PROJECT_DIR_NAME / "model.py"
    model.write_text(model.read_text() + "\ndef broken(:\n")
    with pytest.raises(RenderError, match="generated model.py does not compile"):
        build_project(ProjectSpec.create("x"), root)
