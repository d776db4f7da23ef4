"""Every combination of feature flags renders clean code.

For all 2^n feature sets:

- the Jinja render is byte-identical twice;
- every top-level piece of every Python file, as rendered (with the marks that
  stand for the project's name), is what black makes of it, and the registry
  lists it: `scaffold new` may use it without black (see
  scaffold/formatting.py). Black runs once per distinct piece;
- the finished files have no line over black's 88 columns (black leaves long
  strings alone, so the templates split them), compile, and are
  pyflakes-clean (no unused imports, no undefined names).

Black over whole files, which shows that pieces joined two blank lines apart are
what black makes of the file, runs for the sets in generated_examples/ and for
every set of one feature or all but one (whole files cost black about a second
each; the pieces of all other sets are checked one by one above).
"""

import black
import pyflakes.api
import pyflakes.reporter
import pytest

from scaffold.examples import example_sets
from scaffold.features import FEATURES
from scaffold.formatting import LINE_LENGTH, digest, pieces_of
from scaffold.generate import build_project
from scaffold.registry import all_feature_sets, read_registry
from scaffold.render import render_project, template_root
from scaffold.spec import ProjectSpec

ALL_SETS = all_feature_sets()
N = len(FEATURES)
WHOLE_FILE_SETS = {
    s for s in ALL_SETS if len(s) in (0, 1, N - 1, N) or s in example_sets().values()
}
REGISTRY = read_registry(template_root())


class _Collect(pyflakes.reporter.Reporter):
    def __init__(self) -> None:
        self.messages: list[str] = []

    def unexpectedError(self, filename, message):
        self.messages.append(f"{filename}: {message}")

    def syntaxError(self, filename, message, lineno, offset, text):
        self.messages.append(f"{filename}:{lineno}: {message}")

    def flake(self, message):
        self.messages.append(str(message))


_CHECKED_PIECES: set[str] = set()  # pieces black was shown to leave unchanged
_CHECKED_FILES: set[str] = set()  # finished texts already compiled and linted
_WHOLE_FILES: set[str] = set()  # finished texts that black leaves unchanged


def black_of(text: str) -> str:
    return black.format_str(text, mode=black.Mode())


def test_matrix_covers_every_combination():
    assert len(set(ALL_SETS)) == 2**N


@pytest.mark.parametrize("features", ALL_SETS, ids=lambda s: "+".join(sorted(s)) or "base")
def test_render_is_stable_formatted_and_clean(features):
    spec = ProjectSpec.create("proj", features)
    raw = render_project(spec, name_marks=True)
    assert render_project(spec, name_marks=True) == raw, "rendering twice must agree"
    for path, text in raw.items():
        if not path.endswith(".py"):
            continue
        for piece in pieces_of(text):
            if piece in _CHECKED_PIECES:
                continue
            assert black_of(piece) == piece, f"{path}: not black's:\n{piece[:2000]}"
            assert digest(piece) in REGISTRY, f"{path}: piece not in the registry"
            _CHECKED_PIECES.add(piece)
    for path, text in build_project(spec).items():
        if not path.endswith(".py"):
            continue
        if features in WHOLE_FILE_SETS and text not in _WHOLE_FILES:
            assert black_of(text) == text, f"{path} is not what black makes of it"
            _WHOLE_FILES.add(text)
        if text in _CHECKED_FILES:
            continue
        _CHECKED_FILES.add(text)
        long_lines = [line for line in text.splitlines() if len(line) > LINE_LENGTH]
        assert not long_lines, f"{path}: lines over {LINE_LENGTH} columns: {long_lines}"
        compile(text, path, "exec")
        reporter = _Collect()
        pyflakes.api.check(text, path, reporter)
        assert reporter.messages == [], f"pyflakes on {path}: {reporter.messages}"
