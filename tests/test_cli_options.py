"""``trio-sse serve``'s options: one checked, frozen object, the same in every worker."""

from __future__ import annotations

import argparse
import dataclasses
import sys

import pytest

from trio_sse.cli import _serve
from trio_sse.web import AuthConfig

TOKEN = "publish-token-0123456789"
JWT_KEY = "jwt-secret-0123456789abcdefghijklmnop"


def parse(argv: list[str]) -> _serve.ServeOptions:
    """``argv`` (``serve`` and its options) parsed as ``main`` does."""
    parser = argparse.ArgumentParser(prog="trio-sse serve")
    _serve.configure(parser)
    return _serve.options_from(parser.parse_args(argv[1:]), parser=parser, argv=argv)


@pytest.fixture(autouse=True)
def no_secrets_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_serve.PUBLISH_TOKEN_ENV, raising=False)
    monkeypatch.delenv(_serve.JWT_KEY_ENV, raising=False)


def test_a_worker_parses_the_same_options_from_the_command_it_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(_serve.PUBLISH_TOKEN_ENV, TOKEN)
    monkeypatch.setenv(_serve.JWT_KEY_ENV, JWT_KEY)
    argv = [
        "serve",
        "--broker",
        "redis://127.0.0.1:6379/0",
        "--workers",
        "3",
        "--cors-origin",
        "https://a.example",
        "--cors-origin",
        "https://b.example",
        "--subscribe-auth",
        "--history=7",
        "--max-topics",
        "50",
        "--log-level",
        "warning",
    ]
    parent = parse(argv)
    command = _serve._worker_command(parent, listen_fd=5)
    assert command[:3] == [sys.executable, "-m", "trio_sse.cli"]
    # The user's own arguments, then the worker's socket: no secret from the environment.
    assert command[3:] == [*argv, "--listen-fd", "5"]
    assert not any(TOKEN in part or JWT_KEY in part for part in command)

    worker = parse(command[3:])
    assert (worker.workers, worker.listen_fd, parent.workers) == (1, 5, 3)
    assert worker.is_worker
    assert not parent.is_worker
    # The worker reads the secrets from the environment it inherits, as the parent did.
    assert (
        worker.auth
        == parent.auth
        == AuthConfig(publish_token=TOKEN, jwt_key=JWT_KEY, subscribe_requires_token=True)
    )
    assert dataclasses.replace(worker, argv=parent.argv, workers=3, listen_fd=None) == parent


def test_the_options_are_frozen_and_their_repr_shows_no_secret() -> None:
    options = parse(["serve", "--publish-token", TOKEN, "--jwt-key", JWT_KEY])
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.port = 1  # type: ignore[misc]
    assert TOKEN not in repr(options)
    assert JWT_KEY not in repr(options)
    assert "port=8000" in repr(options)


def test_parsing_leaves_the_namespace_as_argparse_made_it() -> None:
    parser = argparse.ArgumentParser(prog="trio-sse serve")
    _serve.configure(parser)
    args = parser.parse_args(["--cors-origin", "https://a.example", "--publish-token", TOKEN])
    before = dict(vars(args))
    _serve.options_from(args, parser=parser, argv=["serve"])
    assert vars(args) == before


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"certfile": "cert.pem"}, "--certfile and --keyfile go together"),
        ({"workers": 2}, "--workers > 1 needs a shared broker"),
        ({"broker_min_replicas": 1}, "--broker-min-replicas needs a Redis broker"),
    ],
)
def test_options_that_cannot_work_together_are_refused_however_built(
    changes: dict[str, object], message: str
) -> None:
    options = parse(["serve"])
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(options, **changes)  # type: ignore[arg-type]
