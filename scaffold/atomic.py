"""Writing one file so that it is whole or untouched, never half-written."""

import os
import tempfile
from pathlib import Path

SCRIPT_SUFFIXES = (".sbatch", ".sh")  # generated files that are made executable


def new_file_mode(executable: bool) -> int:
    """The mode of a new file under the process's umask (x bits if ``executable``)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if executable else 0o666) & ~umask


def write_atomic(path: Path, data: bytes, executable: bool = False) -> None:
    """Replace ``path`` with ``data`` in one step.

    The data goes to a temporary file in the same directory, which is then
    renamed over ``path``: a reader (or a crash) sees the old file or the new
    one, never a mix. An existing file keeps its mode; a new one gets
    new_file_mode(executable). Missing parent directories are created; on
    failure the temporary file is removed and the error raised.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.exists() else new_file_mode(executable)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
