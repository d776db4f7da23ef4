"""Bring an edited project up to date with the installed templates, losing nothing.

Three versions of every generated file meet here:

- base: the pristine render recorded in ``.scaffold/base/`` at the last new/update,
- ours: the file on disk, as the user left it,
- theirs: a fresh render of the (possibly changed) answers with today's templates.

Three modules, one job each:

- ``scaffold.update.plan``: ``plan_update`` decides what happens to each file and
  returns an ``UpdatePlan``; ``scaffold diff``, ``check``, ``--dry-run`` and the
  real update all read that one plan. Nothing is written there.
- ``scaffold.update.git``: ``check_clean`` refuses a plan that would touch files
  with uncommitted git changes (``dirty_paths`` asks git which those are).
- ``scaffold.update.apply``: ``apply_plan`` writes the plan (each file atomically,
  project files first and the record last, so an interrupted update is redone by
  the next one, not lost); ``execute_plan`` is the check, then the write.

Conflicts: a file whose merge left conflict markers (or whose new version had to
be written beside it as ``<path>.scaffold-new``) keeps its old base, and the
render it conflicted with is recorded in ``.scaffold/conflicts/<path>``. While the
markers (or the ``.scaffold-new`` file) are there, later updates leave the file
alone and report it. Once they are gone, the user's resolution was made against
that recorded render, so it becomes the file's base: a second update after the
resolution merges cleanly instead of raising the same conflict again.
"""

from scaffold.update.apply import apply_plan, execute_plan
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

__all__ = [
    "CONFLICTS_DIR",
    "CONFLICT_ACTIONS",
    "NEW_SUFFIX",
    "Action",
    "FileChange",
    "UpdatePlan",
    "apply_plan",
    "check_clean",
    "decide",
    "dirty_paths",
    "execute_plan",
    "plan_features",
    "plan_update",
]
