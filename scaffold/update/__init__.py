"""Bring an edited project up to date with the installed templates, losing nothing.

Three versions of every generated file meet here:

- base: the pristine render recorded in ``.scaffold/base/`` at the last new/update,
- ours: the file on disk, as the user left it,
- theirs: a fresh render of the (possibly changed) answers with today's templates.

Modules, one job each:

- ``scaffold.update.plan``: ``plan_update`` decides what happens to each file and
  returns an ``UpdatePlan``; ``scaffold diff``, ``check``, ``--dry-run`` and the
  real update all read that one plan. Nothing is written there.
- ``scaffold.update.report``: the plan in words (one line per file, what the new
  release brings from ``scaffold/changelog.json``, the summary), its conflict
  error and its unified diff.
- ``scaffold.update.git``: ``check_clean`` refuses a plan that would touch files
  with uncommitted git changes (``dirty_paths`` asks git which those are).
- ``scaffold.update.journal`` and ``scaffold.update.apply``: an update, add or
  remove is all or nothing. ``apply_plan`` saves every write it will make in
  ``.scaffold/update-in-progress.json`` (content before and after), then writes
  each file atomically, the record last, then deletes the journal. Stopped at any
  point (a signal, a crash, an error writing a file, a full disk), the next
  scaffold command in the project finishes it (``finish_stopped``, said in one
  line) before doing its own job, ending exactly as the uninterrupted run would
  have: the same files, record and conflicts. ``scaffold update --continue``
  finishes it alone, ``--abort`` undoes it (``undo_stopped``); ``--dry-run``
  refuses while one is pending. The git check only ever runs before a journal is
  saved, so an unfinished update's own writes are never taken for the user's.

The user's own files: ``model.py`` and ``data.py`` follow the templates only while
they are the recorded render (or the new one). Once the user changed them, and
for every path in ``own_files`` of ``.scaffold/answers.json``, the update leaves
the file and its recorded base alone and says so when the template changed it;
``scaffold diff PATH`` shows that template change. The record lists the demo
files the user took over under ``own_files`` at the next update that writes.

Conflicts: a file whose merge left conflict markers (or whose new version had to
be written beside it as ``<path>.scaffold-new``) keeps its old base, and the
render it conflicted with is recorded in ``.scaffold/conflicts/<path>``. While the
markers (or the ``.scaffold-new`` file) are there, later updates leave the file
alone and report it. Once they are gone, the user's resolution was made against
that recorded render, so it becomes the file's base: a second update after the
resolution merges cleanly instead of raising the same conflict again.
"""

from scaffold.update.apply import (
    apply_plan,
    check_none_stopped,
    execute_plan,
    finish_stopped,
    undo_stopped,
)
from scaffold.update.git import check_clean, dirty_paths
from scaffold.update.plan import (
    CONFLICT_ACTIONS,
    CONFLICTS_DIR,
    NEW_SUFFIX,
    Action,
    FileChange,
    UpdatePlan,
    decide,
    plan_features,
    plan_update,
)
from scaffold.update.report import conflict_error, plan_diff, report_lines

__all__ = [
    "CONFLICTS_DIR",
    "CONFLICT_ACTIONS",
    "NEW_SUFFIX",
    "Action",
    "FileChange",
    "UpdatePlan",
    "apply_plan",
    "check_clean",
    "check_none_stopped",
    "conflict_error",
    "decide",
    "dirty_paths",
    "execute_plan",
    "finish_stopped",
    "plan_diff",
    "plan_features",
    "plan_update",
    "report_lines",
    "undo_stopped",
]
