"""The explanation files: templates/templates/<feature>/explanation.md.

Every feature has one and it parses; a malformed one is an ExplanationError that
names the file and the line; `scaffold explain` turns it into a one-line error.
(That the explanations are true of the code is tests/test_examples.py's.)
"""

import pytest
from typer.testing import CliRunner

from scaffold import explanations
from scaffold.cli import app
from scaffold.errors import ExplanationError
from scaffold.explanations import (
    Explanation,
    Location,
    explanation_path,
    load_explanations,
    read_explanation,
)
from scaffold.features import feature_names

GOOD = """\
# Gradient clipping

## Problem

One bad batch can produce a huge gradient,
and then the loss is NaN.

## Where

- `train.py` `train`: the optimizer step: `clip_grad_norm_`
  once per step
- `slurm/train.sbatch`: the whole file

## Options

- `--clip-norm`: clip the global norm to this (0: off)

## Traps

- Clip after unscaling.
- Once per optimizer step.

## Usage

```bash
python train.py --clip-norm 0.5
```

## Launch

```shell
sbatch slurm/train.sbatch
```
"""


def test_every_feature_has_an_explanation_file_that_parses():
    loaded = load_explanations()
    assert list(loaded) == feature_names()
    for name, explanation in loaded.items():
        assert explanation_path(name).is_file()
        assert explanation.title and explanation.problem and explanation.where
        assert explanation.traps


def test_the_structure_is_read_into_an_explanation(tmp_path):
    path = tmp_path / "explanation.md"
    path.write_text(GOOD)
    assert read_explanation(path) == Explanation(
        title="Gradient clipping",
        problem="One bad batch can produce a huge gradient, and then the loss is NaN.",
        where=(
            Location("train.py", "train", "the optimizer step: `clip_grad_norm_` once per step"),
            Location("slurm/train.sbatch", None, "the whole file"),
        ),
        options=(("--clip-norm", "clip the global norm to this (0: off)"),),
        traps=("Clip after unscaling.", "Once per optimizer step."),
        usage=("python train.py --clip-norm 0.5",),
        launch=("sbatch slurm/train.sbatch",),
    )


def test_no_options_is_written_none(tmp_path):
    path = tmp_path / "explanation.md"
    text = GOOD.replace("- `--clip-norm`: clip the global norm to this (0: off)", "None.")
    path.write_text(text.split("## Usage")[0])
    explanation = read_explanation(path)
    assert explanation.options == () and explanation.usage == () and explanation.launch == ()


MALFORMED = [
    # (what is changed, into what, the line the error names, words of the message)
    ("# Gradient clipping\n", "Gradient clipping\n", 1, "expected '# Title' first"),
    ("## Traps\n", "## Pitfalls\n", 18, "unknown heading '## Pitfalls'"),
    ("## Options\n\n- `--clip-norm`: clip the global norm to this (0: off)\n", "", 30,
     "no '## Options' section"),  # the last line: where it would end at the latest
    ("- `slurm/train.sbatch`: the whole file", "- slurm/train.sbatch: the whole file", 12,
     "expected - `file` `name`: what"),
    ("- `--clip-norm`: clip", "- --clip-norm: clip", 16, "expected - `--option`: meaning"),
    ("- Once per optimizer step.", "Once per optimizer step.", 21, "expected a '- ' bullet"),
    ("```bash", "```sh", 25, "expected one ```bash block"),
    ("One bad batch can produce a huge gradient,\n",
     "One bad batch can produce a huge gradient,\n\n", 6, "one paragraph expected"),
    ("```\n\n## Launch", "\n## Launch", 32, "not closed"),  # ```shell closes ```bash
    ("## Launch\n", "## Usage\n", 29, "a second '## Usage' section"),
]


@pytest.mark.parametrize("old,new,line,message", MALFORMED, ids=[m[3] for m in MALFORMED])
def test_a_malformed_file_names_the_file_and_the_line(tmp_path, old, new, line, message):
    path = tmp_path / "explanation.md"
    assert old in GOOD
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(ExplanationError) as caught:
        read_explanation(path)
    assert str(caught.value).startswith(f"{path}:{line}: "), str(caught.value)
    assert message in str(caught.value)


def test_a_missing_file_is_an_explanation_error(tmp_path):
    with pytest.raises(ExplanationError, match="cannot read .*explanation.md"):
        read_explanation(tmp_path / "explanation.md")


def test_explain_reports_a_malformed_file_in_one_line(tmp_path, monkeypatch):
    root = tmp_path / "templates"
    path = root / "templates" / "clip" / "explanation.md"
    path.parent.mkdir(parents=True)
    path.write_text(GOOD.replace("## Traps", "## Pitfalls"))
    monkeypatch.setattr(explanations, "explanation_path", lambda name, _=None: path)
    explanations._load.cache_clear()
    try:
        result = CliRunner().invoke(app, ["explain", "clip"])
    finally:
        explanations._load.cache_clear()
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {path}:18: unknown heading")
    assert len(result.stderr.strip().splitlines()) == 1
