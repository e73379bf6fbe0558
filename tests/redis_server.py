"""A real redis-server for the tests: started on a free port, with AOF on, in a temp dir.

Locally, tests that need it skip when the binary is missing; with CI=true they fail,
so a CI image without Redis can never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

# Generous: a cold start on a loaded 2-core machine, or an AOF replay after a restart.
START_TIMEOUT = 20.0


def require_redis_server(name: str = "redis-server") -> str:
    """A binary of Debian's redis-server package (and its dependency redis-tools):
    skip (locally) or fail (CI=true) when there is none."""
    binary = shutil.which(name)
    if binary is None:
        message = f"{name} is not installed (apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process; ``restart()`` keeps its port and its AOF directory."""

    def __init__(
        self, directory: Path, *, appendfsync: str = "always", replica_of: int | None = None
    ) -> None:
        self.binary = require_redis_server()
        self.appendfsync = appendfsync
        self.directory = directory
        self.replica_of = replica_of  # the master's port on 127.0.0.1, for a replica
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "redis.log"
        self.extra_arguments: list[str] = []  # more options on the command line

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            # appendfsync always (the default here): every acknowledged write is on
            # disk, so a restart (even a SIGKILL) loses nothing publish() returned for.
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.log),
        ]
        if self.replica_of is not None:
            command += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        command += self.extra_arguments
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        # A separate process gives no readiness event: ask it until it answers PONG
        # (not LOADING), on a short beat, bounded.
        while not self._answers_ping():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING in time")
            time.sleep(0.02)

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def info(self, section: str) -> dict[str, str]:
        """``INFO section`` as a dict (a blocking socket: for setup, not under trio)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(f"INFO {section}\r\n".encode())
            header = b""
            while not header.endswith(b"\r\n"):
                header += sock.recv(1)
            size = int(header[1:-2])
            body = b""
            while len(body) < size + 2:
                body += sock.recv(size + 2 - len(body))
        lines = (line.split(":", 1) for line in body.decode().splitlines() if ":" in line)
        return {pair[0]: pair[1] for pair in lines}

    def wait_for_master_link(self) -> None:
        """Until this replica has synced with its master (bounded)."""
        deadline = time.monotonic() + START_TIMEOUT
        while self.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica did not sync in time: {self.log.read_text()}")
            time.sleep(0.02)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): it holds its connections and answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self, *, kill: bool = False) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if kill:
            process.kill()
        else:
            process.send_signal(signal.SIGCONT)  # in case it was paused
            process.terminate()
        process.wait(timeout=START_TIMEOUT)

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()


class SentinelServer(RedisServer):
    """A ``redis-server --sentinel`` watching one master as ``service``, quick to fail over.

    ``down_after_ms``: how long the master may not answer before this Sentinel calls
    it down; a failover follows once ``quorum`` Sentinels agree and one of them is
    elected to run it.
    """

    def __init__(
        self,
        directory: Path,
        *,
        master_port: int,
        service: str = "trio-sse",
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
    ) -> None:
        super().__init__(directory)
        self.service = service
        self.config = directory / "sentinel.conf"
        # Sentinel rewrites its config file as it learns; it must be writable.
        self.config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f'dir "{directory}"\n'
            f'logfile "{self.log}"\n'
            f"sentinel monitor {service} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {service} 1\n"
        )

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, str(self.config), "--sentinel"], stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers_ping():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server --sentinel exited: {self.log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server --sentinel did not answer PING in time")
            time.sleep(0.02)

    def master_status(self) -> str:
        """``name=...,status=ok,address=...,slaves=N,sentinels=M`` from ``INFO sentinel``."""
        return self.info("sentinel").get("master0", "")

    def wait_until_it_knows(self, *, replicas: int, sentinels: int) -> None:
        """Until this Sentinel knows the master's replicas and its peers (bounded).

        It finds the replicas in the master's INFO and the other Sentinels through
        their hello messages (every 2 s), and needs both before it can fail over.
        """
        wanted = (f"slaves={replicas},", f"sentinels={sentinels}")
        deadline = time.monotonic() + START_TIMEOUT
        while not all(part in self.master_status() for part in wanted):
            if time.monotonic() > deadline:
                raise RuntimeError(f"sentinel knows only {self.master_status()!r}")
            time.sleep(0.05)

    def master_port(self) -> int:
        """The port of the master as this Sentinel names it now."""
        address = self.master_status().split("address=", 1)[1].split(",", 1)[0]
        return int(address.rsplit(":", 1)[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class ClusterNode(RedisServer):
    """One ``redis-server --cluster-enabled yes`` node, quick to fail over."""

    def __init__(
        self, directory: Path, *, node_timeout_ms: int = 1000, appendfsync: str = "always"
    ) -> None:
        super().__init__(directory, appendfsync=appendfsync)
        self.port = free_cluster_port()
        self.extra_arguments = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(directory / "nodes.conf"),
            # A master that does not answer for this long is failed over.
            "--cluster-node-timeout",
            str(node_timeout_ms),
        ]

    def command(self, *arguments: str) -> str:
        """Run one command with redis-cli; its output."""
        return subprocess.run(
            [require_redis_server("redis-cli"), "-p", str(self.port), *arguments],
            check=True,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
        ).stdout


class RedisClusterServers:
    """A Redis Cluster of ``masters`` masters, each with ``replicas`` replicas, on loopback.

    Made with ``redis-cli --cluster create`` (redis-tools, a dependency of Debian's
    redis-server), so the slots are spread evenly over the masters.
    """

    def __init__(
        self, directory: Path, *, masters: int = 3, replicas: int = 1, appendfsync: str = "always"
    ) -> None:
        require_redis_server()
        self.cli = require_redis_server("redis-cli")
        self.masters = masters
        self.replicas = replicas
        self.nodes = []
        for index in range(masters * (1 + replicas)):
            node_directory = directory / f"node{index}"
            node_directory.mkdir()
            self.nodes.append(ClusterNode(node_directory, appendfsync=appendfsync))

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[: self.masters])
        return f"redis+cluster://{hosts}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT,
        )
        self.wait_until_ok()

    def wait_until_ok(self, nodes: list[ClusterNode] | None = None) -> None:
        """Until every running node says ``cluster_state:ok`` and knows every slot's master."""
        deadline = time.monotonic() + START_TIMEOUT
        for node in nodes or self.running():
            while "cluster_state:ok" not in node.command("CLUSTER", "INFO"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster not ok: {node.command('CLUSTER', 'INFO')}")
                time.sleep(0.05)

    def running(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.process is not None]

    def master_of(self, key: str) -> ClusterNode:
        """The node that serves ``key``'s slot now."""
        slot = int(self.running()[0].command("CLUSTER", "KEYSLOT", key))
        for node in self.running():
            for line in node.command("CLUSTER", "NODES").splitlines():
                fields = line.split()
                if "myself" in fields[2] and "master" in fields[2]:
                    for part in fields[8:]:
                        low, _, high = part.partition("-")
                        if low.isdigit() and int(low) <= slot <= int(high or low):
                            return node
        raise RuntimeError(f"no master serves slot {slot}")

    def wait_for_failover(self, dead: ClusterNode) -> None:
        """Until the cluster has given ``dead``'s slots to another node and is ok (bounded)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.wait_until_ok()
                lines = self.running()[0].command("CLUSTER", "NODES").splitlines()
                dead_line = next(line for line in lines if f":{dead.port}@" in line)
                if "fail" in dead_line.split()[2] and len(dead_line.split()) <= 8:
                    return  # flagged failed, and no slots of its own any more
            except (RuntimeError, subprocess.SubprocessError, StopIteration):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no failover of the node on port {dead.port} in time")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(kill=True)
