"""The seq board: how far publishing has got, read by every ledger, in one process or several.

A ledger's *floor* is the last seq handed to the publisher when a stream's first body
bytes arrive (see :mod:`._ledger`). With ``--processes N`` the publisher runs in the
parent and the streams in N workers, so the floor must be read across processes, at
the moment the bytes arrive, not from a message that may lag behind. The board is a
few 64-bit integers in a shared file mapping (one ``mmap`` of a file in the run's
temporary directory):

* slot 0: the last seq handed out; the publisher writes it *before* sending that
  POST, so a worker that reads a value below N read it before N's POST was sent, and
  so after its stream was subscribed: N must arrive, exactly as in one process;
* slot ``1 + i``: with ``--no-publish``, the highest id worker ``i`` has seen; the
  resume floor is the highest of all, as one process's would be.

An aligned 8-byte store is atomic on the machines Python runs on, and each slot has
one writer, so no lock is needed. In one process the board is plain memory.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Final

__all__ = ["SeqBoard"]

_SLOT: Final = struct.Struct("<q")


class SeqBoard:
    """Slot 0: the last seq handed out; slot ``1 + i``: the highest id worker ``i`` saw."""

    __slots__ = ("_buffer", "_mmap", "_own", "_slots")

    def __init__(self, slots: int, *, own: int = 0, path: Path | None = None) -> None:
        """Open a board of ``1 + slots`` integers; ``own``: this process's worker slot.

        Args:
            slots: How many workers (1 for a single process).
            own: This process's worker number (0 in a single process).
            path: The shared file; ``None``: private memory (a single process). The
                file is created (zeroed) when missing.
        """
        size = _SLOT.size * (1 + slots)
        self._slots = slots
        self._own = own
        self._mmap: mmap.mmap | None = None
        if path is None:
            self._buffer: bytearray | mmap.mmap = bytearray(size)
            return
        if not path.exists():
            path.write_bytes(bytes(size))
        with path.open("r+b") as file:
            self._mmap = mmap.mmap(file.fileno(), size)
        self._buffer = self._mmap

    def close(self) -> None:
        """Unmap the shared file (a private board has nothing to release)."""
        if self._mmap is not None:
            self._mmap.close()

    def published(self) -> int:
        """The last seq handed out to the publisher (0: none yet)."""
        value: int = _SLOT.unpack_from(self._buffer, 0)[0]
        return value

    def set_published(self, seq: int) -> None:
        """The publisher handed out ``seq``: written before its POST is sent."""
        _SLOT.pack_into(self._buffer, 0, seq)

    def see(self, seq: int) -> None:
        """This worker saw id ``seq`` (``--no-publish``)."""
        offset = _SLOT.size * (1 + self._own)
        if seq > _SLOT.unpack_from(self._buffer, offset)[0]:
            _SLOT.pack_into(self._buffer, offset, seq)

    def highest_seen(self) -> int:
        """The highest id any worker saw (0: none)."""
        values: list[int] = [
            _SLOT.unpack_from(self._buffer, _SLOT.size * (1 + i))[0] for i in range(self._slots)
        ]
        return max(values)
