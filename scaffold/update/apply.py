"""Applying an update plan as one journaled operation (scaffold.update.journal),
and finishing or undoing one that was stopped part-way."""

from pathlib import Path

from scaffold.errors import ProjectError
from scaffold.manifest import ANSWERS_FILE
from scaffold.update import journal
from scaffold.update.git import check_clean
from scaffold.update.plan import UpdatePlan


def plan_journal(plan: UpdatePlan, command: str) -> journal.Journal:
    """The plan's writes in order: project files first, then the ``.scaffold/``
    record, answers.json last (it says which answers the rest belongs to)."""
    root = plan.project_dir
    steps = [journal.Step(c.target, c.before, c.after) for c in plan.writes]
    for relative, data in sorted(
        plan.records.items(), key=lambda item: item[0].endswith(ANSWERS_FILE)
    ):
        current = root / relative
        before = current.read_bytes() if current.is_file() else None
        steps.append(journal.Step(relative, before, data))
    return journal.Journal(command, tuple(steps))


def apply_plan(plan: UpdatePlan, command: str = "scaffold update") -> None:
    """Write the plan, all or nothing: an error or Ctrl-C part-way leaves it for the
    next command to finish, and says so in one line."""
    root = plan.project_dir
    try:
        journal.run(root, plan_journal(plan, command))
    except (OSError, KeyboardInterrupt) as exc:
        pending = (root / journal.JOURNAL).is_file()
        then = (
            "; the next scaffold command in the project finishes it "
            "(`scaffold update --abort` undoes it)"
            if pending
            else "; nothing was changed"
        )
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        raise ProjectError(f"cannot update {root}: {what}{then}") from exc


def execute_plan(
    plan: UpdatePlan,
    *,
    dry_run: bool = False,
    allow_dirty: bool = False,
    command: str = "scaffold update",
) -> None:
    """Check the preconditions, then apply the plan unless ``dry_run``."""
    check_clean(plan, allow_dirty)
    if not dry_run:
        apply_plan(plan, command)


def _stopped(project_dir: Path) -> journal.Journal | None:
    try:
        return journal.load(Path(project_dir))
    except OSError as exc:
        raise ProjectError(f"cannot read {project_dir}: {exc}") from exc


def _replay(project_dir: Path, stopped: journal.Journal, undo: bool) -> None:
    """Finish (or undo) the stopped operation, an OSError as a one-line error."""
    try:
        (journal.undo if undo else journal.finish)(Path(project_dir), stopped)
    except OSError as exc:
        verb = "undo" if undo else "finish"
        raise ProjectError(
            f"cannot {verb} `{stopped.command}` in {project_dir}: {exc}"
        ) from exc


def finish_stopped(project_dir: Path) -> str | None:
    """Finish an update that was stopped part-way in ``project_dir``; the line to
    say so, or None when there was none."""
    stopped = _stopped(project_dir)
    if stopped is None:
        return None
    _replay(project_dir, stopped, undo=False)
    return (
        f"Finished `{stopped.command}`, which was stopped part-way "
        f"({len(stopped.steps)} file(s) written as it would have)."
    )


def undo_stopped(project_dir: Path) -> str:
    """Undo an update that was stopped part-way; the line that says so."""
    stopped = _stopped(project_dir)
    if stopped is None:
        raise ProjectError(f"no stopped update to undo in {project_dir}")
    _replay(project_dir, stopped, undo=True)
    return (
        f"Undid `{stopped.command}`, which was stopped part-way: every file is "
        "as it was before."
    )


def check_none_stopped(project_dir: Path) -> None:
    """Refuse (for --dry-run, which writes nothing) while an update is stopped."""
    stopped = _stopped(project_dir)
    if stopped is not None:
        raise ProjectError(
            f"`{stopped.command}` was stopped part-way in {project_dir}; run "
            "`scaffold update --continue` to finish it or `--abort` to undo it"
        )
