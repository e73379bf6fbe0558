"""Dependencies point one way: protocol <- broker <- web <- app/server/cli.

The client and the load tester sit beside broker and web, on the protocol layer.

Each layer is imported alone in a fresh interpreter, and the modules it must not
pull in are checked in sys.modules.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from importlib.resources import files

import pytest

import trio_sse

ASYNC_STACK = ["trio", "anyio", "asyncio", "quart", "quart_trio", "hypercorn", "httpx", "coredis"]
WEB_STACK = ["quart", "quart_trio", "hypercorn", "httpx", "coredis"]


def modules_after_import(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(result.stdout))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("trio_sse", ASYNC_STACK),
        ("trio_sse.protocol", ASYNC_STACK),
        ("trio_sse.errors", ASYNC_STACK),
        ("trio_sse.broker", WEB_STACK),
        ("trio_sse.web", ["httpx", "coredis", "trio_sse.app", "trio_sse.server"]),
        (
            "trio_sse.client",
            ["quart", "quart_trio", "hypercorn", "coredis", "trio_sse.broker", "trio_sse.web"],
        ),
        # The backplane builds on the broker only; the web layer never sees it.
        (
            "trio_sse.redis",
            ["quart", "quart_trio", "hypercorn", "httpx", "trio_sse.web", "trio_sse.app"],
        ),
        # coredis loads only when a Redis broker is asked for.
        ("trio_sse.app", ["coredis", "trio_sse.redis"]),
        ("trio_sse.hub", ["coredis", "trio_sse.redis", "trio_sse.app", "trio_sse.server"]),
        ("trio_sse.cli", ["coredis", "trio_sse.redis"]),
        # The load tester is on raw sockets and the protocol layer alone.
        (
            "trio_sse.loadtest",
            [
                *WEB_STACK,
                "trio_sse.broker",
                "trio_sse.web",
                "trio_sse.client",
                "trio_sse.app",
                "trio_sse.server",
            ],
        ),
        ("trio_sse.file_limit", ASYNC_STACK),
    ],
)
def test_layer_imports_nothing_above_it(module: str, forbidden: list[str]) -> None:
    loaded = modules_after_import(module)
    assert module in loaded
    leaked = sorted(name for name in forbidden if name in loaded)
    assert leaked == [], f"{module} imports {leaked}"


@pytest.mark.parametrize(
    "package",
    [
        "trio_sse",
        "trio_sse.protocol",
        "trio_sse.broker",
        "trio_sse.web",
        "trio_sse.client",
        "trio_sse.redis",
        "trio_sse.loadtest",
        "trio_sse.server",
        "trio_sse.errors",
    ],
)
def test_all_lists_every_public_name_and_each_resolves(package: str) -> None:
    module = importlib.import_module(package)
    public = {
        name
        for name in vars(module)
        if not name.startswith("_") and not isinstance(vars(module)[name], type(sys))
    } - {"annotations", "importlib", "TYPE_CHECKING", "Any"}
    assert public <= set(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None


def test_every_error_is_exported_at_top_level_under_one_root() -> None:
    errors = [getattr(trio_sse, name) for name in trio_sse.__all__ if name.endswith("Error")]
    assert len(errors) == 14
    assert all(issubclass(error, trio_sse.SSEError) for error in errors)


def test_package_ships_py_typed() -> None:
    assert files("trio_sse").joinpath("py.typed").is_file()
