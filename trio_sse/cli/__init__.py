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
import sys
from collections.abc import Sequence

from .. import __version__
from . import _listen, _loadtest, _publish, _serve

__all__ = ["main"]


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
    serve_parser = commands.add_parser("serve", help=_serve.SUMMARY, description=_serve.DESCRIPTION)
    _serve.configure(serve_parser)
    _listen.configure(
        commands.add_parser("listen", help=_listen.SUMMARY, description=_listen.DESCRIPTION)
    )
    _publish.configure(
        commands.add_parser("publish", help=_publish.SUMMARY, description=_publish.DESCRIPTION)
    )
    _loadtest.configure(
        commands.add_parser("loadtest", help=_loadtest.SUMMARY, description=_loadtest.DESCRIPTION)
    )
    args = parser.parse_args(argv)
    if args.command == "listen":
        return _listen.run(args)
    if args.command == "loadtest":
        return _loadtest.run(args)
    if args.command == "publish":
        return _publish.run(args)
    # The workers of --workers N get the same arguments, and parse them alike.
    return _serve.run(_serve.options_from(args, parser=serve_parser, argv=argv))
