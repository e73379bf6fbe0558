"""SSE servers we did not write, for running the load tester against: an sse-starlette
app (``starlette_app.py``) and a Node ``http`` chat server (``chat_server.js``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Final

import pytest

PEERS: Final = Path(__file__).parent
STARLETTE_APP: Final = PEERS / "starlette_app.py"
NODE_CHAT_SERVER: Final = PEERS / "chat_server.js"


def require_node() -> str:
    """Debian's ``node`` (package nodejs): skip (locally) or fail (CI=true) when there is none."""
    binary = shutil.which("node")
    if binary is None:
        message = "node is not installed (apt-get install nodejs)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary
