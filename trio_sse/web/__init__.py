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
from ._inputs import MAX_INT_DIGITS as MAX_INT_DIGITS
from ._inputs import RequestError as RequestError
from ._inputs import batch_event_of as batch_event_of
from ._inputs import batch_topics_of as batch_topics_of
from ._inputs import check_json_content_type as check_json_content_type
from ._inputs import event_from_body as event_from_body
from ._inputs import idempotency_key_of as idempotency_key_of
from ._inputs import payload_of as payload_of
from ._inputs import presence_limit_of as presence_limit_of
from ._inputs import topics_of as topics_of
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
    "MAX_INT_DIGITS",
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
    "RequestError",
    "SlowReaderError",
    "StreamDrain",
    "StreamEnd",
    "StreamLimiter",
    "StreamObserver",
    "batch_event_of",
    "batch_topics_of",
    "check_json_content_type",
    "enable_cors",
    "event_from_body",
    "event_stream",
    "idempotency_key_of",
    "last_event_id_of",
    "loop_load",
    "payload_of",
    "presence_limit_of",
    "topics_of",
]
