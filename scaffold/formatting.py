"""Format rendered Python with black (in process) and check that it compiles.

Black takes about a second for a generated train.py on a slow CPU, which would be
most of a `scaffold new`. So formatted results are kept, keyed by black's
version and the unformatted text, at two grains:

- the whole file, on disk (like black's own cache): rendering the same feature
  set again costs one file read;
- each top-level definition (a def or class with its decorators and the comments
  above it, or the code between two of them), on disk and in memory: feature sets
  share most of them, so a new feature set formats only what it changed.
  Black formats top-level definitions independently (two blank lines apart,
  which the join puts back); the render-matrix test checks for every feature
  set that black leaves the joined result unchanged.

Keys leave the project's name out (it is replaced by a stand-in of the same
length), so that any project name hits the cache; see `_swaps` for when that
is safe.
"""

import ast
import hashlib
import itertools
import keyword
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
    """(name, stand-in) pairs, longest name first; none if a swap could mislead.

    A stand-in must not change how black reads the text: each name must occur
    only as a whole word (never inside a longer identifier, keyword or number
    such as 1e5, nor right after a dot, as in 1.e5), and not be a soft keyword; a whole-word name is then an
    identifier, or inside a string or comment, as its stand-in would be.
    """
    names = sorted(set(names), key=lambda n: (-len(n), n))
    if not names or len(names) > len(STAND_INS):
        return []
    if any(not SWAPPABLE.fullmatch(n) or keyword.issoftkeyword(n) for n in names):
        return []
    if any(a in b for a in names for b in names if a != b):
        return []
    if any(letter in source for letter in STAND_INS):
        return []
    for name in names:
        whole_words = re.findall(rf"(?<![\w.]){re.escape(name)}(?![\w])", source)
        if len(whole_words) != source.count(name):
            return []
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


def split_top_level(source: str) -> list[str]:
    """``source`` cut before every top-level def and class (with its decorators
    and the comment lines right above it); [source] if it does not parse."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return [source]
    lines = source.splitlines(keepends=True)
    cuts = {0, len(lines)}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
            while start > 0 and lines[start - 1].startswith("#"):
                start -= 1
            cuts.add(start)
    bounds = sorted(cuts)
    return ["".join(lines[a:b]) for a, b in itertools.pairwise(bounds) if a < b]


_FORMATTED: dict[str, str] = {}  # key text -> formatted key text, this process


def _format_chunk(path: str, chunk: str, pairs: list[tuple[str, str]]) -> str:
    key = _swap(chunk, pairs)
    if key not in _FORMATTED:
        cached = _cache_path(key)
        if cached is not None and cached.is_file():
            _FORMATTED[key] = cached.read_text(encoding="utf-8")
        else:
            import black  # lazy: black's import costs ~0.1 s

            try:
                formatted = black.format_str(chunk, mode=black.Mode())
            except black.InvalidInput as exc:
                raise RenderError(
                    f"template produced invalid Python in {path}: {exc}"
                ) from exc
            _FORMATTED[key] = _swap(formatted, pairs)
            _remember(cached, _FORMATTED[key])
    return _swap(_FORMATTED[key], pairs, back=True)


def format_python(path: str, source: str, names: Iterable[str] = ()) -> str:
    """Return ``source`` formatted by black; RenderError if it is not valid Python.

    ``names``: the project's name and slug, which the cache keys leave out.
    """
    pairs = _swaps(source, names)
    cached = _cache_path(_swap(source, pairs))
    if cached is not None and cached.is_file():
        return _swap(cached.read_text(encoding="utf-8"), pairs, back=True)
    chunks = [_format_chunk(path, c, pairs) for c in split_top_level(source)]
    # black puts two blank lines before a top-level def or class
    formatted = "\n\n".join(chunk for chunk in chunks if chunk.strip())
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
