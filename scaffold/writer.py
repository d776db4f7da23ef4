"""Write a new project so that a failure leaves nothing behind."""

import os
import shutil
import tempfile
from pathlib import Path

from scaffold.atomic import SCRIPT_SUFFIXES, new_file_mode, write_atomic
from scaffold.errors import TargetError


def _write_tree(root: Path, files: dict[str, str]) -> None:
    for relative, text in sorted(files.items()):
        executable = relative.endswith(SCRIPT_SUFFIXES)
        write_atomic(root / relative, text.encode("utf-8"), executable)


def _staging_parent(target: Path) -> Path:
    """Where the files are written first: beside a new directory, inside an
    existing one (whose parent may not be writable)."""
    return target if target.is_dir() else target.parent


def check_target(target: Path, files: dict[str, str]) -> None:
    """Refuse a target that cannot receive ``files`` without losing content.

    An existing directory is fine, whatever it holds, as long as none of
    ``files`` is there already: nothing is ever overwritten (the caller leaves
    out the files that a directory already has).
    """
    if target.exists() and not target.is_dir():
        raise TargetError(f"{target} exists and is not a directory")
    home = _staging_parent(target)
    if not home.is_dir():
        raise TargetError(f"parent directory {home} does not exist")
    if not os.access(home, os.W_OK | os.X_OK):
        raise TargetError(f"cannot write into {home}: permission denied")
    if not target.is_dir():
        return
    clashes = sorted(
        relative
        for relative in files
        if (target / relative).exists() or (target / relative).is_symlink()
    )
    if clashes:
        raise TargetError(
            f"would overwrite {len(clashes)} existing file(s) in {target}: "
            f"{', '.join(clashes)}; use `scaffold update` to merge into a project"
        )


def _cannot_write(target: Path, exc: OSError) -> TargetError:
    return TargetError(f"cannot write {target}: {exc.strerror or exc}")


def _move_in(staging: Path, target: Path, files: dict[str, str]) -> None:
    """Move the staged ``files`` into the existing ``target``; if stopped (an
    error, Ctrl-C), take back what was moved, so the directory is as it was."""
    moved: list[Path] = []
    made: list[Path] = []
    try:
        for relative in sorted(files):
            destination = target / relative
            missing = [p for p in destination.parents if not p.exists()]
            destination.parent.mkdir(parents=True, exist_ok=True)
            made.extend(reversed(missing))
            os.replace(staging / relative, destination)
            moved.append(destination)
    except BaseException:
        for path in moved:
            path.unlink(missing_ok=True)
        for directory in reversed(made):
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
        raise


def write_project(target: Path, files: dict[str, str]) -> None:
    """Write ``files`` under ``target``: all of them, or (on failure) none.

    The files go to a temporary directory next to the target first (same file
    system), which is then renamed into place. An existing directory gets the
    temporary directory inside it, and each file is moved in only after all were
    written; none of them may exist there already.
    """
    target = target.absolute()
    try:
        check_target(target, files)
        # a fixed short prefix: the target's own name may already be as long as
        # the file system allows
        staging = Path(
            tempfile.mkdtemp(prefix=".scaffold-staging-", dir=_staging_parent(target))
        )
    except OSError as exc:  # e.g. a path longer than the system allows
        raise _cannot_write(target, exc) from exc
    # mkdtemp makes a private (0700) directory; a project gets the usual mode,
    # that of a new executable file (a directory needs its x bits)
    staging.chmod(new_file_mode(executable=True))
    try:
        _write_tree(staging, files)
        if target.exists():
            _move_in(staging, target, files)
        else:
            staging.rename(target)
    except OSError as exc:
        raise _cannot_write(target, exc) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
