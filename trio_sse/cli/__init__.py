"""The ``trio-sse`` command: ``serve``, ``listen``, ``publish`` and ``loadtest``.

Each command is a module of this package (``_serve``, ``_listen``, ``_publish``,
``_loadtest``) that owns its options, its help and its work: ``configure(parser)`` adds
its options to its subparser, and ``run`` does the work and returns the exit status.
The argument types they share are in ``_arguments``. This module builds the parser and
maps outcomes to exit statuses: 0 for success, 1 for an error told in one line on
stderr, 2 for bad usage (argparse), 3 for a leaking server (``loadtest``), 130 for
Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Final

from .. import __version__

__all__ = ["main"]

# Each command, its module and its one-line help. Only the module of the command
# given is imported (with its parser): `trio-sse publish` never loads Quart,
# Hypercorn or the load tester, which saves about a second of CPU per run.
_COMMANDS: Final = {
    "serve": ("_serve", "run the reference SSE server"),
    "listen": ("_listen", "print the events of a stream as they arrive"),
    "publish": ("_publish", "publish one event to a server's POST /events/<topic>"),
    "loadtest": (
        "_loadtest",
        "load-test an SSE server: many streams, churn, latency and a leak verdict",
    ),
}


def _command_in(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is not an option."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in _COMMANDS else None
    return None


def _module(command: str) -> ModuleType:
    return importlib.import_module(f".{_COMMANDS[command][0]}", __name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``trio-sse`` command line; returns the exit status.

    Args:
        argv: The arguments, without the program name; ``sys.argv[1:]`` if omitted.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="trio-sse", description="Server-Sent Events on Trio: serve, publish and stream."
    )
    parser.add_argument("--version", action="version", version=f"trio-sse {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _command_in(argv)
    chosen_parser = None
    for name, (_, summary) in _COMMANDS.items():
        if name == chosen:
            module = _module(name)
            chosen_parser = commands.add_parser(name, help=summary, description=module.DESCRIPTION)
            module.configure(chosen_parser)
        else:
            # Listed in `trio-sse --help`; never parsed (argv names another command).
            commands.add_parser(name, help=summary)
    args = parser.parse_args(argv)
    module = _module(args.command)
    if args.command == "serve":
        # The workers of --workers N get the same arguments, and parse them alike.
        options = module.options_from(args, parser=chosen_parser, argv=argv)
        return int(module.run(options))
    return int(module.run(args))
