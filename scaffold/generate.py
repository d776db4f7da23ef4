"""The pipeline from a spec to the final text of every file of a project."""

from pathlib import Path

from scaffold.formatting import NAME_MARK, SLUG_MARK, finish_files
from scaffold.registry import read_registry
from scaffold.render import render_project, template_root
from scaffold.spec import ProjectSpec


def build_project(spec: ProjectSpec, template_dir: Path | None = None) -> dict[str, str]:
    """Render, format and verify every file for ``spec``: {relative path: text}."""
    root = template_dir or template_root()
    files = render_project(spec, root, name_marks=True)
    names = {NAME_MARK: spec.name, SLUG_MARK: spec.slug}
    return finish_files(files, names, known=read_registry(root))
