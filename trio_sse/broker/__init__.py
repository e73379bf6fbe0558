"""Brokers: topics, fan-out to subscribers, and replay history. Depends on Trio only."""

from ._fanout import LocalFanout as LocalFanout
from ._interface import DEFAULT_REPLICA_TIMEOUT as DEFAULT_REPLICA_TIMEOUT
from ._interface import MAX_BACKLOG as MAX_BACKLOG
from ._interface import MAX_EVENT_ID_LENGTH as MAX_EVENT_ID_LENGTH
from ._interface import MAX_IDEMPOTENCY_KEY_LENGTH as MAX_IDEMPOTENCY_KEY_LENGTH
from ._interface import MAX_REPLICA_TIMEOUT as MAX_REPLICA_TIMEOUT
from ._interface import RESET_EVENT_TYPE as RESET_EVENT_TYPE
from ._interface import BackplaneStatistics as BackplaneStatistics
from ._interface import Broker as Broker
from ._interface import BrokerStatistics as BrokerStatistics
from ._interface import reset_event as reset_event
from ._interface import validate_backlog as validate_backlog
from ._interface import validate_idempotency_key as validate_idempotency_key
from ._interface import validate_topic as validate_topic
from ._interface import validate_topics as validate_topics
from ._memory import DEFAULT_HISTORY as DEFAULT_HISTORY
from ._memory import DEFAULT_HISTORY_BYTES as DEFAULT_HISTORY_BYTES
from ._memory import DEFAULT_HISTORY_TOTAL_BYTES as DEFAULT_HISTORY_TOTAL_BYTES
from ._memory import DEFAULT_HISTORY_TTL as DEFAULT_HISTORY_TTL
from ._memory import DEFAULT_MAX_TOPICS as DEFAULT_MAX_TOPICS
from ._memory import ENTRY_OVERHEAD as ENTRY_OVERHEAD
from ._memory import MAX_CHOSEN_ID as MAX_CHOSEN_ID
from ._memory import MemoryBroker as MemoryBroker
from ._merge import MAX_COMPOUND_ID_LENGTH as MAX_COMPOUND_ID_LENGTH
from ._merge import TopicMerge as TopicMerge
from ._merge import format_position as format_position
from ._merge import parse_position as parse_position
from ._presence import DEFAULT_PRESENCE_LIMIT as DEFAULT_PRESENCE_LIMIT
from ._presence import DEFAULT_PRESENCE_TTL as DEFAULT_PRESENCE_TTL
from ._presence import MAX_PRESENCE_LIMIT as MAX_PRESENCE_LIMIT
from ._presence import MAX_SUBJECT_LENGTH as MAX_SUBJECT_LENGTH
from ._presence import Presence as Presence
from ._presence import PresenceBook as PresenceBook
from ._presence import PresenceChange as PresenceChange
from ._presence import presence_event as presence_event
from ._presence import validate_limit as validate_limit
from ._presence import validate_subject as validate_subject
from ._subscription import DEFAULT_QUEUE_SIZE as DEFAULT_QUEUE_SIZE
from ._subscription import REPLAY_PIECE as REPLAY_PIECE
from ._subscription import CloseReason as CloseReason
from ._subscription import FrameSink as FrameSink
from ._subscription import ReplaySource as ReplaySource
from ._subscription import SinkResult as SinkResult
from ._subscription import Subscription as Subscription

__all__ = [
    "DEFAULT_HISTORY",
    "DEFAULT_HISTORY_BYTES",
    "DEFAULT_HISTORY_TOTAL_BYTES",
    "DEFAULT_HISTORY_TTL",
    "DEFAULT_MAX_TOPICS",
    "DEFAULT_PRESENCE_LIMIT",
    "DEFAULT_PRESENCE_TTL",
    "DEFAULT_QUEUE_SIZE",
    "DEFAULT_REPLICA_TIMEOUT",
    "ENTRY_OVERHEAD",
    "MAX_BACKLOG",
    "MAX_CHOSEN_ID",
    "MAX_COMPOUND_ID_LENGTH",
    "MAX_EVENT_ID_LENGTH",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "MAX_PRESENCE_LIMIT",
    "MAX_REPLICA_TIMEOUT",
    "MAX_SUBJECT_LENGTH",
    "REPLAY_PIECE",
    "RESET_EVENT_TYPE",
    "BackplaneStatistics",
    "Broker",
    "BrokerStatistics",
    "CloseReason",
    "FrameSink",
    "LocalFanout",
    "MemoryBroker",
    "Presence",
    "PresenceBook",
    "PresenceChange",
    "ReplaySource",
    "SinkResult",
    "Subscription",
    "TopicMerge",
    "format_position",
    "parse_position",
    "presence_event",
    "reset_event",
    "validate_backlog",
    "validate_idempotency_key",
    "validate_limit",
    "validate_subject",
    "validate_topic",
    "validate_topics",
]
