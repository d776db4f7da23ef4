"""Applying an update plan: writing and removing files, the record last."""

from pathlib import Path

from scaffold.atomic import SCRIPT_SUFFIXES, write_atomic
from scaffold.errors import ProjectError
from scaffold.manifest import ANSWERS_FILE
from scaffold.update.git import check_clean
from scaffold.update.plan import UpdatePlan


def _remove(path: Path, root: Path) -> None:
    """Delete ``path`` and the directories it leaves empty, up to ``root``."""
    path.unlink(missing_ok=True)
    parent = path.parent
    while parent != root and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def apply_plan(plan: UpdatePlan) -> None:
    """Write the plan: project files first, then the ``.scaffold/`` record."""
    root = plan.project_dir
    writes = [(change.target, change.after) for change in plan.writes]
    # answers.json last: it says which answers the rest of the record belongs to
    writes += sorted(
        plan.records.items(), key=lambda item: item[0].endswith(ANSWERS_FILE)
    )
    try:
        for relative, data in writes:
            if data is None:
                _remove(root / relative, root)
            else:
                executable = relative.endswith(SCRIPT_SUFFIXES)  # if new
                write_atomic(root / relative, data, executable)
    except OSError as exc:
        raise ProjectError(f"cannot update {root}: {exc}") from exc


def execute_plan(
    plan: UpdatePlan, *, dry_run: bool = False, allow_dirty: bool = False
) -> None:
    """Check the preconditions, then apply the plan unless ``dry_run``."""
    check_clean(plan, allow_dirty)
    if not dry_run:
        apply_plan(plan)
