"""Where the leak verdict reads the server's subscriber count: three kinds of source.

The verdict compares the server's own count of open streams before the run and after
the close. Any server can give it one of three ways:

* **JSON** (:class:`JsonCountSource`): ``GET`` a URL answering JSON, and follow a
  path to an integer: ``subscribers`` (the reference app's ``/stats``, the default),
  ``stats.open_connections``, ``topics.0.count`` (an integer segment indexes a list).
* **Prometheus** (:class:`GaugeSource`): ``GET`` a metrics URL in the Prometheus text
  format and sum the samples of one gauge, optionally only those with given labels:
  ``trio_sse_subscribers``, ``sse_clients{topic="news"}``. A gauge the page declares
  (``# TYPE``) with no sample counts as 0.
* **process** (:class:`ProcessSource`): for a server on this machine (Linux), its
  open TCP sockets on the stream's port, read from ``/proc/PID`` (every state but
  ``LISTEN``: a connection the client closed and the server did not is still its
  socket, in ``CLOSE_WAIT``). Its resident memory is read on the way.

A source that cannot be read raises :class:`~trio_sse.LoadTestError` with the reason.
"""

from __future__ import annotations

import enum
import json
import math
import os
import re
from pathlib import Path
from typing import Final, Protocol

import trio

from ..errors import LoadTestError
from ._connection import Address, StreamFailureError
from ._http import Target
from ._requests import Requester

__all__ = [
    "STATS_TIMEOUT",
    "GaugeSource",
    "JsonCountSource",
    "ProcessSource",
    "SourceKind",
    "SubscriberSource",
    "count_server_sockets",
    "parse_gauge",
    "parse_json_path",
    "read_gauge",
    "read_json_path",
    "read_rss_kib",
]

# A /stats or /metrics answer is one small document; a server taking longer is too
# busy to answer, which is a finding (a gap in the chart), not a reason to wait more.
STATS_TIMEOUT: Final = 5.0

# A metric name and its optional label matchers: name{a="x",b="y"}.
_GAUGE: Final = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?")
_LABEL: Final = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_SAMPLE: Final = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
# /proc/net/tcp states (include/net/tcp_states.h): 0A is LISTEN.
_TCP_LISTEN: Final = "0A"


class SourceKind(enum.Enum):
    """Which kind of source the verdict used (the report's ``server.source.kind``)."""

    JSON = "json"
    PROMETHEUS = "prometheus"
    PROCESS = "process"


class SubscriberSource(Protocol):
    """Reads the server's count of open streams."""

    @property
    def kind(self) -> SourceKind:
        """Which kind of source this is."""
        ...

    @property
    def description(self) -> str:
        """What is read, for the summary: a URL and a path, a gauge, a process."""
        ...

    async def read(self) -> int:
        """The count now.

        Raises:
            LoadTestError: The source could not be read, or holds no count.
        """
        ...

    def close(self) -> None:
        """Release the connection, if any."""
        ...


def parse_json_path(path: str) -> tuple[str | int, ...]:
    """Split ``a.b.0.c``; an all-digit segment indexes a list.

    Raises:
        ValueError: An empty path or segment.
    """
    parts = path.split(".")
    if not path or any(not part for part in parts):
        raise ValueError(f"bad JSON path {path!r}: dot-separated names, e.g. stats.open")
    return tuple(int(part) if part.isdigit() else part for part in parts)


def read_json_path(document: object, path: str) -> object:
    """The value at ``path`` in ``document``, or ``None`` if there is none."""
    value = document
    for part in parse_json_path(path):
        if isinstance(part, int) and isinstance(value, list):
            value = value[part] if part < len(value) else None
        elif isinstance(value, dict):
            value = value.get(str(part))
        else:
            return None
    return value


