"""Every combination of feature flags renders clean code.

For all 2^n feature sets:

- the Jinja render is byte-identical twice (for the sets black checks whole,
  below; rendering is deterministic or not whatever the set);
- the registry lists every top-level piece of every Python file, as rendered
  (with the marks that stand for the project's name): `scaffold new` may use it
  without black (see scaffold/formatting.py);
- the finished files have no line over black's 88 columns (black leaves long
  strings alone, so the templates split them), compile, and are
  pyflakes-clean (no unused imports, no undefined names);
- every option of train.py (a field of its Config) reaches train.py through
  torchrun's own argument parser, which would take an abbreviation of one of its
  options (`--monitor` for `--monitor-interval`) for its own.

Black runs on the sets in generated_examples/ and on every set of no, one, all
but one and all features: on each of their pieces (once per session: the
pytest-xdist workers share the digests already checked) and on their whole
files, which shows that pieces joined two blank lines apart are what black makes
of the file. The pieces that only other sets render are trusted to the registry,
which lists a piece only after black left it unchanged (`python -m
scaffold.registry`); black on each of them, about 0.1 s a piece for some 1,500
pieces, would cost the suite minutes.
"""

import ast
import os
from pathlib import Path

import black
import pyflakes.checker
import pytest
from helpers import config_options, reaches_the_script

from scaffold.examples import example_sets
from scaffold.features import FEATURES
from scaffold.formatting import (
    LINE_LENGTH,
    NAME_MARK,
    SLUG_MARK,
    digest,
    finish_files,
    pieces_of,
)
from scaffold.registry import all_feature_sets, read_registry
from scaffold.render import render_project, template_root
from scaffold.spec import ProjectSpec

ALL_SETS = all_feature_sets()
N = len(FEATURES)
WHOLE_FILE_SETS = {
    s for s in ALL_SETS if len(s) in (0, 1, N - 1, N) or s in example_sets().values()
}
REGISTRY = read_registry(template_root())


_CHECKED_FILES: set[str] = set()  # finished texts already compiled and linted
_WHOLE_FILES: set[str] = set()  # finished texts that black leaves unchanged


def black_of(text: str) -> str:
    return black.format_str(text, mode=black.Mode())


@pytest.fixture(scope="session")
def black_checked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory shared by this session's workers: one empty file per digest of a
    piece that black was shown to leave unchanged."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's directory, above the workers' own
    path = root / "black-checked-pieces"
    path.mkdir(exist_ok=True)
    return path


def test_matrix_covers_every_combination():
    assert len(set(ALL_SETS)) == 2**N


@pytest.mark.parametrize("features", ALL_SETS, ids=lambda s: "+".join(sorted(s)) or "base")
def test_render_is_stable_formatted_and_clean(features, black_checked):
    spec = ProjectSpec.create("proj", features)
    raw = render_project(spec, name_marks=True)
    if features in WHOLE_FILE_SETS:
        assert render_project(spec, name_marks=True) == raw, "rendering twice must agree"
    for path, text in raw.items():
        if not path.endswith(".py"):
            continue
        for piece in pieces_of(text):
            key = digest(piece)
            assert key in REGISTRY, f"{path}: piece not in the registry"
            if features not in WHOLE_FILE_SETS or (black_checked / key).exists():
                continue
            assert black_of(piece) == piece, f"{path}: not black's:\n{piece[:2000]}"
            (black_checked / key).touch()
    # what build_project does after rendering: format (here: nothing to do, every
    # piece is listed) and check that each file compiles
    finished = finish_files(raw, {NAME_MARK: spec.name, SLUG_MARK: spec.slug}, REGISTRY)
    for path, text in finished.items():
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
        tree = ast.parse(text, path)  # one parse for both checks (finish_files compiled it)
        if path == "train.py":
            options = config_options(tree)
            intercepted = [f for f in options if not reaches_the_script(f)]
            assert not intercepted, f"torchrun's parser takes {intercepted} for its own"
        messages = [str(m) for m in pyflakes.checker.Checker(tree, filename=path).messages]
        assert messages == [], f"pyflakes on {path}: {messages}"
