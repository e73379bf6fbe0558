"""The web layer: SSE responses for Quart-Trio apps under Hypercorn."""

from ..errors import AuthError as AuthError
from ._auth import Action as Action
from ._auth import AuthConfig as AuthConfig
from ._auth import Authorizer as Authorizer
from ._auth import Credentials as Credentials
from ._auth import Grant as Grant
from ._batching import BatchWindow as BatchWindow
from ._batching import LoopLoad as LoopLoad
from ._batching import loop_load as loop_load
from ._body import DEFAULT_BODY_TIMEOUT as DEFAULT_BODY_TIMEOUT
from ._body import BodyLimiter as BodyLimiter
from ._cors import CORS_MAX_AGE as CORS_MAX_AGE
from ._cors import CorsPolicy as CorsPolicy
from ._cors import enable_cors as enable_cors
from ._limits import DEFAULT_MAX_STREAMS as DEFAULT_MAX_STREAMS
from ._limits import DEFAULT_MAX_STREAMS_PER_IP as DEFAULT_MAX_STREAMS_PER_IP
from ._limits import StreamLimiter as StreamLimiter
from ._metrics import Metrics as Metrics
from ._observer import StreamEnd as StreamEnd
from ._observer import StreamObserver as StreamObserver
from ._responder import EventStreamConnection as EventStreamConnection
from ._stream import DEFAULT_HEARTBEAT as DEFAULT_HEARTBEAT
from ._stream import DEFAULT_MAX_BUFFER as DEFAULT_MAX_BUFFER
from ._stream import DEFAULT_MIN_WRITE_INTERVAL as DEFAULT_MIN_WRITE_INTERVAL
from ._stream import SSE_HEADERS as SSE_HEADERS
from ._stream import EventStreamBody as EventStreamBody
from ._stream import StreamDrain as StreamDrain
from ._stream import event_stream as event_stream
from ._stream import last_event_id_of as last_event_id_of
from ._writers import ASGI_WRITE_TIMEOUT as ASGI_WRITE_TIMEOUT
from ._writers import CHUNK_WRITER_EXTENSION as CHUNK_WRITER_EXTENSION
from ._writers import AsgiChunkWriter as AsgiChunkWriter
from ._writers import BoundedChunkWriter as BoundedChunkWriter
from ._writers import ChunkWriter as ChunkWriter
from ._writers import DirectChunkWriter as DirectChunkWriter
from ._writers import SlowReaderError as SlowReaderError

__all__ = [
    "ASGI_WRITE_TIMEOUT",
    "CHUNK_WRITER_EXTENSION",
    "CORS_MAX_AGE",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_MAX_BUFFER",
    "DEFAULT_MAX_STREAMS",
    "DEFAULT_MAX_STREAMS_PER_IP",
    "DEFAULT_MIN_WRITE_INTERVAL",
    "SSE_HEADERS",
    "Action",
    "AsgiChunkWriter",
    "AuthConfig",
    "AuthError",
    "Authorizer",
    "BatchWindow",
    "BodyLimiter",
    "BoundedChunkWriter",
    "ChunkWriter",
    "CorsPolicy",
    "Credentials",
    "DirectChunkWriter",
    "EventStreamBody",
    "EventStreamConnection",
    "Grant",
    "LoopLoad",
    "Metrics",
    "SlowReaderError",
    "StreamDrain",
    "StreamEnd",
    "StreamLimiter",
    "StreamObserver",
    "enable_cors",
    "event_stream",
    "last_event_id_of",
    "loop_load",
]
