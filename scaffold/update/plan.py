"""The plan of an update: what happens to each generated file, decided without
writing anything (see scaffold.update for the three versions of a file and how
conflicts are recorded)."""

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from scaffold import __version__
from scaffold.errors import InvalidSpecError, MergeConflictError, ProjectError
from scaffold.generate import build_project
from scaffold.manifest import (
    ANSWERS_FILE,
    BASE_DIR,
    RECORD_DIR,
    manifest_files,
    read_manifest,
    read_own_files,
)
from scaffold.merge import MergeLabels, has_conflict_markers, merge3
from scaffold.spec import ProjectSpec
from scaffold.template_source import installed_source

DEFAULT_LABELS = MergeLabels()

# .scaffold/conflicts/<path>: the render that an unresolved conflict was against
CONFLICTS_DIR = "conflicts"
# <path>.scaffold-new: the new version of a file that could not be merged
NEW_SUFFIX = ".scaffold-new"


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


CONFLICT_ACTIONS = frozenset({Action.CONFLICT, Action.BESIDE, Action.UNRESOLVED})


@dataclass(frozen=True)
class FileChange:
    """The decision for one generated file; ``before``/``after`` are at ``target``."""

    path: str
    action: Action
    before: bytes | None = None  # at ``target`` now (None: no file there)
    after: bytes | None = None  # at ``target`` after the update (None: no file)
    reason: str = ""  # shown in the report

    @property
    def target(self) -> str:
        """The file this change writes: the path itself, or the one beside it."""
        return self.path + NEW_SUFFIX if self.action is Action.BESIDE else self.path

    @property
    def writes(self) -> bool:
        """Whether applying this change alters a file on disk."""
        return self.before != self.after

    def describe(self) -> str:
        """One report line: the action, the path, and why when it is not obvious."""
        word = "conflict" if self.action is Action.BESIDE else self.action.value
        text = f"{word:<10} {self.path}"
        return f"{text}: {self.reason}" if self.reason else text


@dataclass(frozen=True)
class UpdatePlan:
    """Everything an update would do to one project, computed without writing."""

    project_dir: Path
    old_spec: ProjectSpec
    new_spec: ProjectSpec
    changes: tuple[FileChange, ...]  # files with something to do or to report
    records: dict[str, bytes | None] = field(default_factory=dict)  # .scaffold/ files

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
        """True when the project already matches its answers and the templates."""
        return self.old_spec == self.new_spec and not self.writes and not self.conflicts

    def touched_paths(self) -> list[str]:
        """The project files (relative paths) that applying the plan writes.

        The ``.scaffold/`` record is left out: it is scaffold's own bookkeeping.
        """
        return sorted({change.target for change in self.writes})

    def report(self, dry_run: bool = False) -> list[str]:
        """Human-readable lines: one per file, then a summary."""
        lines = [change.describe() for change in self.changes]
        added = sorted(self.new_spec.features - self.old_spec.features)
        removed = sorted(self.old_spec.features - self.new_spec.features)
        name = self.name
        if self.is_current:
            lines.append(f"{name} is up to date with scaffold {__version__}.")
            return lines
        summary = f"{len(self.writes)} file(s) changed"
        if added:
            summary += f", added {', '.join(added)}"
        if removed:
            summary += f", removed {', '.join(removed)}"
        if self.conflicts:
            summary += f", {len(self.conflicts)} conflict(s)"
        prefix = "Dry run, nothing written; would update" if dry_run else "Updated"
        lines.append(f"{prefix} {name}: {summary}.")
        return lines

    def conflict_error(self) -> MergeConflictError | None:
        """The error to raise after applying a plan that left conflicts, if any."""
        if not self.conflicts:
            return None
        paths = ", ".join(change.path for change in self.conflicts)
        return MergeConflictError(
            f"conflicts in {len(self.conflicts)} file(s): {paths}; resolve the "
            f"<<<<<<< markers (or compare with the *{NEW_SUFFIX} file and delete it), "
            "then run `scaffold update` again"
        )

    def unified_diff(self) -> str:
        """The plan's file changes as one unified diff (``a/`` = now, ``b/`` = after)."""
        chunks = []
        for change in self.writes:
            old = f"a/{change.target}" if change.before is not None else "/dev/null"
            new = f"b/{change.target}" if change.after is not None else "/dev/null"
            before, after = (
                _as_text(change.before or b""),
                _as_text(change.after or b""),
            )
            if before is None or after is None:
                chunks.append(f"Binary files {old} and {new} differ\n")
                continue
            lines = difflib.unified_diff(
                before.splitlines(keepends=True),
                after.splitlines(keepends=True),
                fromfile=old,
                tofile=new,
            )
            chunks.append("".join(_ensure_newline(line) for line in lines))
        return "".join(chunks)


@dataclass(frozen=True)
class _Decision:
    """One file's change (if any to show) and what the record holds for it next."""

    change: FileChange | None
    base: str | None
    pending: str | None = None


def _ensure_newline(line: str) -> str:
    if line.endswith("\n"):
        return line
    return line + "\n\\ No newline at end of file\n"


