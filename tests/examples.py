"""Load the programs in examples/ as modules, so tests can use their pieces."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).parent.parent / "examples"


def load_example(relative_path: str, module_name: str) -> ModuleType:
    """Import ``examples/<relative_path>`` as ``module_name`` (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / relative_path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def run_on_a_taken_port(relative_path: str) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<relative_path> --port P`` while P is taken; return how it ended."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        return subprocess.run(
            [sys.executable, str(EXAMPLES / relative_path), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
