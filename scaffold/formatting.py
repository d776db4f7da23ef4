"""Format rendered Python with black and check that it compiles.

Black takes most of a second for a generated train.py on a slow CPU, so the
templates are written to render what black would make of them already, and
black runs only where that is not known to be so:

- A file is cut into top-level pieces (a def or class with its decorators and
  the comments above it, or the code between two of them). Black formats them
  independently; joined two blank lines apart they are the formatted file (the
  render-matrix test checks this for every feature set).
- The template directory's registry (`formatted-pieces.txt`, see
  scaffold.registry) lists a digest of every piece that the templates render,
  for every feature set, that black leaves unchanged. A listed piece is used as
  it is; any other (an edited template, an unlisted name) goes through black,
  whose results are kept in memory for the rest of the process.

Project names: files are rendered with a one-character mark in place of
the project's name and of its slug, so one digest holds for every name, and the
marks are replaced afterwards. The piece stays what black makes of it when each
line holding a name still fits black's line length and does not end in
whitespace: no name is shorter than its mark, so black cannot join lines for a
longer name that it left apart for the mark, and a line that fits needs no
split. Otherwise the piece goes through black with the names in place.
"""

import ast
import hashlib
import itertools
from collections.abc import Mapping

from scaffold.errors import RenderError

# Marks that stand for the project's name and slug in rendered Python: letters
# (so a mark in an identifier parses) that the templates never contain
# (tests/test_formatting.py checks that).
NAME_MARK = "\u00e9"
SLUG_MARK = "\u00e8"
LINE_LENGTH = 88  # black's default, which the generated projects use

_FORMATTED: dict[str, str] = {}  # piece -> black's text of it, this process


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


def pieces_of(source: str) -> list[str]:
    """The top-level pieces of ``source`` without their trailing blank lines
    (black's join puts two back), empty pieces left out."""
    return [p.rstrip("\n") + "\n" for p in split_top_level(source) if p.strip()]


def digest(piece: str) -> str:
    """The registry's key for one piece of Python text."""
    return hashlib.blake2b(piece.encode(), digest_size=8).hexdigest()


def black_format(path: str, source: str) -> str:
    """What black makes of ``source``; RenderError if it is not valid Python."""
    if source not in _FORMATTED:
        import black  # lazy: black's import alone costs ~0.1 s

        try:
            _FORMATTED[source] = black.format_str(source, mode=black.Mode())
        except black.InvalidInput as exc:
            raise RenderError(f"template produced invalid Python in {path}: {exc}") from exc
    return _FORMATTED[source]


def _unmark(piece: str, names: Mapping[str, str]) -> str | None:
    """``piece`` with the marks replaced by the names; None if a line holding a
    name would then be too long or end in whitespace."""
    if not any(mark in piece for mark in names):
        return piece
    lines = piece.split("\n")
    for i, line in enumerate(lines):
        if any(mark in line for mark in names):
            line = _unmark_all(line, names)
            if len(line) > LINE_LENGTH or line != line.rstrip():
                return None
            lines[i] = line
    return "\n".join(lines)


def _unmark_all(text: str, names: Mapping[str, str]) -> str:
    for mark, name in names.items():
        text = text.replace(mark, name)
    return text


def format_python(
    path: str,
    source: str,
    names: Mapping[str, str] | None = None,
    known: frozenset[str] = frozenset(),
) -> str:
    """Return ``source`` formatted by black; RenderError if it is not valid Python.

    ``names``: {mark: name} for the marks in ``source`` (see the module's
    docstring); ``known``: digests of pieces that black leaves unchanged.
    """
    names = names or {}
    finished = []
    for piece in pieces_of(source):
        unmarked = _unmark(piece, names) if digest(piece) in known else None
        if unmarked is None:
            unmarked = black_format(path, _unmark_all(piece, names))
        finished.append(unmarked)
    # black puts two blank lines before a top-level def or class
    return "\n\n".join(finished)


def check_compiles(path: str, source: str) -> None:
    """Raise RenderError when ``source`` does not compile."""
    try:
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise RenderError(f"generated {path} does not compile: {exc}") from exc


def finish_files(
    files: dict[str, str],
    names: Mapping[str, str] | None = None,
    known: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """Black-format and compile-check every ``.py`` file; other files pass through.

    ``names``: {mark: name} for the marks in the files; ``known``: digests of
    pieces that black leaves unchanged (see format_python).
    """
    names = names or {}
    finished = {}
    for path, text in sorted(files.items()):
        if path.endswith(".py"):
            text = format_python(path, text, names, known)
            check_compiles(path, text)
        else:
            text = _unmark_all(text, names)
        finished[path] = text
    return finished
