"""The sans-I/O protocol core: events, their encoding, and the incremental decoder.

Pure code that imports only the standard library: no sockets, no clock, no Trio.
"""

from ._decoder import DEFAULT_MAX_EVENT_SIZE as DEFAULT_MAX_EVENT_SIZE
from ._decoder import Decoder as Decoder
from ._decoder import MessageEvent as MessageEvent
from ._encoder import ServerSentEvent as ServerSentEvent
from ._encoder import encode_comment as encode_comment
from ._encoder import encode_retry as encode_retry

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "Decoder",
    "MessageEvent",
    "ServerSentEvent",
    "encode_comment",
    "encode_retry",
]