def parse_gauge(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``name{label="value",...}`` into the name and the labels to match.

    Raises:
        ValueError: Not a metric name with optional ``label="value"`` matchers.
    """
    match = _GAUGE.fullmatch(spec.strip())
    if match is None:
        raise ValueError(f'bad gauge {spec!r}: use name or name{{label="value"}}')
    return match[1], _parse_labels(match[2] or "", spec)


def _parse_labels(text: str, where: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    while position < len(text.rstrip()):
        match = _LABEL.match(text, position)
        if match is None:
            raise ValueError(f"bad labels in {where!r}")
        labels[match[1]] = match[2].replace('\\"', '"').replace("\\\\", "\\")
        position = match.end()
    return labels


def read_gauge(page: str, name: str, labels: dict[str, str]) -> float | None:
    """The sum of ``name``'s samples whose labels include ``labels``, from a text page.

    Returns:
        The sum; 0 for a gauge declared with no sample; ``None`` if the page has no
        such metric at all.
    """
    total = 0.0
    is_found = False
    for raw in page.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            words = line.split()
            if words[1:3] == ["TYPE", name]:
                is_found = True
            continue
        match = _SAMPLE.match(line)
        if match is None or match[1] != name:
            continue
        try:
            sample_labels = _parse_labels(match[2][1:-1], line) if match[2] else {}
            value = float(match[3])
        except ValueError:
            continue
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            is_found = True
            total += value
    return total if is_found else None


class _HttpSource:
    def __init__(self, address: Address, target: Target, accept: str) -> None:
        self._requester = Requester(address)
        self._target = target
        self._accept = accept
        self.url = f"http://{target.authority}{target.path}"

    async def _get(self) -> bytes:
        try:
            with trio.fail_after(STATS_TIMEOUT):
                head, body = await self._requester.request(
                    "GET", self._target, headers=[("Accept", self._accept)]
                )
        except StreamFailureError as exc:
            raise LoadTestError(f"GET {self.url} failed: {exc}") from None
        except trio.TooSlowError:
            raise LoadTestError(f"GET {self.url}: no answer within {STATS_TIMEOUT:g} s") from None
        if head.status != 200:
            raise LoadTestError(f"GET {self.url} answered {head.status}")
        return body

    def close(self) -> None:
        self._requester.close()


class JsonCountSource(_HttpSource):
    """An integer at a JSON path in a URL's answer (default: ``/stats``, ``subscribers``)."""

    def __init__(self, address: Address, target: Target, path: str = "subscribers") -> None:
        super().__init__(address, target, "application/json")
        self._path = path

    @property
    def kind(self) -> SourceKind:
        return SourceKind.JSON

    @property
    def description(self) -> str:
        return f'GET {self.url}, JSON "{self._path}"'

    async def read(self) -> int:
        body = await self._get()
        try:
            value = read_json_path(json.loads(body), self._path)
        except ValueError:
            value = None
        if type(value) is not int or value < 0:
            raise LoadTestError(
                f'GET {self.url} is not JSON with a "{self._path}" count: {body[:80]!r}'
            )
        return value


class GaugeSource(_HttpSource):
    """A Prometheus gauge's samples, summed, from a metrics URL."""

    def __init__(self, address: Address, target: Target, gauge: str) -> None:
        super().__init__(address, target, "text/plain")
        self._gauge = gauge
        self._name, self._labels = parse_gauge(gauge)

    @property
    def kind(self) -> SourceKind:
        return SourceKind.PROMETHEUS

    @property
    def description(self) -> str:
        return f"gauge {self._gauge} at {self.url}"

    async def read(self) -> int:
        body = await self._get()
        value = read_gauge(body.decode("utf-8", "replace"), self._name, self._labels)
        if value is None or not math.isfinite(value) or value < 0:
            raise LoadTestError(f"GET {self.url} has no gauge {self._gauge}")
        return round(value)


class ProcessSource:
    """A local process's open TCP sockets on one port, and its RSS, from ``/proc``."""

    def __init__(self, pid: int, port: int, *, proc: Path = Path("/proc")) -> None:
        self._pid = pid
        self._port = port
        self._proc = proc

    @property
    def kind(self) -> SourceKind:
        return SourceKind.PROCESS

    @property
    def description(self) -> str:
        return f"open sockets on port {self._port} of process {self._pid}"

    async def read(self) -> int:
        # 10,000 readlink calls are a few milliseconds: off the event loop.
        return await trio.to_thread.run_sync(self.read_now)

    def read_now(self) -> int:
        """:meth:`read`, synchronously."""
        try:
            return count_server_sockets(self._pid, self._port, proc=self._proc)
        except OSError as exc:
            raise LoadTestError(
                f"cannot read /proc/{self._pid} ({exc.strerror or exc}): is the server "
                "running on this machine, as this user?"
            ) from None

    def rss_kib(self) -> int | None:
        """The process's resident memory, or ``None`` if it cannot be read."""
        try:
            return read_rss_kib(self._pid, proc=self._proc)
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        """Nothing to release."""


def count_server_sockets(pid: int, port: int, *, proc: Path = Path("/proc")) -> int:
    """How many TCP sockets ``pid`` holds with local port ``port``, listeners excepted.

    Raises:
        OSError: ``/proc/PID`` cannot be read.
    """
    base = proc / str(pid)
    inodes: set[str] = set()
    for fd in os.listdir(base / "fd"):
        try:
            link = os.readlink(base / "fd" / fd)
        except OSError:
            continue  # closed since the listing
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    # Distinct inodes, not lines: the kernel writes the table a page per read, and when
    # connections come and go meanwhile it repeats lines (seen: 824 lines for 20 sockets
    # while other processes churned connections).
    found: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (base / "net" / table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue  # no IPv6
        for line in lines:
            cols = line.split()
            local_port = int(cols[1].rpartition(":")[2], 16)
            if local_port == port and cols[3] != _TCP_LISTEN and cols[9] in inodes:
                found.add(cols[9])
    return len(found)


def read_rss_kib(pid: int, *, proc: Path = Path("/proc")) -> int:
    """``VmRSS`` of ``pid``, in KiB.

    Raises:
        OSError: ``/proc/PID/status`` cannot be read.
        ValueError: It has no ``VmRSS`` line (a zombie).
    """
    for line in (proc / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for process {pid}")
