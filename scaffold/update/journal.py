"""An update's writes as one all-or-nothing operation, the way git keeps a stopped
rebase: its state is on disk until it is done.

Before the first write, every write of the update (each project file, then the
``.scaffold/`` record, answers.json last) is saved in one file,
``.scaffold/update-in-progress.json``, with each file's content before and after.
That file appears in one rename (``write_atomic``), so it is whole or absent.
The writes follow, each atomic; the journal is deleted last. A run stopped at any
point (a signal, a crash, an error writing a file, a full disk) leaves either no
journal, and nothing written, or the journal, which ``finish`` completes (every
write again: each is idempotent) and ``undo`` reverts (every file back to its
content before).
"""

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path

from scaffold.atomic import SCRIPT_SUFFIXES, write_atomic
from scaffold.errors import ProjectError
from scaffold.manifest import RECORD_DIR

JOURNAL = f"{RECORD_DIR}/update-in-progress.json"


@dataclass(frozen=True)
class Step:
    """One file of the operation: its content before and after (None: absent)."""

    path: str  # relative to the project
    before: bytes | None
    after: bytes | None


@dataclass(frozen=True)
class Journal:
    """An operation on a project's files, saved before its first write."""

    command: str  # what the user ran, for messages: "scaffold add amp"
    steps: tuple[Step, ...]


def _encode(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _decode(data: str | None) -> bytes | None:
    return None if data is None else base64.b64decode(data)


def _put(root: Path, relative: str, data: bytes | None) -> None:
    """Make ``root/relative`` hold ``data``, in one step; None deletes it and the
    directories it leaves empty. Every write of an operation goes through here."""
    path = root / relative
    if data is not None:
        write_atomic(path, data, relative.endswith(SCRIPT_SUFFIXES))
        return
    path.unlink(missing_ok=True)
    parent = path.parent
    while parent != root and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def _remove_leftovers(root: Path, relative: str) -> None:
    """Delete the temporary files a stopped ``write_atomic`` of ``relative`` left."""
    path = root / relative
    if not path.parent.is_dir():
        return
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}")
    for leftover in path.parent.iterdir():
        if pattern.fullmatch(leftover.name) and leftover.is_file():
            leftover.unlink()


def save(root: Path, journal: Journal) -> None:
    """Write the journal: from here on the operation is finished, not lost."""
    data = {
        "command": journal.command,
        "steps": [
            {"path": s.path, "before": _encode(s.before), "after": _encode(s.after)}
            for s in journal.steps
        ],
    }
    _put(root, JOURNAL, (json.dumps(data, indent=1) + "\n").encode("utf-8"))


def load(root: Path) -> Journal | None:
    """The journal of an operation that was stopped in ``root``; None if there is
    none (temporary files of a journal that never appeared are deleted)."""
    path = root / JOURNAL
    if not path.is_file():
        _remove_leftovers(root, JOURNAL)
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        steps = tuple(
            Step(s["path"], _decode(s["before"]), _decode(s["after"]))
            for s in data["steps"]
        )
        return Journal(str(data["command"]), steps)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProjectError(f"cannot read {path}: {exc}") from exc


def _current(root: Path, relative: str) -> bytes | None:
    path = root / relative
    return path.read_bytes() if path.is_file() else None


def _check_untouched(root: Path, journal: Journal) -> None:
    """Refuse when a file of the operation was changed since it stopped: finishing
    or undoing it would overwrite that change."""
    for step in journal.steps:
        if _current(root, step.path) not in (step.before, step.after):
            raise ProjectError(
                f"{step.path} was changed after `{journal.command}` stopped "
                f"part-way; move that change away, then run `scaffold update "
                "--continue` to finish it or `scaffold update --abort` to undo it"
            )


def run(root: Path, journal: Journal) -> None:
    """Save ``journal``, make every write, then delete it."""
    save(root, journal)
    finish(root, journal)


def finish(root: Path, journal: Journal) -> None:
    """Make every write of a saved journal (again), then delete the journal."""
    _check_untouched(root, journal)
    for step in journal.steps:
        _remove_leftovers(root, step.path)
        _put(root, step.path, step.after)
    _put(root, JOURNAL, None)


def undo(root: Path, journal: Journal) -> None:
    """Put every file of a saved journal back as it was, then delete the journal."""
    _check_untouched(root, journal)
    for step in reversed(journal.steps):
        _remove_leftovers(root, step.path)
        _put(root, step.path, step.before)
    _put(root, JOURNAL, None)
