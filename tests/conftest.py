"""Fixtures shared across test modules: a real redis-server and Redis Cluster per session.

Also the order of the tests: the slow ones first, the soak first of all, so that under
pytest-xdist (``nox -s tests`` runs 4 workers) the long tests start at once and the many
short ones fill in around them, instead of one long test starting last.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisClusterServers, RedisServer

# The longest test by far (minutes of CPU); everything else fits around it.
_FIRST = "tests/test_soak.py::"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The soak first, then the other slow tests, then the rest, each in file order."""

    def rank(item: pytest.Item) -> int:
        if item.nodeid.startswith(_FIRST):
            return 0
        return 1 if item.get_closest_marker("slow") is not None else 2

    items.sort(key=rank)  # stable: file order within each rank


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests keep apart by key prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A 3-master Redis Cluster for the session (no replicas); tests keep apart by prefix.

    Tests that kill a node make a cluster of their own.
    """
    cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster"), replicas=0)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for one test, which may stop and restart it."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
