"""A Redis Streams backplane, so that several processes and hosts share topics.

Needs the ``redis`` extra (``pip install 'trio-sse[redis]'``, which installs
coredis). Nothing else in trio_sse imports this package, so coredis stays optional.
"""

from ._broker import DEFAULT_HISTORY_BYTES as DEFAULT_HISTORY_BYTES
from ._broker import DEFAULT_HISTORY_TTL as DEFAULT_HISTORY_TTL
from ._broker import DEFAULT_KEY_PREFIX as DEFAULT_KEY_PREFIX
from ._broker import DEFAULT_MAX_TOPICS as DEFAULT_MAX_TOPICS
from ._broker import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._broker import RedisBroker as RedisBroker
from ._ids import parse_stream_id as parse_stream_id
from ._open import open_redis_broker as open_redis_broker

__all__ = [
    "DEFAULT_HISTORY_BYTES",
    "DEFAULT_HISTORY_TTL",
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_MAX_TOPICS",
    "DEFAULT_TIMEOUT",
    "RedisBroker",
    "open_redis_broker",
    "parse_stream_id",
]
