"""`scaffold new` as a library call: spec -> files -> a project on disk.

The target may be a directory that already holds code, such as a repository with
the user's own model: the training files are written beside it, every file that
is already there stays as it is, and those of them that the templates would have
written (a model.py, a data.py, a README.md ...) are recorded as the user's own,
so that `scaffold update` leaves them alone.
"""

from dataclasses import dataclass
from pathlib import Path

from scaffold.errors import TargetError
from scaffold.generate import build_project
from scaffold.manifest import RECORD_DIR, manifest_files
from scaffold.spec import ProjectSpec
from scaffold.template_source import installed_source
from scaffold.writer import check_target, write_project

# the training loop itself: a directory whose own files have these names cannot
# receive it without losing one of them
LOOP_FILES = ("train.py", "train_utils.py")


@dataclass(frozen=True)
class NewProject:
    """What `scaffold new` made: the spec, and the user's files it kept."""

    spec: ProjectSpec
    own_files: tuple[str, ...] = ()  # generated paths the directory already had


def project_name(path: Path | str) -> str:
    """The project's name: the directory's last part (`.` is the current one)."""
    text = str(path)
    if not text.strip():
        return text  # an empty name, which the spec refuses
    return Path(text).name or Path(text).resolve().name  # ".": the directory itself


def existing_files(target: Path, files: dict[str, str]) -> tuple[set[str], set[str]]:
    """Of the generated ``files``, those ``target`` already has: (the same text,
    other content). Raises TargetError for a directory that is already a project,
    or whose own files would take the training loop's place."""
    try:
        return _existing_files(target, files)
    except OSError as exc:  # e.g. a path longer than the system allows
        raise TargetError(f"cannot write {target}: {exc.strerror or exc}") from exc


def _existing_files(target: Path, files: dict[str, str]) -> tuple[set[str], set[str]]:
    if not target.is_dir():
        return set(), set()
    if (target / RECORD_DIR).exists():
        raise TargetError(
            f"{target} is already a scaffold project ({RECORD_DIR}/ exists); change "
            "it with `scaffold update`, `scaffold add` or `scaffold remove`"
        )
    same, other = set(), set()
    for relative, text in files.items():
        path = target / relative
        if not (path.exists() or path.is_symlink()):
            continue
        if path.is_file() and path.read_bytes() == text.encode("utf-8"):
            same.add(relative)
        else:
            other.add(relative)
    taken = [name for name in LOOP_FILES if name in other]
    if taken:
        raise TargetError(
            f"{target} has its own {' and '.join(taken)}, where scaffold writes the "
            "training loop; rename yours (e.g. to my_train.py) and run again"
        )
    return same, other


def create_project(path: Path | str, features: set[str]) -> NewProject:
    """Generate a project named after ``path``'s last part into ``path``.

    ``path`` may exist and hold files: none of them is changed.
    """
    target = Path(path)
    spec = ProjectSpec.create(project_name(path), features)
    files = build_project(spec)
    same, own = existing_files(target, files)
    new = {p: text for p, text in files.items() if p not in same | own}
    record = manifest_files(spec, files, own_files=own, templates=installed_source())
    write_project(target, {**new, **record})
    return NewProject(spec, tuple(sorted(own)))


def check_new(path: Path | str) -> ProjectSpec:
    """Check, before any question is asked, that a project can be made at
    ``path``: its name, and a target that is not a project and has no loop of its
    own. Returns the spec without features."""
    spec = ProjectSpec.create(project_name(path), set())
    target = Path(path)
    existing_files(target, build_project(spec))
    try:
        check_target(target.absolute(), {})
    except OSError as exc:
        raise TargetError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return spec
