"""Formatting: the registry's shortcut gives exactly what black gives.

`scaffold new` skips black for pieces that the registry lists (see
scaffold/formatting.py). These tests compare its output with black run for real
on a render with the real names, for names of every kind, and check when the
shortcut must not be taken.
"""

import subprocess
import sys

import black
import pytest

from scaffold.features import FEATURES
from scaffold.formatting import (
    NAME_MARK,
    SLUG_MARK,
    digest,
    finish_files,
    format_python,
    pieces_of,
    split_top_level,
)
from scaffold.generate import build_project
from scaffold.registry import read_registry
from scaffold.render import PROJECT_DIR_NAME, render_project, template_root
from scaffold.spec import ProjectSpec

ALL = {f.name for f in FEATURES}


def black_on_real_render(spec: ProjectSpec) -> dict[str, str]:
    """Every .py file of a render with the real names, through black whole."""
    return {
        path: black.format_str(text, mode=black.Mode())
        for path, text in render_project(spec).items()
        if path.endswith(".py")
    }


# one letter; a name that is also a word of the templates; hyphens and spaces;
# names long enough that a line holding them no longer fits
NAMES = ["x", "demo", "model", "My Project-2", "a" * 60, "n" * 100 + " z"]


@pytest.mark.parametrize("features", [set(), ALL], ids=["base", "all"])
@pytest.mark.parametrize("name", NAMES)
def test_build_equals_black_on_the_real_render(name, features):
    spec = ProjectSpec.create(name, features)
    built = build_project(spec)
    for path, formatted in black_on_real_render(spec).items():
        assert built[path] == formatted, path


def test_the_marks_never_occur_in_the_templates():
    root = template_root() / PROJECT_DIR_NAME
    for path in root.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert NAME_MARK not in text and SLUG_MARK not in text, path


def test_the_shipped_templates_need_no_black(tmp_path):
    """With the registry current, `scaffold new` does not even import black."""
    code = (
        "import sys\n"
        "from scaffold.generate import build_project\n"
        "from scaffold.spec import ProjectSpec\n"
        f"for features in (set(), {sorted(ALL)!r}):\n"
        "    build_project(ProjectSpec.create('some-name', set(features)))\n"
        "assert 'black' not in sys.modules, 'black was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr


def test_an_unlisted_piece_goes_through_black():
    source = "x = [1,\n  2]\n\ndef f( a ):\n  return a\n"
    expected = black.format_str(source, mode=black.Mode())
    assert format_python("a.py", source) == expected
    assert format_python("a.py", source, known=frozenset()) == expected


def test_a_listed_piece_is_used_as_it_is():
    # proves that the registry is what decides: a listed piece that black
    # would change is kept (the registry test keeps such pieces out of it)
    source = "x = [1,\n  2]\n"
    known = frozenset({digest(source)})
    assert format_python("a.py", source, known=known) == source


def test_a_name_that_makes_a_line_too_long_goes_through_black():
    piece = f'def f():\n    return g("{NAME_MARK}", "some text that is long enough")\n'
    assert black.format_str(piece, mode=black.Mode()) == piece
    known = frozenset({digest(piece)})
    short = format_python("a.py", piece, {NAME_MARK: "ab"}, known)
    assert short == piece.replace(NAME_MARK, "ab")
    long_name = "n" * 40
    long = format_python("a.py", piece, {NAME_MARK: long_name}, known)
    expected = black.format_str(piece.replace(NAME_MARK, long_name), mode=black.Mode())
    assert long == expected and long != piece.replace(NAME_MARK, long_name)


def test_a_name_ending_a_line_in_whitespace_goes_through_black():
    piece = f'"""Doc of {NAME_MARK}\n\nmore.\n"""\n'
    known = frozenset({digest(piece)})
    finished = format_python("a.py", piece, {NAME_MARK: "name "}, known)
    assert finished == black.format_str(piece.replace(NAME_MARK, "name "), mode=black.Mode())


def test_marks_in_other_files_are_replaced_too():
    files = {"README.md": f"# {NAME_MARK}\n", "a.py": f'X = "{SLUG_MARK}"\n'}
    finished = finish_files(files, {NAME_MARK: "My Name", SLUG_MARK: "my_name"})
    assert finished == {"README.md": "# My Name\n", "a.py": 'X = "my_name"\n'}


def test_invalid_python_is_a_render_error():
    from scaffold.errors import RenderError

    with pytest.raises(RenderError, match="invalid Python in a.py"):
        format_python("a.py", "def f(:\n")


def test_top_level_pieces_keep_decorators_and_comments_with_their_def():
    source = (
        '"""Doc."""\n\nimport os\n\nX = 1\n\n\n# about f\n# more\n@decorator\n'
        "def f():\n    return os\n\n\nclass C:\n    pass\n\n\nif X:\n    f()\n"
    )
    pieces = split_top_level(source)
    assert "".join(pieces) == source
    assert [p.splitlines()[0] for p in pieces] == ['"""Doc."""', "# about f", "class C:"]
    assert "\n\n".join(pieces_of(source)) == source


def test_a_source_that_does_not_parse_is_one_piece():
    assert split_top_level("def f(:\n") == ["def f(:\n"]


def test_the_registry_counts_as_empty_for_another_black(tmp_path):
    from scaffold.registry import REGISTRY_NAME

    assert read_registry(template_root())  # the shipped one is read
    (tmp_path / REGISTRY_NAME).write_text("# c\nblack 0\n0011223344556677\n")
    assert read_registry(tmp_path) == frozenset()
    assert read_registry(tmp_path / "missing") == frozenset()
