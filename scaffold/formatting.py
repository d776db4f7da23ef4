"""Format rendered Python with black (in process) and check that it compiles.

Black takes a few tenths of a second for a generated train.py, which would be most
of a `scaffold new`. Like black's own cache, formatted results are kept on disk,
keyed by the hash of black's version and the unformatted text, so rendering the
same feature set again costs a file read.
"""

import hashlib
import os
from functools import cache
from importlib.metadata import version
from pathlib import Path

from scaffold.errors import RenderError


@cache
def _cache_dir() -> Path | None:
    if os.environ.get("SCAFFOLD_NO_CACHE") == "1":
        return None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scaffold" / f"black-{version('black')}"


def _cache_path(source: str) -> Path | None:
    directory = _cache_dir()
    if directory is None:
        return None
    return directory / (hashlib.sha256(source.encode()).hexdigest() + ".py")


def _remember(path: Path | None, formatted: str) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(formatted, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs speed


def format_python(path: str, source: str) -> str:
    """Return ``source`` formatted by black; RenderError if it is not valid Python."""
    cached = _cache_path(source)
    if cached is not None and cached.is_file():
        return cached.read_text(encoding="utf-8")
    import black  # lazy: black's import costs ~0.1 s

    try:
        formatted = black.format_str(source, mode=black.Mode())
    except black.InvalidInput as exc:
        raise RenderError(f"template produced invalid Python in {path}: {exc}") from exc
    _remember(cached, formatted)
    return formatted


def check_compiles(path: str, source: str) -> None:
    """Raise RenderError when ``source`` does not compile."""
    try:
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise RenderError(f"generated {path} does not compile: {exc}") from exc


def finish_files(files: dict[str, str]) -> dict[str, str]:
    """Black-format and compile-check every ``.py`` file; other files pass through."""
    finished = {}
    for path, text in sorted(files.items()):
        if path.endswith(".py"):
            text = format_python(path, text)
            check_compiles(path, text)
        finished[path] = text
    return finished
