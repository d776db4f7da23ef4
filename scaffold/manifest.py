"""The project's own record, kept in `.scaffold/` for later updates.

- `.scaffold/answers.json`: the tool version and the answers (name, features).
- `.scaffold/base/<path>`: the pristine render of every generated file, the merge
  base that `scaffold update` needs because the installed tool only has today's
  templates.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from scaffold import __version__
from scaffold.errors import ProjectError
from scaffold.spec import ProjectSpec
from scaffold.template_source import RECORD_KEY, TemplateSource

RECORD_DIR = ".scaffold"
ANSWERS_FILE = "answers.json"
BASE_DIR = "base"


@dataclass(frozen=True)
class Manifest:
    """What a project recorded at its last `new` or `update`."""

    spec: ProjectSpec
    tool_version: str
    base: dict[str, str]  # relative path -> pristine generated text


OWN_FILES_KEY = "own_files"  # in answers.json: the user's files, never merged


def manifest_files(
    spec: ProjectSpec,
    files: dict[str, str],
    own_files: Iterable[str] = (),
    templates: TemplateSource | None = None,
) -> dict[str, str]:
    """The `.scaffold/` files recording ``spec`` and the pristine ``files``.

    ``own_files``: project paths that are the user's (recorded sorted, when any);
    ``templates``: the source of the templates that rendered ``files`` (recorded
    when given). Left out, the record is what scaffold 0.2 wrote.
    """
    answers = {"tool_version": __version__, **spec.to_answers()}
    if own_files:
        answers[OWN_FILES_KEY] = sorted(set(own_files))
    if templates is not None:
        answers[RECORD_KEY] = templates.to_record()
    record = {f"{RECORD_DIR}/{ANSWERS_FILE}": json.dumps(answers, indent=2) + "\n"}
    for path, text in files.items():
        record[f"{RECORD_DIR}/{BASE_DIR}/{path}"] = text
    return record


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
    base_dir = record_dir / BASE_DIR
    base = {
        path.relative_to(base_dir).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(base_dir.rglob("*"))
        if path.is_file()
    }
    return Manifest(
        spec=ProjectSpec.from_answers(answers),
        tool_version=str(answers.get("tool_version", "unknown")),
        base=base,
    )


def read_own_files(project_dir: Path) -> list[str]:
    """The paths the project's record names as the user's own (none in a record
    from before scaffold 0.3, or one that cannot be read: read_manifest says why)."""
    try:
        answers = json.loads(
            (project_dir / RECORD_DIR / ANSWERS_FILE).read_text(encoding="utf-8")
        )
    except (OSError, ValueError):
        return []
    own = answers.get(OWN_FILES_KEY, []) if isinstance(answers, dict) else []
    return sorted(str(path) for path in own) if isinstance(own, list) else []
