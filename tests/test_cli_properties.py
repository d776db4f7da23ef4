"""Property-based tests of the command line: whatever names, paths and feature
names it is given, `scaffold new`, `add` and `remove` end in success or in one
line of error with a non-zero exit, never a traceback, and a failure writes
nothing.

Arguments come after `--`, as a shell user passes a name that starts with `-`;
without it, such a name is an unknown option, which the option parser reports.
"""

import tempfile
from contextlib import chdir
from pathlib import Path

from feature_sets import is_valid
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from scaffold.cli import app
from scaffold.features import feature_names
from scaffold.manifest import read_manifest
from scaffold.project import create_project

runner = CliRunner()

# anything a shell can pass in one argument: every character but NUL (surrogates
# stand for undecodable bytes, which the file system rejects or keeps as they are)
CHARACTERS = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))
NAMES = st.one_of(
    st.text(CHARACTERS, min_size=0, max_size=20),
    st.text(st.sampled_from("ab_-. 9/"), min_size=1, max_size=12),
    st.integers(200, 300).map(lambda n: "p" * n),  # around the 255-byte limit
)
# relative paths of such parts, never climbing out of the test's directory
PATHS = st.lists(NAMES.filter(lambda part: part not in ("..", "")), min_size=1, max_size=3)
FEATURE_NAMES = st.one_of(st.sampled_from(sorted(feature_names())), st.text(CHARACTERS, max_size=12))
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root: a file's bytes, None for a directory."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def assert_success_or_one_line(result) -> None:
    # CliRunner catches what the command raises: anything but SystemExit is a
    # traceback a user would have seen
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception)
    )
    if result.exit_code != 0:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


@SETTINGS
@given(parts=PATHS, features=st.lists(st.sampled_from(sorted(feature_names())), max_size=3))
def test_new_ends_in_a_project_or_one_line_and_nothing_written(parts, features):
    with tempfile.TemporaryDirectory() as tmp, chdir(tmp):
        root = Path(tmp)
        before = tree(root)
        path = "/".join(parts)
        result = runner.invoke(
            app, ["new", "--yes", *(f"--{f}" for f in features), "--", path]
        )
        assert_success_or_one_line(result)
        if result.exit_code == 0:
            project = root / path
            assert read_manifest(project).spec.features == set(features)
            assert (project / "train.py").is_file()
        else:
            assert tree(root) == before, result.stderr


@SETTINGS
@given(
    command=st.sampled_from(["add", "remove"]),
    # a project that scaffold new could make
    start=st.lists(st.sampled_from(sorted(feature_names())), max_size=2, unique=True).filter(
        lambda start: is_valid(frozenset(start))
    ),
    names=st.lists(FEATURE_NAMES, min_size=1, max_size=3),
)
def test_add_and_remove_end_in_success_or_one_line_and_nothing_written(
    command, start, names
):
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "proj"
        create_project(project, set(start))
        before = tree(project)
        result = runner.invoke(app, [command, "--path", str(project), "--", *names])
        assert_success_or_one_line(result)
        if result.exit_code != 0:
            assert tree(project) == before, result.stderr
        else:
            wanted = {n.strip().lower().replace("_", "-") for n in names}  # as add reads them
            features = read_manifest(project).spec.features
            assert wanted <= features if command == "add" else not wanted & features
