"""`scaffold new` as a library call: spec -> files -> a project on disk."""

from pathlib import Path

from scaffold.generate import build_project
from scaffold.manifest import manifest_files
from scaffold.spec import ProjectSpec
from scaffold.writer import write_project


def create_project(
    path: Path, features: set[str], force: bool = False
) -> ProjectSpec:
    """Generate a project named after ``path``'s last part into ``path``."""
    spec = ProjectSpec.create(Path(path).name, features)
    files = build_project(spec)
    write_project(Path(path), {**files, **manifest_files(spec, files)}, force=force)
    return spec
