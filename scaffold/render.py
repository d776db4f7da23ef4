"""Render the project template in memory with one Jinja environment.

``templates/`` is a real cookiecutter template; scaffold renders it itself (faster,
no hooks, no prompts) with the same Jinja settings that ``cookiecutter.json``
declares, and skips the files of features that were not chosen -- the files that
the template's post-generation hook deletes for cookiecutter users.
"""

import os
from pathlib import Path

from scaffold.features import FEATURES
from scaffold.formatting import NAME_MARK, SLUG_MARK
from scaffold.spec import ProjectSpec

PROJECT_DIR_NAME = "{{cookiecutter.project_slug}}"
FEATURES_DIR_NAME = "templates"  # templates/templates/<feature>/: cookiecutter's name


def cache_root() -> Path | None:
    """scaffold's cache directory; None when SCAFFOLD_NO_CACHE=1."""
    if os.environ.get("SCAFFOLD_NO_CACHE") == "1":
        return None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scaffold"


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


def _bytecode_cache(cache: Path):
    import jinja2

    directory = cache / f"jinja-{jinja2.__version__}-1"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home only costs speed
        return None
    return jinja2.FileSystemBytecodeCache(str(directory))


def render_project(
    spec: ProjectSpec, root: Path | None = None, name_marks: bool = False
) -> dict[str, str]:
    """Render every file of the project for ``spec``: {relative path: text}.

    ``name_marks``: the files get scaffold.formatting's marks in place of the
    project's name and slug (which finish_files puts back after formatting).
    """
    import jinja2  # lazy: `scaffold --help` must stay fast

    root = root or template_root()
    cache = cache_root()
    environment = jinja2.Environment(
        # the search path of cookiecutter's own loader: the project template, then
        # `templates/` beside cookiecutter.json, where each feature's pieces live
        loader=jinja2.FileSystemLoader(
            [str(root / PROJECT_DIR_NAME), str(root / FEATURES_DIR_NAME)]
        ),
        # compiled templates on disk, reused while the template's text is
        # unchanged (jinja checks its hash): no compiling on every `scaffold new`.
        # The compiled code depends on the settings below too: change them only
        # together with the cache directory's name.
        bytecode_cache=None if cache is None else _bytecode_cache(cache),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    answers = spec.cookiecutter_context()
    if name_marks:
        answers.update(project_name=NAME_MARK, project_slug=SLUG_MARK)
    context = {"cookiecutter": answers}
    skip = excluded_files(spec)
    return {
        path: environment.get_template(path).render(context)
        for path in template_files(root)
        if path not in skip
    }
