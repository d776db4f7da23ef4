"""Where a project's templates come from: upstream scaffold's, or a team's fork.

A team makes the templates its own by forking scaffold and editing ``templates/``;
the fork names itself in ``templates/cookiecutter.json``:

- ``"_templates_source"``: the name of whoever owns the templates (upstream:
  ``"scaffold"``),
- ``"_templates_version"`` (optional): their version; without it, the version of
  the scaffold package that holds them.

(Cookiecutter neither asks for nor renders keys that start with ``_``.) ``scaffold
new`` and ``update`` record the source and version in ``.scaffold/answers.json``
under ``"templates"``; a record without it was made by upstream scaffold.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from scaffold import __version__

UPSTREAM = "scaffold"
SOURCE_KEY = "_templates_source"
VERSION_KEY = "_templates_version"
RECORD_KEY = "templates"  # in .scaffold/answers.json


@dataclass(frozen=True)
class TemplateSource:
    """Who made a set of templates, and which version of them."""

    source: str
    version: str

    def describe(self) -> str:
        """``<source> <version>``, for messages."""
        return f"{self.source} {self.version}"

    def to_record(self) -> dict[str, str]:
        """The value recorded under ``"templates"`` in answers.json."""
        return {"source": self.source, "version": self.version}


def installed_source(template_dir: Path | None = None) -> TemplateSource:
    """The source of the templates in ``template_dir`` (default: the installed
    ones), from their cookiecutter.json."""
    from scaffold.render import template_root  # lazy: not needed by --help

    path = (template_dir or template_root()) / "cookiecutter.json"
    settings = json.loads(path.read_text(encoding="utf-8"))
    return TemplateSource(
        source=str(settings.get(SOURCE_KEY, UPSTREAM)),
        version=str(settings.get(VERSION_KEY, __version__)),
    )


def recorded_source(answers: dict) -> TemplateSource:
    """The source that made a project, from its answers.json (an old record
    without one was made by upstream scaffold, at its ``tool_version``)."""
    record = answers.get(RECORD_KEY)
    if isinstance(record, dict) and "source" in record:
        return TemplateSource(
            source=str(record["source"]),
            version=str(record.get("version", "unknown")),
        )
    return TemplateSource(UPSTREAM, str(answers.get("tool_version", "unknown")))


def source_change(answers: dict, installed: TemplateSource) -> str | None:
    """One line when ``installed`` templates come from another source than the
    ones that made the project; None when the source is the same."""
    made_by = recorded_source(answers)
    if made_by.source == installed.source:
        return None
    return (
        f"note: this project was made from {made_by.describe()}'s templates; "
        f"these are {installed.describe()}'s, and the update merges them in"
    )


def update_notice(project_dir: Path, template_dir: Path | None = None) -> str | None:
    """The line `scaffold update` prints before merging when the project was made
    from templates of another source; None otherwise (or when there is no
    readable record: the update itself then says what is wrong)."""
    from scaffold.manifest import ANSWERS_FILE, RECORD_DIR  # lazy: no import cycle

    try:
        answers = json.loads(
            (Path(project_dir) / RECORD_DIR / ANSWERS_FILE).read_text(encoding="utf-8")
        )
    except (OSError, ValueError):
        return None
    if not isinstance(answers, dict):
        return None
    return source_change(answers, installed_source(template_dir))
