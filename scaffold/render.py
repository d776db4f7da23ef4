"""Render the project template in memory with one Jinja environment.

``templates/`` is a real cookiecutter template; scaffold renders it itself (faster,
no hooks, no prompts) with the same Jinja settings that ``cookiecutter.json``
declares, and skips the files of features that were not chosen -- the files that
the template's post-generation hook deletes for cookiecutter users.
"""

from functools import cache
from pathlib import Path

from scaffold.features import FEATURES
from scaffold.spec import ProjectSpec

PROJECT_DIR_NAME = "{{cookiecutter.project_slug}}"
FEATURES_DIR_NAME = "templates"  # templates/templates/<feature>/: cookiecutter's name


def template_root() -> Path:
    """The cookiecutter template directory (next to the package, or inside it)."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "templates", package_dir.parent / "templates"):
        if (candidate / "cookiecutter.json").is_file():
            return candidate
    raise FileNotFoundError("scaffold's templates directory is missing")


def excluded_files(spec: ProjectSpec) -> set[str]:
    """Template files that belong to features this spec does not have."""
    return {
        path
        for feature in FEATURES
        if feature.name not in spec.features
        for path in feature.files
    }


def template_files(root: Path | None = None) -> list[str]:
    """Relative paths of every file in the project template, sorted."""
    project_dir = (root or template_root()) / PROJECT_DIR_NAME
    return sorted(
        path.relative_to(project_dir).as_posix()
        for path in project_dir.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )


@cache
def _environment(root: Path):
    """One Jinja environment per template directory, kept for the process: a
    second render reuses the templates already compiled (jinja reloads one whose
    file changed)."""
    import jinja2  # lazy: `scaffold --help` must stay fast

    return jinja2.Environment(
        # the search path of cookiecutter's own loader: the project template, then
        # `templates/` beside cookiecutter.json, where each feature's pieces live
        loader=jinja2.FileSystemLoader(
            [str(root / PROJECT_DIR_NAME), str(root / FEATURES_DIR_NAME)]
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_project(spec: ProjectSpec, root: Path | None = None) -> dict[str, str]:
    """Render every file of the project for ``spec``: {relative path: text}."""
    root = root or template_root()
    environment = _environment(root)
    context = {"cookiecutter": spec.cookiecutter_context()}
    skip = excluded_files(spec)
    return {
        path: environment.get_template(path).render(context)
        for path in template_files(root)
        if path not in skip
    }
