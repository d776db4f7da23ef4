"""The plan of an update: what happens to each generated file, decided without
writing anything (see scaffold.update for the three versions of a file, how
conflicts are recorded and which files are the user's own). Presenting a plan is
scaffold.update.report's job, writing it scaffold.update.apply's."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from scaffold import __version__
from scaffold.errors import ProjectError
from scaffold.generate import build_project
from scaffold.manifest import (
    ANSWERS_FILE,
    BASE_DIR,
    RECORD_DIR,
    answers_text,
    check_tool_version,
    read_manifest,
    read_tree,
)
from scaffold.merge import MergeLabels, has_conflict_markers, merge3
from scaffold.spec import ProjectSpec
from scaffold.template_source import installed_source
from scaffold.textdiff import as_text

DEFAULT_LABELS = MergeLabels()

# .scaffold/conflicts/<path>: the render that an unresolved conflict was against
CONFLICTS_DIR = "conflicts"
# <path>.scaffold-new: the new version of a file that could not be merged
NEW_SUFFIX = ".scaffold-new"
# the demo's files: the user's own once they differ from the recorded render
DEMO_FILES = frozenset({"model.py", "data.py"})


class Action(Enum):
    """What an update does to one generated file (the value is the report's word)."""

    ADD = "added"  # a new template file
    UPDATE = "updated"  # the user never changed it: the new render replaces it
    MERGE = "merged"  # both changed it, in different places
    CONFLICT = "conflict"  # both changed the same lines: conflict markers written
    BESIDE = "beside"  # not mergeable: kept as is, new version in <path>.scaffold-new
    DELETE = "removed"  # no longer generated and never changed by the user
    KEEP_CHANGED = "kept"  # no longer generated, but the user changed it
    KEEP_DELETED = "skipped"  # the user deleted it: it stays deleted
    UNRESOLVED = "unresolved"  # still conflicted from an earlier update: left alone
    OWN = "own"  # the user's own file: left alone while its template changed


CONFLICT_ACTIONS = frozenset({Action.CONFLICT, Action.BESIDE, Action.UNRESOLVED})


@dataclass(frozen=True)
class FileChange:
    """The decision for one generated file; ``before``/``after`` are at ``target``."""

    path: str
    action: Action
    before: bytes | None = None  # at ``target`` now (None: no file there)
    after: bytes | None = None  # at ``target`` after the update (None: no file)
    reason: str = ""  # shown in the report
    # for an OWN file: the template's render at the recorded base, and now
    template: tuple[str | None, str | None] | None = None

    @property
    def target(self) -> str:
        """The file this change writes: the path itself, or the one beside it."""
        return self.path + NEW_SUFFIX if self.action is Action.BESIDE else self.path

    @property
    def writes(self) -> bool:
        """Whether applying this change alters a file on disk."""
        return self.before != self.after


@dataclass(frozen=True)
class UpdatePlan:
    """Everything an update would do to one project, computed without writing."""

    project_dir: Path
    old_spec: ProjectSpec
    new_spec: ProjectSpec
    changes: tuple[FileChange, ...]  # files with something to do or to report
    records: dict[str, bytes | None] = field(default_factory=dict)  # .scaffold/ files
    from_version: str = __version__  # the scaffold that wrote the record
    own_files: frozenset[str] = frozenset()  # the user's own, after the update

    @property
    def name(self) -> str:
        """The project directory's name, for messages."""
        return self.project_dir.absolute().name

    @property
    def writes(self) -> list[FileChange]:
        """The changes that alter project files."""
        return [change for change in self.changes if change.writes]

    @property
    def conflicts(self) -> list[FileChange]:
        """Files the user has to resolve after (or before) this update."""
        return [change for change in self.changes if change.action in CONFLICT_ACTIONS]

    @property
    def is_current(self) -> bool:
        """True when the project already matches its answers and the templates,
        and its record names this scaffold's version (a template change to one of
        the user's own files leaves nothing to do)."""
        return (
            self.old_spec == self.new_spec
            and self.from_version == __version__
            and not self.writes
            and not self.conflicts
        )

    def touched_paths(self) -> list[str]:
        """The project files (relative paths) that applying the plan writes.

        The ``.scaffold/`` record is left out: it is scaffold's own bookkeeping.
        """
        return sorted({change.target for change in self.writes})


@dataclass(frozen=True)
class _Decision:
    """One file's change (if any to show) and what the record holds for it next."""

    change: FileChange | None
    base: str | None
    pending: str | None = None
    own: bool = False


def _encode(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8")


def _unresolved(ours: bytes | None, beside: bytes | None) -> bool:
    """Whether an earlier conflict is still visible in the project."""
    if beside is not None:
        return True
    text = None if ours is None else as_text(ours)
    return text is not None and has_conflict_markers(text)


def _is_own(
    path: str, listed: bool, base: str | None, ours: bytes | None, theirs: str | None
) -> bool:
    """Whether the user owns the file: named in the record, or a demo file
    (model.py, data.py) that differs from both the recorded and the new render."""
    if listed:
        return True
    return (
        path in DEMO_FILES
        and base is not None
        and ours is not None
        and ours not in (_encode(base), _encode(theirs))
    )


def decide(
    path: str,
    base: str | None,
    ours: bytes | None,
    theirs: str | None,
    *,
    pending: str | None = None,
    beside: bytes | None = None,
    own: bool = False,
    labels: MergeLabels = DEFAULT_LABELS,
) -> _Decision:
    """Decide one file's fate from its base, the user's bytes and the new render.

    ``pending`` is the render of an earlier conflict on this file, ``beside`` the
    current content of ``<path>.scaffold-new``; None means absent throughout.
    ``own``: the record names the file as the user's own.
    """
    if pending is not None:
        if _unresolved(ours, beside):
            left = f"{path}{NEW_SUFFIX} exists" if beside is not None else "markers"
            reason = f"resolve the last update's conflict first ({left})"
            return _Decision(
                FileChange(path, Action.UNRESOLVED, ours, ours, reason), base, pending
            )
        base = pending  # the user resolved the conflict against this render
    if _is_own(path, own, base, ours, theirs):
        # the user's file stays as it is, and so does its base: `scaffold diff PATH`
        # shows the template's change since the render the user started from
        if theirs == base:
            return _Decision(None, base, own=True)
        reason = (
            f"your own file, left alone; the template changed: scaffold diff {path}"
        )
        change = FileChange(path, Action.OWN, ours, ours, reason, (base, theirs))
        return _Decision(change, base, own=True)
    new = _encode(theirs)
    if base is None:
        if theirs is None:
            return _Decision(None, None)
        if ours is None:
            return _Decision(FileChange(path, Action.ADD, None, new), theirs)
        if ours == new:
            return _Decision(None, theirs)
        reason = f"you created a file with this name; the template's is in {path}{NEW_SUFFIX}"
        return _Decision(
            FileChange(path, Action.BESIDE, beside, new, reason), None, theirs
        )
    old = _encode(base)
    if ours is None:
        if theirs is None or theirs == base:  # nothing new to tell about it
            return _Decision(None, theirs)
        reason = "you deleted it, so it stays deleted (the template changed it)"
        return _Decision(FileChange(path, Action.KEEP_DELETED, reason=reason), theirs)
    if theirs is None:
        if ours == old:
            return _Decision(FileChange(path, Action.DELETE, ours, None), None)
        reason = "you changed it and the templates no longer generate it"
        return _Decision(
            FileChange(path, Action.KEEP_CHANGED, ours, ours, reason), base
        )
    if ours in (old, new):  # untouched by the user, or already the new text
        change = FileChange(path, Action.UPDATE, ours, new) if ours != new else None
        return _Decision(change, theirs)
    if theirs == base:  # the template did not change it: the user's version stays
        return _Decision(None, theirs)
    text = as_text(ours)
    if text is None:
        reason = (
            f"not a text file, kept yours; the new version is in {path}{NEW_SUFFIX}"
        )
        return _Decision(
            FileChange(path, Action.BESIDE, beside, new, reason), base, theirs
        )
    merged = merge3(base, text, theirs, labels)
    if merged.has_conflicts:
        reason = f"{merged.conflicts} conflicting change(s) marked with <<<<<<< {labels.ours}"
        change = FileChange(path, Action.CONFLICT, ours, _encode(merged.text), reason)
        return _Decision(change, base, theirs)
    change = FileChange(
        path, Action.MERGE, ours, _encode(merged.text), "your changes kept"
    )
    return _Decision(change if change.writes else None, theirs)


def _read_file(path: Path) -> bytes | None:
    """The bytes of a project file, None when it does not exist."""
    if not path.exists():
        return None
    if not path.is_file():
        raise ProjectError(f"{path} is not a regular file; move it away and run again")
    return path.read_bytes()


def _record_changes(
    old: dict[str, str], new: dict[str, str], prefix: str
) -> dict[str, bytes | None]:
    """The ``.scaffold/<prefix>/`` files to write (bytes) or delete (None)."""
    changes: dict[str, bytes | None] = {}
    for path in sorted(old.keys() | new.keys()):
        if old.get(path) != new.get(path):
            changes[f"{RECORD_DIR}/{prefix}/{path}"] = _encode(new.get(path))
    return changes


def plan_update(
    project_dir: Path,
    features: Iterable[str] | None = None,
    template_dir: Path | None = None,
) -> UpdatePlan:
    """Plan re-rendering the project's answers (or ``features``) and merging them in.

    ``template_dir`` is a cookiecutter template root (default: the installed one).
    Nothing is written; ``apply_plan`` does that.
    """
    project_dir = Path(project_dir)
    if not project_dir.is_dir():
        raise ProjectError(f"{project_dir} is not a directory")
    manifest = read_manifest(project_dir)
    check_tool_version(manifest.tool_version)
    old_spec = manifest.spec
    new_spec = old_spec if features is None else old_spec.with_features(set(features))
    rendered = build_project(new_spec, template_dir)
    record_dir = project_dir / RECORD_DIR
    old_pending = read_tree(record_dir / CONFLICTS_DIR)
    labels = MergeLabels(
        ours="yours",
        base=f"base (scaffold {manifest.tool_version})",
        theirs=f"scaffold {__version__} (new template)",
    )
    changes: list[FileChange] = []
    new_base: dict[str, str] = {}
    new_pending: dict[str, str] = {}
    own = set(manifest.own_files)
    for path in sorted(
        manifest.base.keys() | old_pending.keys() | rendered.keys() | own
    ):
        decision = decide(
            path,
            manifest.base.get(path),
            _read_file(project_dir / path),
            rendered.get(path),
            pending=old_pending.get(path),
            beside=_read_file(project_dir / (path + NEW_SUFFIX)),
            own=path in manifest.own_files,
            labels=labels,
        )
        if decision.change is not None:
            changes.append(decision.change)
        if decision.base is not None:
            new_base[path] = decision.base
        if decision.pending is not None:
            new_pending[path] = decision.pending
        if decision.own:
            own.add(path)
    records = _record_changes(manifest.base, new_base, BASE_DIR)
    records.update(_record_changes(old_pending, new_pending, CONFLICTS_DIR))
    answers = answers_text(new_spec, own, templates=installed_source(template_dir))
    answers_path = f"{RECORD_DIR}/{ANSWERS_FILE}"
    # a new scaffold version alone is recorded too: its changelog was said once
    behind = manifest.tool_version != __version__
    if records or behind or new_spec != old_spec or any(c.writes for c in changes):
        current = (record_dir / ANSWERS_FILE).read_text(encoding="utf-8")
        if current != answers:
            records[answers_path] = _encode(answers)
    return UpdatePlan(
        project_dir,
        old_spec,
        new_spec,
        tuple(changes),
        records,
        from_version=manifest.tool_version,
        own_files=frozenset(own),
    )


def plan_features(
    project_dir: Path,
    add: Iterable[str] = (),
    remove: Iterable[str] = (),
    template_dir: Path | None = None,
) -> UpdatePlan:
    """Plan an update that adds and/or removes features (names as in `scaffold features`)."""
    spec = read_manifest(Path(project_dir)).spec.with_changes(add, remove)
    return plan_update(project_dir, spec.features, template_dir)
