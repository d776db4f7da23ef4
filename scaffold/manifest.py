"""The project's own record, kept in `.scaffold/` for later updates.

- `.scaffold/answers.json`: the tool version, the answers (name, features) and,
  when there are any, ``own_files``: the sorted project paths that are the user's
  own (an update leaves them alone; see scaffold.update), and ``templates``: the
  source and version of the templates that made the project.
- `.scaffold/base/<path>`: the pristine render of every generated file, the merge
  base that `scaffold update` needs because the installed tool only has today's
  templates.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from scaffold import __version__
from scaffold.errors import ProjectError
from scaffold.spec import ProjectSpec
from scaffold.template_source import RECORD_KEY, TemplateSource

RECORD_DIR = ".scaffold"
ANSWERS_FILE = "answers.json"
BASE_DIR = "base"
OWN_FILES_KEY = "own_files"


@dataclass(frozen=True)
class Manifest:
    """What a project recorded at its last `new` or `update`."""

    spec: ProjectSpec
    tool_version: str
    base: dict[str, str]  # relative path -> pristine generated text
    own_files: frozenset[str] = field(default_factory=frozenset)  # the user's files


def answers_text(
    spec: ProjectSpec,
    own_files: Iterable[str] = (),
    version: str = __version__,
    templates: TemplateSource | None = None,
) -> str:
    """The text of `.scaffold/answers.json` for ``spec``, the user's own files and
    the source of the templates (each recorded only when given: a record without
    them is what scaffold 0.2 wrote)."""
    answers = {"tool_version": version, **spec.to_answers()}
    own = sorted(set(own_files))
    if own:  # absent when empty: the records of projects without any stay as they were
        answers[OWN_FILES_KEY] = own
    if templates is not None:
        answers[RECORD_KEY] = templates.to_record()
    return json.dumps(answers, indent=2) + "\n"


def manifest_files(
    spec: ProjectSpec,
    files: dict[str, str],
    own_files: Iterable[str] = (),
    templates: TemplateSource | None = None,
) -> dict[str, str]:
    """The `.scaffold/` files recording ``spec``, the pristine ``files``, the
    paths (project-relative) that are the user's own and the templates' source."""
    answers = answers_text(spec, own_files, templates=templates)
    record = {f"{RECORD_DIR}/{ANSWERS_FILE}": answers}
    for path, text in files.items():
        record[f"{RECORD_DIR}/{BASE_DIR}/{path}"] = text
    return record


def read_tree(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` as {relative posix path: text}; {} if absent."""
    if not directory.is_dir():
        return {}
    return {
        path.relative_to(directory).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def _own_files(answers: dict, answers_path: Path) -> frozenset[str]:
    own = answers.get(OWN_FILES_KEY, [])
    if not isinstance(own, list) or not all(isinstance(p, str) for p in own):
        raise ProjectError(
            f"{answers_path}: {OWN_FILES_KEY} must be a list of project paths"
        )
    return frozenset(own)


def read_manifest(project_dir: Path) -> Manifest:
    """Load the record of the project at ``project_dir``."""
    record_dir = project_dir / RECORD_DIR
    answers_path = record_dir / ANSWERS_FILE
    if not answers_path.is_file():
        raise ProjectError(
            f"{project_dir} is not a scaffold project (no {RECORD_DIR}/{ANSWERS_FILE}); "
            "create one with `scaffold new`"
        )
    try:
        answers = json.loads(answers_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ProjectError(f"cannot read {answers_path}: {exc}") from exc
    return Manifest(
        spec=ProjectSpec.from_answers(answers),
        tool_version=str(answers.get("tool_version", "unknown")),
        base=read_tree(record_dir / BASE_DIR),
        own_files=_own_files(answers, answers_path),
    )


def parse_version(version: str) -> tuple[int, ...] | None:
    """``"0.2.0"`` as ``(0, 2, 0)``; None for anything else (e.g. ``"unknown"``)."""
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return None


def check_tool_version(recorded: str) -> None:
    """Refuse a project last updated by a newer scaffold (its templates are newer)."""
    mine, theirs = parse_version(__version__), parse_version(recorded)
    if mine is not None and theirs is not None and theirs > mine:
        raise ProjectError(
            f"the project was last updated by scaffold {recorded}, newer than this "
            f"scaffold {__version__}; upgrade scaffold first"
        )
