"""Every combination of feature flags renders clean code.

For all 2^n feature sets: the render is byte-identical twice, black-stable
(black on the whole finished file changes nothing), compiles, and is
pyflakes-clean (no unused imports, no undefined names). Black's disk cache is
bypassed, so black runs for real on every file of every set.

The pipeline formats each top-level definition on its own and keeps the
results in memory for the other sets (see scaffold/formatting.py); the black
pass over the whole file is what proves the joined result is what black
makes of it. Identical twice is checked on the Jinja output, before black.
Files that many sets share (model.py, data.py, ...) are checked once per
distinct text.
"""

import itertools

import black
import pyflakes.api
import pyflakes.reporter
import pytest

from scaffold.features import FEATURES
from scaffold.formatting import finish_files
from scaffold.render import render_project
from scaffold.spec import ProjectSpec

ALL_SETS = [
    frozenset(combo)
    for size in range(len(FEATURES) + 1)
    for combo in itertools.combinations([f.name for f in FEATURES], size)
]


class _Collect(pyflakes.reporter.Reporter):
    def __init__(self) -> None:
        self.messages: list[str] = []

    def unexpectedError(self, filename, message):
        self.messages.append(f"{filename}: {message}")

    def syntaxError(self, filename, message, lineno, offset, text):
        self.messages.append(f"{filename}:{lineno}: {message}")

    def flake(self, message):
        self.messages.append(str(message))


_CHECKED: set[str] = set()  # formatted texts already found clean


@pytest.fixture(autouse=True)
def _no_format_cache(monkeypatch):
    monkeypatch.setenv("SCAFFOLD_NO_CACHE", "1")
    from scaffold import formatting

    formatting._cache_dir.cache_clear()
    yield
    formatting._cache_dir.cache_clear()


def test_matrix_covers_every_combination():
    assert len(set(ALL_SETS)) == 2 ** len(FEATURES)


@pytest.mark.parametrize("features", ALL_SETS, ids=lambda s: "+".join(sorted(s)) or "base")
def test_render_is_stable_clean_and_compiles(features):
    spec = ProjectSpec.create("proj", features)
    raw = render_project(spec)
    assert render_project(spec) == raw, "rendering twice must give identical files"
    for path, text in finish_files(raw).items():
        if not path.endswith(".py") or text in _CHECKED:
            continue
        _CHECKED.add(text)
        assert black.format_str(text, mode=black.Mode()) == text, f"{path} not black-stable"
        compile(text, path, "exec")
        reporter = _Collect()
        pyflakes.api.check(text, path, reporter)
        assert reporter.messages == [], f"pyflakes on {path}: {reporter.messages}"
