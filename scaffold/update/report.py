"""Presenting an update plan: the report lines, what the new templates bring
(from scaffold.changelog), the conflict error and the unified diff."""

from scaffold import __version__
from scaffold.changelog import entries_between
from scaffold.errors import MergeConflictError
from scaffold.textdiff import file_diff
from scaffold.update.plan import DEMO_FILES, NEW_SUFFIX, Action, FileChange, UpdatePlan


def describe(change: FileChange) -> str:
    """One report line: the action, the path, and why when it is not obvious."""
    word = "conflict" if change.action is Action.BESIDE else change.action.value
    text = f"{word:<10} {change.path}"
    return f"{text}: {change.reason}" if change.reason else text


def news_lines(plan: UpdatePlan) -> list[str]:
    """What the releases since the project's record bring to its features, the
    changes that touch checkpoints or resuming flagged; then, when its model.py
    or data.py is the user's own, each new contract in one line."""
    entries = entries_between(plan.from_version, __version__, plan.new_spec.features)
    if not entries:
        return []
    lines = [
        f"What scaffold {__version__} brings to {plan.name} "
        f"(recorded by scaffold {plan.from_version}):"
    ]
    lines += [f"  {entry.describe()}" for entry in entries]
    own = sorted(DEMO_FILES & plan.own_files)
    if own:
        lines += [
            f"contract ({entry.version}, your {' and '.join(own)}): {entry.contract}"
            for entry in entries
            if entry.contract
        ]
    return lines


def report_lines(plan: UpdatePlan, dry_run: bool = False) -> list[str]:
    """Human-readable lines: one per file, what the release brings, a summary."""
    lines = [describe(change) for change in plan.changes]
    name = plan.name
    if plan.is_current:
        lines.append(f"{name} is up to date with scaffold {__version__}.")
        return lines
    lines += news_lines(plan)
    added = sorted(plan.new_spec.features - plan.old_spec.features)
    removed = sorted(plan.old_spec.features - plan.new_spec.features)
    summary = f"{len(plan.writes)} file(s) changed"
    if added:
        summary += f", added {', '.join(added)}"
    if removed:
        summary += f", removed {', '.join(removed)}"
    if plan.conflicts:
        summary += f", {len(plan.conflicts)} conflict(s)"
    prefix = "Dry run, nothing written; would update" if dry_run else "Updated"
    lines.append(f"{prefix} {name}: {summary}.")
    return lines


def conflict_error(plan: UpdatePlan) -> MergeConflictError | None:
    """The error to raise after applying a plan that left conflicts, if any."""
    if not plan.conflicts:
        return None
    paths = ", ".join(change.path for change in plan.conflicts)
    return MergeConflictError(
        f"conflicts in {len(plan.conflicts)} file(s): {paths}; resolve the "
        f"<<<<<<< markers (or compare with the *{NEW_SUFFIX} file and delete it), "
        "then run `scaffold update` again"
    )


def plan_diff(plan: UpdatePlan, paths: frozenset[str] | None = None) -> str:
    """The plan's file changes as one unified diff (``a/`` = now, ``b/`` = after).

    With ``paths``, only those files; for one that is the user's own, what the
    template changed in it (``a/`` = the recorded render, ``b/`` = the new one).
    """
    chunks = []
    for change in plan.changes:
        if paths is not None and change.path not in paths:
            continue
        if change.action is Action.OWN and paths is not None:
            old, new = change.template or (None, None)
            chunks.append(file_diff(change.path, old, new))
        elif change.writes:
            chunks.append(file_diff(change.target, change.before, change.after))
    return "".join(chunks)
