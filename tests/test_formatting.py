"""The black cache: a cached render is byte-identical to formatting from scratch."""

import pytest

from scaffold.formatting import format_python
from scaffold.generate import build_project
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
