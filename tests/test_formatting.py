"""The black cache: a cached render is byte-identical to formatting from scratch."""

import pytest

from scaffold.features import FEATURES
from scaffold.formatting import format_python, split_top_level
from scaffold.generate import build_project
from scaffold.render import render_project
from scaffold.spec import ProjectSpec


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SCAFFOLD_NO_CACHE", raising=False)
    from scaffold import formatting

    formatting._cache_dir.cache_clear()
    yield tmp_path / "cache"
    formatting._cache_dir.cache_clear()


# "ass", "retur", "ort": parts of keywords (class, return, import); "e": part of
# numbers such as 1e-3; "model": part of many identifiers.
@pytest.mark.parametrize("name", ["demo", "model", "ass", "retur", "ort", "e", "x0"])
def test_cached_render_under_another_name_equals_an_uncached_one(private_cache, monkeypatch, name):
    build_project(ProjectSpec.create("warmup", {"ddp": True}))  # fills the cache
    assert any(private_cache.rglob("*.py"))
    cached = build_project(ProjectSpec.create(name, {"ddp": True}))
    monkeypatch.setenv("SCAFFOLD_NO_CACHE", "1")
    from scaffold import formatting

    formatting._cache_dir.cache_clear()
    fresh = build_project(ProjectSpec.create(name, {"ddp": True}))
    assert cached == fresh


def test_a_name_inside_a_keyword_is_not_swapped(private_cache):
    source = "if x in y:\n    pass\n"
    assert format_python("a.py", source, names=["in"]) == source
    assert format_python("a.py", source, names=["in"]) == source  # from the cache


def test_top_level_pieces_keep_decorators_and_comments_with_their_def():
    source = (
        '"""Doc."""\n\nimport os\n\nX = 1\n\n\n# about f\n# more\n@decorator\n'
        "def f():\n    return os\n\n\nclass C:\n    pass\n\n\nif X:\n    f()\n"
    )
    pieces = split_top_level(source)
    assert "".join(pieces) == source
    assert [p.splitlines()[0] for p in pieces] == ['"""Doc."""', "# about f", "class C:"]


def test_a_source_that_does_not_parse_is_one_piece():
    assert split_top_level("def f(:\n") == ["def f(:\n"]


@pytest.mark.parametrize("features", [set(), {f.name for f in FEATURES}])
def test_formatting_by_pieces_equals_black_on_the_whole_file(features, monkeypatch):
    import black

    monkeypatch.setenv("SCAFFOLD_NO_CACHE", "1")
    from scaffold import formatting

    formatting._cache_dir.cache_clear()
    raw = render_project(ProjectSpec.create("demo", features))
    for path, text in raw.items():
        if path.endswith(".py"):
            assert format_python(path, text) == black.format_str(text, mode=black.Mode()), path
