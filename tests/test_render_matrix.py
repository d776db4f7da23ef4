"""Every combination of feature flags renders clean code.

For the feature sets of tests/feature_sets.py (every in/out choice of any 5
features, which includes every set of at most two features and of all but at
most two):

- the Jinja render is byte-identical twice (for the sets black checks whole,
  below; rendering is deterministic or not whatever the set);
- the files have no line over black's 88 columns (black leaves long strings
  alone, so the templates split them), compile, and are pyflakes-clean (no
  unused imports, no undefined names);
- every option of train.py (a field of its Config) reaches train.py through
  torchrun's own argument parser, which would take an abbreviation of one of its
  options (`--monitor` for `--monitor-interval`) for its own.

That every set renders black-clean Python is tests/test_black_clean.py's, which
checks each file in windows; black runs here on the whole files of the sets in
generated_examples/ and of every set of no, one, all but one and all features,
which shows on real files that windows black leaves unchanged make a file black
leaves unchanged.
"""

import ast
import itertools

import black
import pyflakes.checker
import pytest
from feature_sets import covering_sets, is_valid
from helpers import config_options, reaches_the_script

from scaffold.features import FEATURES
from scaffold.generate import build_project
from scaffold.render import render_project
from scaffold.spec import ProjectSpec
from tools.examples import example_sets

LINE_LENGTH = 88  # black's default, which the generated projects use
N = len(FEATURES)
SETS = covering_sets()
WHOLE_FILE_SETS = {
    s for s in SETS if len(s) in (0, 1, N - 1, N) or s in example_sets().values()
}


_CHECKED_FILES: set[str] = set()  # finished texts already compiled and linted
_WHOLE_FILES: set[str] = set()  # finished texts that black leaves unchanged


def black_of(text: str) -> str:
    return black.format_str(text, mode=black.Mode())


def test_the_sets_make_every_choice_of_five_features_that_a_project_can():
    """Counted here from all 2**N sets (the valid ones), not from how they were picked."""
    import torch  # vectorized: 2**N sets times (N choose 5) choices

    names = [f.name for f in FEATURES]

    def masks(sets) -> torch.Tensor:
        return torch.tensor([sum(1 << names.index(n) for n in s) for s in sets])

    valid = [
        frozenset(c)
        for size in range(N + 1)
        for c in itertools.combinations(names, size)
        if is_valid(frozenset(c))
    ]
    assert all(is_valid(s) for s in SETS) and len(set(SETS)) == len(SETS)
    shifts = torch.arange(5)
    chosen_masks, valid_masks = masks(SETS), masks(valid)

    def choices(m: torch.Tensor, picks: torch.Tensor) -> set[int]:
        bits = (m[:, None] >> picks) & 1
        return set((bits << shifts).sum(dim=1).tolist())

    for five in itertools.combinations(range(N), 5):
        picks = torch.tensor(five)
        made, possible = choices(chosen_masks, picks), choices(valid_masks, picks)
        assert made == possible, f"{[names[i] for i in five]}: {possible - made} not made"
    assert set(example_sets().values()) <= set(SETS)


@pytest.mark.parametrize("features", SETS, ids=lambda s: "+".join(sorted(s)) or "base")
def test_render_is_stable_formatted_and_clean(features):
    spec = ProjectSpec.create("proj", features)
    # what `scaffold new` writes: the render, each Python file compile-checked
    finished = build_project(spec)
    if features in WHOLE_FILE_SETS:
        assert render_project(spec) == finished, "rendering twice must agree"
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
        tree = ast.parse(text, path)  # one parse for both checks (build_project compiled it)
        if path in ("train.py", "train_utils.py"):
            options = config_options(tree)
            intercepted = [f for f in options if not reaches_the_script(f)]
            assert not intercepted, f"torchrun's parser takes {intercepted} for its own"
        messages = [str(m) for m in pyflakes.checker.Checker(tree, filename=path).messages]
        assert messages == [], f"pyflakes on {path}: {messages}"
