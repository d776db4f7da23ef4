"""The git check before an update: never overwrite uncommitted work."""

import subprocess
from pathlib import Path

from scaffold.errors import DirtyTreeError
from scaffold.update.plan import UpdatePlan


def dirty_paths(project_dir: Path) -> set[str] | None:
    """Paths under ``project_dir`` with uncommitted git changes; None outside git."""

    def git(*args: str) -> subprocess.CompletedProcess[bytes] | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=project_dir, capture_output=True, check=False
            )
        except OSError:  # no git installed: nothing to protect
            return None

    prefix = git("rev-parse", "--show-prefix")
    if prefix is None or prefix.returncode != 0:
        return None
    status = git("status", "--porcelain", "-z", "--untracked-files=all", "--", ".")
    if status is None or status.returncode != 0:
        return None
    root = prefix.stdout.decode().strip()
    entries = iter(status.stdout.decode("utf-8", "surrogateescape").split("\0"))
    dirty = set()
    for entry in entries:
        if not entry:
            continue
        code, path = entry[:2], entry[3:]
        paths = [path]
        if "R" in code or "C" in code:  # a rename's next entry is its old path
            paths.append(next(entries, ""))
        dirty.update(p[len(root) :] for p in paths if p.startswith(root))
    return dirty


def check_clean(plan: UpdatePlan, allow_dirty: bool = False) -> None:
    """Refuse to touch files with uncommitted git changes, unless ``allow_dirty``.

    Only the files the update would write count: uncommitted work elsewhere is no
    reason to refuse, and the ``.scaffold/`` record may differ from the last
    commit after a conflict (the resolved conflict is recorded by the next update).
    """
    if allow_dirty:
        return
    dirty = dirty_paths(plan.project_dir)
    if not dirty:
        return
    touched = sorted(dirty & set(plan.touched_paths()))
    if touched:
        shown = ", ".join(touched[:5]) + (", ..." if len(touched) > 5 else "")
        raise DirtyTreeError(
            f"{plan.project_dir} has uncommitted changes in files the update would "
            f"touch ({shown}); commit them first, or pass --allow-dirty"
        )
