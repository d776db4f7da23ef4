"""Ordering for the GPU tests: the torch.compile runs (the longest) start first."""

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # pytest-xdist hands tests out in collection order: a compile run handed out
    # last would run alone at the end (stable sort: nothing else moves)
    items.sort(key=lambda item: not (item.path.is_relative_to(HERE) and "compile" in item.name))
