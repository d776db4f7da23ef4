"""The project's own record, kept in `.scaffold/` for later updates.

- `.scaffold/answers.json`: the tool version and the answers (name, features).
- `.scaffold/base/<path>`: the pristine render of every generated file, the merge
  base that `scaffold update` needs because the installed tool only has today's
  templates.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from scaffold import __version__
from scaffold.errors import ProjectError
from scaffold.spec import ProjectSpec

RECORD_DIR = ".scaffold"
ANSWERS_FILE = "answers.json"
BASE_DIR = "base"


@dataclass(frozen=True)
class Manifest:
    """What a project recorded at its last `new` or `update`."""

    spec: ProjectSpec
    tool_version: str
    base: dict[str, str]  # relative path -> pristine generated text


def manifest_files(spec: ProjectSpec, files: dict[str, str]) -> dict[str, str]:
    """The `.scaffold/` files recording ``spec`` and the pristine ``files``."""
    answers = {"tool_version": __version__, **spec.to_answers()}
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