def _as_text(data: bytes) -> str | None:
    """``data`` decoded as UTF-8 text, or None for binary content."""
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _encode(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8")


def _unresolved(ours: bytes | None, beside: bytes | None) -> bool:
    """Whether an earlier conflict is still visible in the project."""
    if beside is not None:
        return True
    text = None if ours is None else _as_text(ours)
    return text is not None and has_conflict_markers(text)


def decide(
    path: str,
    base: str | None,
    ours: bytes | None,
    theirs: str | None,
    *,
    pending: str | None = None,
    beside: bytes | None = None,
    labels: MergeLabels = DEFAULT_LABELS,
) -> _Decision:
    """Decide one file's fate from its base, the user's bytes and the new render.

    ``pending`` is the render of an earlier conflict on this file, ``beside`` the
    current content of ``<path>.scaffold-new``; None means absent throughout.
    """
    if pending is not None:
        if _unresolved(ours, beside):
            left = f"{path}{NEW_SUFFIX} exists" if beside is not None else "markers"
            reason = f"resolve the last update's conflict first ({left})"
            return _Decision(
                FileChange(path, Action.UNRESOLVED, ours, ours, reason), base, pending
            )
        base = pending  # the user resolved the conflict against this render
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
    text = _as_text(ours)
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


def _read_tree(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` as {relative posix path: text}."""
    if not directory.is_dir():
        return {}
    return {
        path.relative_to(directory).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def _read_file(path: Path) -> bytes | None:
    """The bytes of a project file, None when it does not exist."""
    if not path.exists():
        return None
    if not path.is_file():
        raise ProjectError(f"{path} is not a regular file; move it away and run again")
    return path.read_bytes()


def _check_version(recorded: str) -> None:
    """Refuse a project last updated by a newer scaffold (its templates are newer)."""

    def parts(version: str) -> tuple[int, ...] | None:
        try:
            return tuple(int(part) for part in version.split("."))
        except ValueError:
            return None

    mine, theirs = parts(__version__), parts(recorded)
    if mine is not None and theirs is not None and theirs > mine:
        raise ProjectError(
            f"the project was last updated by scaffold {recorded}, newer than this "
            f"scaffold {__version__}; upgrade scaffold first"
        )


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
    _check_version(manifest.tool_version)
    old_spec = manifest.spec
    new_spec = old_spec if features is None else old_spec.with_features(set(features))
    rendered = build_project(new_spec, template_dir)
    record_dir = project_dir / RECORD_DIR
    old_pending = _read_tree(record_dir / CONFLICTS_DIR)
    labels = MergeLabels(
        ours="yours",
        base=f"base (scaffold {manifest.tool_version})",
        theirs=f"scaffold {__version__} (new template)",
    )
    changes: list[FileChange] = []
    new_base: dict[str, str] = {}
    new_pending: dict[str, str] = {}
    for path in sorted(manifest.base.keys() | old_pending.keys() | rendered.keys()):
        decision = decide(
            path,
            manifest.base.get(path),
            _read_file(project_dir / path),
            rendered.get(path),
            pending=old_pending.get(path),
            beside=_read_file(project_dir / (path + NEW_SUFFIX)),
            labels=labels,
        )
        if decision.change is not None:
            changes.append(decision.change)
        if decision.base is not None:
            new_base[path] = decision.base
        if decision.pending is not None:
            new_pending[path] = decision.pending
    records = _record_changes(manifest.base, new_base, BASE_DIR)
    records.update(_record_changes(old_pending, new_pending, CONFLICTS_DIR))
    answers = manifest_files(
        new_spec,
        {},
        own_files=read_own_files(project_dir),
        templates=installed_source(template_dir),
    )
    answers_path = f"{RECORD_DIR}/{ANSWERS_FILE}"
    if records or new_spec != old_spec or any(change.writes for change in changes):
        current = (record_dir / ANSWERS_FILE).read_text(encoding="utf-8")
        if current != answers[answers_path]:
            records[answers_path] = _encode(answers[answers_path])
    return UpdatePlan(project_dir, old_spec, new_spec, tuple(changes), records)


def _normalize(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def plan_features(
    project_dir: Path,
    add: Iterable[str] = (),
    remove: Iterable[str] = (),
    template_dir: Path | None = None,
) -> UpdatePlan:
    """Plan an update that adds and/or removes features (names as in `scaffold features`)."""
    spec = read_manifest(Path(project_dir)).spec
    adding = [_normalize(name) for name in add]
    removing = [_normalize(name) for name in remove]
    present = sorted(name for name in adding if name in spec.features)
    if present:
        raise InvalidSpecError(f"the project already has {', '.join(present)}")
    absent = sorted(
        name for name in removing if name not in spec.features and name not in adding
    )
    if absent:
        have = ", ".join(spec.sorted_features()) or "none"
        raise InvalidSpecError(
            f"the project does not have {', '.join(absent)} (it has: {have})"
        )
    features = (set(spec.features) | set(adding)) - set(removing)
    return plan_update(project_dir, features, template_dir)
