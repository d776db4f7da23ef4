"""The pipeline from a spec to the final text of every file of a project.

The templates are written so that they render black-clean Python for every
feature set (tests/test_black_clean.py checks every set), so the render is the
final text: nothing formats it afterwards. Each Python file is compiled once, so
that a broken template is a RenderError here rather than a broken project.
"""

from pathlib import Path

from scaffold.errors import RenderError
from scaffold.render import render_project
from scaffold.spec import ProjectSpec


def check_compiles(path: str, source: str) -> None:
    """Raise RenderError when ``source`` does not compile."""
    try:
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise RenderError(f"generated {path} does not compile: {exc}") from exc


def build_project(spec: ProjectSpec, template_dir: Path | None = None) -> dict[str, str]:
    """Render and compile-check every file for ``spec``: {relative path: text}."""
    files = render_project(spec, template_dir)
    for path, text in sorted(files.items()):
        if path.endswith(".py"):
            check_compiles(path, text)
    return files
