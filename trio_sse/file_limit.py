"""The open-file limit: a server or load tester holding 10,000 sockets needs more than 1024.

Standard library only, so both ``trio-sse serve`` and ``trio-sse loadtest`` use it.
"""

from __future__ import annotations

import resource
from typing import NamedTuple

__all__ = ["FileLimit", "raise_open_file_limit"]


class FileLimit(NamedTuple):
    """``RLIMIT_NOFILE`` after :func:`raise_open_file_limit`."""

    soft: int
    hard: int


def raise_open_file_limit() -> FileLimit:
    """Raise this process's soft limit on open files to its hard limit.

    Any process may do this without privileges; only the hard limit needs root (or
    ``ulimit -Hn``, systemd's ``LimitNOFILE=``, /etc/security/limits.conf).

    Returns:
        The limits now in force. ``RLIM_INFINITY`` is reported as is.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            # macOS refuses RLIM_INFINITY (and anything over OPEN_MAX) as a soft limit;
            # the caller reports the soft limit that stays.
            return FileLimit(soft, hard)
        soft = hard
    return FileLimit(soft, hard)
