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


def check_target(target: Path, files: dict[str, str], force: bool) -> None:
    """Refuse a target that would lose or mix up existing content."""
    parent = target.parent
    if not parent.is_dir():
        raise TargetError(f"parent directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TargetError(f"cannot write into {parent}: permission denied")
    if target.exists() and not target.is_dir():
        raise TargetError(f"{target} exists and is not a directory")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not force:
        raise TargetError(
            f"{target} exists and is not empty; use --force to generate into it"
        )
    clashes = sorted(
        relative
        for relative, text in files.items()
        if (target / relative).exists()
        and (
            not (target / relative).is_file()
            or (target / relative).read_text(encoding="utf-8", errors="replace")
            != text
        )
    )
    if clashes:
        raise TargetError(
            f"would overwrite {len(clashes)} existing file(s) in {target}: "
            f"{', '.join(clashes)}; use `scaffold update` to merge into a project"
        )


def _cannot_write(target: Path, exc: OSError) -> TargetError:
    return TargetError(f"cannot write {target}: {exc.strerror or exc}")


def write_project(target: Path, files: dict[str, str], force: bool = False) -> None:
    """Write ``files`` under ``target``: all of them, or (on failure) none.

    The files go to a temporary directory next to the target first (same file
    system), which is then renamed into place; with ``--force`` into an existing
    directory, each file is moved in only after all were written.
    """
    target = target.absolute()
    try:
        check_target(target, files, force)
        # a fixed short prefix: the target's own name may already be as long as
        # the file system allows
        staging = Path(tempfile.mkdtemp(prefix=".scaffold-staging-", dir=target.parent))
    except OSError as exc:  # e.g. a path longer than the system allows
        raise _cannot_write(target, exc) from exc
    # mkdtemp makes a private (0700) directory; a project gets the usual mode,
    # that of a new executable file (a directory needs its x bits)
    staging.chmod(new_file_mode(executable=True))
    try:
        _write_tree(staging, files)
        if not target.exists():
            staging.rename(target)
            return
        if not any(target.iterdir()):
            target.rmdir()
            staging.rename(target)
            return
        for relative in sorted(files):
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / relative, destination)
    except OSError as exc:
        raise _cannot_write(target, exc) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
