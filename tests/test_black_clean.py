"""The templates render black-clean Python for every feature set.

`scaffold new` and `update` write the render as it is (black never runs at
generation time), so every Python file that any valid feature set renders must
already be what black makes of it. This test renders the sets of
tests/feature_sets.py (every in/out choice of any 5 features), with a one-letter
project name, and with a long name
of hyphens and spaces for the base and the all-features set (the name appears
only in train.py's docstring and in a string default of Config, where black
leaves it alone).

Black on every distinct file would take a quarter of an hour (about a thousand
train.py variants), so a file is checked in windows, each cached by its text:
the file's statements, block by block, where a statement over WINDOW_LINES lines
that holds a block (a def, class, for, if, with, try ...) is opened and its
blocks are checked the same way. A window is the headers of the enclosing
statements (verbatim), then the previous statement cut down to what black's
blank-line rules look at (its last line and the headers above it), the lines
between (blank lines, comments), then one statement (whole, or only its first
lines where it is opened). Black formats each logical line by itself at its
indentation and decides the blank lines before it from the lines above, so a
file whose windows black leaves unchanged is unchanged by black too; the sets
that tests/test_render_matrix.py formats whole (and the long names here) check
that on real files. A failure names the feature set and the file and shows
black's diff of the whole file, so that a template author can fix the template.
"""

import ast
import difflib
import hashlib
import itertools
import os
from pathlib import Path

import black
import pytest
from feature_sets import covering_sets

from scaffold.features import FEATURES, compatible_with
from scaffold.generate import build_project
from scaffold.spec import ProjectSpec

WINDOW_LINES = 30  # a statement with a block that is longer is checked block by block
LONG_NAME = "My Long Project-Name with spaces - and a few-more-words"
ALL = compatible_with("ddp")  # the largest project


FEATURE_SETS = covering_sets()


def set_id(features: frozenset[str]) -> str:
    return "+".join(f.name for f in FEATURES if f.name in features) or "base"


# -----------------------------------------------------------------------------
# windows


def _start(node: ast.stmt) -> int:
    """The statement's first line (0-based), its decorators included."""
    return min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1


class Splitter:
    """The windows of one file (see the module's docstring)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines(keepends=True)
        self.tree = ast.parse(text)
        self.memo: dict[tuple[int, int], list[tuple[str, list[ast.stmt]]] | None] = {}

    def text(self, a: int, b: int) -> str:
        return "".join(self.lines[a:b])

    def clauses(self, node: ast.stmt) -> list[list[ast.stmt]]:
        """The blocks of a statement in source order (an elif chain flat)."""
        if isinstance(node, ast.If):
            blocks, rest = [node.body], node.orelse
            while (
                len(rest) == 1
                and isinstance(rest[0], ast.If)
                and self.lines[rest[0].lineno - 1].lstrip().startswith("elif")
            ):
                blocks.append(rest[0].body)
                rest = rest[0].orelse
            blocks.append(rest)
        elif isinstance(node, ast.Try | ast.TryStar):
            blocks = [node.body, *(h.body for h in node.handlers), node.orelse]
            blocks.append(node.finalbody)
        elif isinstance(node, ast.Match):
            blocks = [case.body for case in node.cases]
        else:
            blocks = [getattr(node, "body", None), getattr(node, "orelse", None)]
        return [block for block in blocks if isinstance(block, list) and block]

    def starts_its_line(self, node: ast.stmt) -> bool:
        decorators = getattr(node, "decorator_list", [])
        column = decorators[0].col_offset - 1 if decorators else node.col_offset
        return not self.lines[_start(node)][:column].strip()

    def parts(
        self, node: ast.stmt, whole_up_to: int = WINDOW_LINES
    ) -> list[tuple[str, list[ast.stmt]]] | None:
        """(the lines before a block, the block) for each block of ``node``; None
        when ``node`` is kept whole: no block, at most ``whole_up_to`` lines, or a
        block that starts on its header's line (`else: x`)."""
        key = (id(node), whole_up_to)
        if key not in self.memo:
            self.memo[key] = self._parts(node, whole_up_to)
        return self.memo[key]

    def _parts(
        self, node: ast.stmt, whole_up_to: int
    ) -> list[tuple[str, list[ast.stmt]]] | None:
        blocks = self.clauses(node)
        if not blocks or node.end_lineno - _start(node) <= whole_up_to:
            return None
        if not all(self.starts_its_line(block[0]) for block in blocks):
            return None
        parts, position = [], _start(node)
        for block in blocks:
            parts.append((self.text(position, _start(block[0])), block))
            position = block[-1].end_lineno
        return parts

    def tail(self, node: ast.stmt) -> str:
        """What black's blank-line rules see of ``node`` from the next statement:
        its last line, and the headers of the blocks around that line."""
        parts = self.parts(node, whole_up_to=0)
        if parts is None:
            return self.text(_start(node), node.end_lineno)
        return "".join(header + self.tail(block[-1]) for header, block in parts)

    def head(self, node: ast.stmt) -> str:
        """``node`` whole, or for an opened one its headers and first statements."""
        parts = self.parts(node)
        if parts is None:
            return self.text(_start(node), node.end_lineno)
        return "".join(header + self.head(block[0]) for header, block in parts)

    def windows(self) -> list[str]:
        out: list[str] = []
        self.block("", self.tree.body, out)
        # what follows the last statement (comments, blank lines)
        trailing = self.text(self.tree.body[-1].end_lineno, len(self.lines))
        if trailing:
            out[-1] += trailing
        return out

    def block(self, prefix: str, block: list[ast.stmt], out: list[str]) -> None:
        for i, node in enumerate(block):
            before = ""
            if i:
                previous = block[i - 1]
                if _start(node) < previous.end_lineno:
                    raise AssertionError(f"line {node.lineno}: two statements on a line")
                before = self.tail(previous) + self.text(previous.end_lineno, _start(node))
            out.append(prefix + before + self.head(node))
            inner = prefix
            for header, body in self.parts(node) or ():
                self.block(inner + header, body, out)
                inner += header + self.tail(body[-1])


