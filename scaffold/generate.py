"""The pipeline from a spec to the final text of every file of a project."""

from pathlib import Path

from scaffold.formatting import finish_files
from scaffold.render import render_project
from scaffold.spec import ProjectSpec


def build_project(spec: ProjectSpec, template_dir: Path | None = None) -> dict[str, str]:
    """Render, format and verify every file for ``spec``: {relative path: text}."""
    files = render_project(spec, template_dir)
    return finish_files(files, names=(spec.name, spec.slug))
