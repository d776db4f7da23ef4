"""Format rendered Python with black (in process) and check that it compiles.

Black takes half a second for a generated train.py, which would be most of a
`scaffold new`. Like black's own cache, formatted results are kept on disk, keyed
by the hash of black's version and the unformatted text, so rendering the same
feature set again costs a file read -- also under another project name: the
key is the text with the name replaced by a stand-in of the same length (the
name only appears inside strings, where black never looks at the letters).
"""

import hashlib
import os
import re
from collections.abc import Iterable
from functools import cache
from importlib.metadata import version
from pathlib import Path

from scaffold.errors import RenderError

# Stand-ins for the project's name and slug in cache keys: letters that the
# templates never contain (checked per text), one per name.
STAND_INS = ("\u00e9", "\u00e8")
# Names whose stand-in keeps black's decisions: no whitespace, nothing black
# could reformat; other names are cached under their own text.
SWAPPABLE = re.compile(r"[A-Za-z0-9_-]+")


def cache_root() -> Path | None:
    """scaffold's cache directory; None when SCAFFOLD_NO_CACHE=1."""
    if os.environ.get("SCAFFOLD_NO_CACHE") == "1":
        return None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scaffold"


@cache
def _cache_dir() -> Path | None:
    root = cache_root()
    return None if root is None else root / f"black-{version('black')}"


def _cache_path(source: str) -> Path | None:
    directory = _cache_dir()
    if directory is None:
        return None
    return directory / (hashlib.sha256(source.encode()).hexdigest() + ".py")


def _swaps(source: str, names: Iterable[str]) -> list[tuple[str, str]]:
    """(name, stand-in) pairs, longest name first; none if a swap could mislead."""
    names = sorted(set(names), key=lambda n: (-len(n), n))
    if not names or len(names) > len(STAND_INS):
        return []
    if any(not SWAPPABLE.fullmatch(n) for n in names) or any(
        a in b for a in names for b in names if a != b
    ):
        return []
    if any(letter in source for letter in STAND_INS):
        return []
    # Safe even where the name is part of a keyword or a number: black always
    # formats the real text, and two renders share a key only if they differ
    # nowhere but where the template inserted the name (inside strings).
    return [(n, STAND_INS[i] * len(n)) for i, n in enumerate(names)]


def _swap(text: str, pairs: list[tuple[str, str]], back: bool = False) -> str:
    for name, stand_in in pairs:
        text = text.replace(stand_in, name) if back else text.replace(name, stand_in)
    return text


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


def format_python(path: str, source: str, names: Iterable[str] = ()) -> str:
    """Return ``source`` formatted by black; RenderError if it is not valid Python.

    ``names``: the project's name and slug, which the cache key leaves out.
    """
    pairs = _swaps(source, names)
    cached = _cache_path(_swap(source, pairs))
    if cached is not None and cached.is_file():
        return _swap(cached.read_text(encoding="utf-8"), pairs, back=True)
    import black  # lazy: black's import costs ~0.1 s

    try:
        formatted = black.format_str(source, mode=black.Mode())
    except black.InvalidInput as exc:
        raise RenderError(f"template produced invalid Python in {path}: {exc}") from exc
    _remember(cached, _swap(formatted, pairs))
    return formatted


def check_compiles(path: str, source: str) -> None:
    """Raise RenderError when ``source`` does not compile."""
    try:
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise RenderError(f"generated {path} does not compile: {exc}") from exc


def finish_files(files: dict[str, str], names: Iterable[str] = ()) -> dict[str, str]:
    """Black-format and compile-check every ``.py`` file; other files pass through.

    ``names``: the project's name and slug (see format_python).
    """
    finished = {}
    for path, text in sorted(files.items()):
        if path.endswith(".py"):
            text = format_python(path, text, names)
            check_compiles(path, text)
        finished[path] = text
    return finished