def windows(text: str) -> list[str]:
    """The texts to check with black so that ``text`` is known black-clean."""
    return Splitter(text).windows()


# -----------------------------------------------------------------------------
# black, once per window per session


def black_of(text: str) -> str:
    return black.format_str(text, mode=black.Mode())


@pytest.fixture(scope="session")
def clean_windows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory shared by this session's workers: one empty file per digest of
    a window that black leaves unchanged."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's directory, above the workers' own
    path = root / "black-clean-windows"
    path.mkdir(exist_ok=True)
    return path


_CHECKED: set[str] = set()  # file texts already checked in this process


def assert_black_clean(features: frozenset[str], name: str, clean: Path) -> None:
    spec = ProjectSpec.create(name, features)
    for path, text in sorted(build_project(spec).items()):
        if not path.endswith(".py") or text in _CHECKED:
            continue
        for window in windows(text):
            mark = clean / hashlib.blake2b(window.encode(), digest_size=16).hexdigest()
            if mark.exists():
                continue
            if black_of(window) != window:
                diff = difflib.unified_diff(
                    text.splitlines(keepends=True),
                    black_of(text).splitlines(keepends=True),
                    fromfile=f"{path} (rendered)",
                    tofile=f"{path} (black)",
                )
                shown = "".join(itertools.islice(diff, 40))
                pytest.fail(
                    f"feature set {set_id(features)} (project name {name!r}): {path} "
                    f"is not black-clean; fix the template. Black's diff (first lines):"
                    f"\n{shown or window}",
                    pytrace=False,
                )
            mark.touch()
        _CHECKED.add(text)


@pytest.mark.parametrize("features", FEATURE_SETS, ids=set_id)
def test_every_feature_set_renders_black_clean_python(features, clean_windows):
    assert_black_clean(features, "x", clean_windows)


@pytest.mark.parametrize("features", [frozenset(), ALL], ids=["base", "all"])
def test_a_long_name_with_hyphens_and_spaces_renders_black_clean(features):
    spec = ProjectSpec.create(LONG_NAME, features)
    files = build_project(spec)
    assert LONG_NAME in files["train.py"]
    for path, text in files.items():
        if path.endswith(".py"):
            assert black_of(text) == text, f"{set_id(features)}: {path} with {LONG_NAME!r}"


def test_windows_see_what_black_changes():
    """The windows are not blind: black's changes show up in one of them."""
    good = (
        '"""Doc."""\n\nimport os\n\n\ndef f(a):\n    if a:\n        return os\n'
        "    for i in range(3):\n        # note\n        print(i)\n\n    return a\n"
    )
    assert black_of(good) == good
    assert all(black_of(w) == w for w in windows(good))
    bad_edits = [
        ("    for i", "\n\n    for i"),  # two blank lines in a function
        ("print(i)", "print( i )"),  # spacing inside one statement
        ("\n\ndef f", "\ndef f"),  # one blank line before a top-level def
    ]
    for old, new in bad_edits:
        text = good.replace(old, new)
        assert black_of(text) != text
        assert any(black_of(w) != w for w in windows(text)), (old, new)


def test_long_statements_are_opened_and_checked_block_by_block():
    body = "".join(f"    x{i} = {i}\n" for i in range(WINDOW_LINES + 5))
    text = f"def f():\n{body}    if x1:\n        y = [1,\n 2]\n"
    assert black_of(text) != text
    found = windows(text)
    assert len(found) > 2  # the def was opened
    assert max(w.count("\n") for w in found) < WINDOW_LINES
    assert any(black_of(w) != w for w in found)
