"""Redis URLs: one Redis, a Sentinel service, or a cluster; parsed, checked and named.

``where`` names the target for messages and logs, never with its password.
"""

from __future__ import annotations

from typing import Final, NamedTuple
from urllib.parse import unquote, urlsplit

from coredis.connection import TCPLocation

__all__ = [
    "CLUSTER_SCHEME",
    "SENTINEL_SCHEME",
    "ClusterTarget",
    "SentinelTarget",
    "cluster_target",
    "sentinel_target",
    "where",
]

SENTINEL_SCHEME: Final = "redis+sentinel"
CLUSTER_SCHEME: Final = "redis+cluster"
_SENTINEL_FORM: Final = "redis+sentinel://[:password@]host:port[,host:port...]/service[/db]"
_CLUSTER_FORM: Final = "redis+cluster://[:password@]host:port[,host:port...]"
_DEFAULT_SENTINEL_PORT: Final = 26379
_DEFAULT_PORT: Final = 6379


class SentinelTarget(NamedTuple):
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: list[TCPLocation]
    service: str
    database: int
    password: str | None  # the master's (Sentinels are asked without one)

    @property
    def where(self) -> str:
        nodes = ",".join(f"{node.host}:{node.port}" for node in self.sentinels)
        return (
            f"{self.service!r} (the master named by the Sentinels at {nodes}, db {self.database})"
        )


class ClusterTarget(NamedTuple):
    """A parsed ``redis+cluster://`` URL: nodes to ask for the cluster's map."""

    nodes: list[TCPLocation]
    password: str | None

    @property
    def where(self) -> str:
        return ",".join(f"{node.host}:{node.port}" for node in self.nodes)


def _nodes(hosts: str, kind: str, default_port: int, form: str) -> list[TCPLocation]:
    nodes = []
    for node in hosts.split(","):
        host, colon, port_text = node.rpartition(":")
        if not colon:
            host, port_text = node, str(default_port)
        host = host.removeprefix("[").removesuffix("]")
        if not host or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise ValueError(f"bad {kind} address {node!r} in a {kind} URL; expected {form}")
        nodes.append(TCPLocation(host, int(port_text)))
    return nodes


def _password(userinfo: str) -> str | None:
    return unquote(userinfo.partition(":")[2]) or None


def sentinel_target(url: str) -> SentinelTarget:
    """Parse ``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]``.

    Raises:
        ValueError: Not of that form, naming what is wrong.
    """
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ValueError(f"a Sentinel URL has no query or fragment: {_SENTINEL_FORM}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    sentinels = _nodes(hosts, "Sentinel", _DEFAULT_SENTINEL_PORT, _SENTINEL_FORM)
    service, _, database = parts.path.lstrip("/").partition("/")
    if not service:
        raise ValueError(f"a Sentinel URL names the service after the hosts: {_SENTINEL_FORM}")
    database = database or "0"
    if not database.isdigit():
        raise ValueError(f"the database in a Sentinel URL is a number, got {database!r}")
    return SentinelTarget(sentinels, unquote(service), int(database), _password(userinfo))


def cluster_target(url: str) -> ClusterTarget:
    """Parse ``redis+cluster://[:password@]host:port[,host:port...]``.

    Raises:
        ValueError: Not of that form (a cluster has only database 0), naming what is wrong.
    """
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ValueError(f"a cluster URL has no query or fragment: {_CLUSTER_FORM}")
    if parts.path not in ("", "/", "/0"):
        raise ValueError(
            f"a Redis Cluster has only database 0, got {parts.path!r} in the URL: {_CLUSTER_FORM}"
        )
    userinfo, _, hosts = parts.netloc.rpartition("@")
    return ClusterTarget(
        _nodes(hosts, "cluster", _DEFAULT_PORT, _CLUSTER_FORM), _password(userinfo)
    )


def where(url: str) -> str:
    """The target of a Redis URL, for messages (never the password).

    Raises:
        ValueError: Not a Redis URL we can use, naming what is wrong.
    """
    parts = urlsplit(url)
    if parts.scheme == SENTINEL_SCHEME:
        return sentinel_target(url).where
    if parts.scheme == CLUSTER_SCHEME:
        return cluster_target(url).where
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            "a Redis URL starts with redis://, rediss://, unix://, redis+sentinel:// or "
            f"redis+cluster://, got {url!r}"
        )
    if parts.scheme == "unix":
        return parts.path
    try:
        port = parts.port or _DEFAULT_PORT
    except ValueError:
        raise ValueError(f"bad port in Redis URL {url!r}") from None
    database = parts.path.lstrip("/") or "0"
    if not database.isdigit():
        raise ValueError(f"the database in a Redis URL is a number, got {database!r}")
    return f"{parts.hostname or 'localhost'}:{port}/{database}"
