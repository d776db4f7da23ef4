"""Shared pytest fixtures for the scaffold test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slurm_cluster import SlurmCluster, ensure_slurm_installed

# A generated project kept as it was rendered (test_update_across_restructure.py):
# its own tests/ are the project's, not this suite's.
collect_ignore = ["fixtures/before_restructure", "fixtures/legacy"]


def pytest_configure(config: pytest.Config) -> None:
    # Also declared in pyproject.toml; repeating it keeps `--strict-markers`
    # working when pytest is run with another configuration file.
    config.addinivalue_line("markers", "slurm: needs the local SLURM test cluster")


# Tests that take minutes (the demos' full default runs) are started first:
# pytest-xdist hands tests out in collection order, and a long one handed out
# last would run alone at the end.
LONG_RUNNING = ("test_the_demo_learns", "test_the_demo_gan")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.name.startswith(LONG_RUNNING))  # stable


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A running single-node SLURM cluster shared by the whole session.

    SLURM is installed with apt on first use; the tests are skipped only when
    that is impossible (not root, no apt, install failure).  Pass
    ``slurm_cluster.env`` to any subprocess that calls SLURM commands.
    """
    reason = ensure_slurm_installed()
    if reason is not None:
        pytest.skip(f"SLURM unavailable: {reason}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
