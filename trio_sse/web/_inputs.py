"""What the reference routes read from a request, each part checked.

A publish body (JSON, its numbers and fields bounded), a batch's topics, the
``Idempotency-Key`` header, a several-topic stream's ``topic`` parameters and a presence
listing's ``limit``. Anything wrong raises :class:`RequestError` with the status and a
message naming the problem; the app answers it as ``{"error": ...}``.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final, NoReturn

import quart

from ..broker import (
    DEFAULT_PRESENCE_LIMIT,
    MAX_PRESENCE_LIMIT,
    validate_idempotency_key,
    validate_topic,
    validate_topics,
)
from ..errors import InvalidEventError, SSEError
from ..protocol import ServerSentEvent

__all__ = [
    "MAX_INT_DIGITS",
    "RequestError",
    "batch_event_of",
    "batch_topics_of",
    "check_json_content_type",
    "event_from_body",
    "idempotency_key_of",
    "payload_of",
    "presence_limit_of",
    "topics_of",
]

# Longest integer a publish body may hold, in digits: a JSON number is a double to
# most clients, exact only up to 16 digits.
MAX_INT_DIGITS: Final = 1000

_PUBLISH_FIELDS: Final = frozenset({"data", "event", "id", "retry"})
_BATCH_FIELDS: Final = _PUBLISH_FIELDS | {"topics"}


class RequestError(SSEError):
    """A request the reference routes refuse: answered ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _refuse(message: str, status: int = 400) -> NoReturn:
    raise RequestError(status, message)


def _refuse_constant(name: str) -> NoReturn:
    _refuse(f"body is not valid JSON: {name} is not allowed")


def _parse_int(text: str) -> int:
    # Checked before converting: Python refuses (ValueError) integers over its
    # int_max_str_digits, and converting one costs time quadratic in its length.
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS:
        _refuse(f"number out of range: an integer of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # It would be sent on as Infinity, which is not JSON.
        _refuse(f"number out of range: {text[:40]} is not a finite double")
    return value


def payload_of(body: bytes) -> dict[str, Any]:
    """A publish body as its JSON object, numbers bounded (400 naming what is wrong)."""
    try:
        payload: Any = json.loads(
            body, parse_constant=_refuse_constant, parse_int=_parse_int, parse_float=_parse_float
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _refuse(f"body is not valid JSON: {exc}")
    except RecursionError:
        _refuse("body is not valid JSON: nested too deeply")
    if not isinstance(payload, dict):
        _refuse('body must be a JSON object like {"data": "..."}')
    return payload


def event_from_body(body: bytes) -> ServerSentEvent:
    """A ``POST /events/<topic>`` body as its event (400 naming what is wrong)."""
    return _event_from_payload(payload_of(body), _PUBLISH_FIELDS)


def batch_topics_of(payload: dict[str, Any], max_topics: int) -> list[str]:
    """A ``POST /publish`` body's topics, every one checked (400 naming the first bad one)."""
    if "topics" not in payload:
        _refuse('missing field "topics"')
    topics = payload["topics"]
    if not isinstance(topics, list):
        _refuse('"topics" must be a list of topic names, like ["a", "b"]')
    if not topics:
        _refuse('"topics" must list at least one topic')
    if len(topics) > max_topics:
        _refuse(f'"topics" lists {len(topics)} topics; a publish may list at most {max_topics}')
    return validate_topics(topics)


def _event_from_payload(payload: dict[str, Any], fields: frozenset[str]) -> ServerSentEvent:
    unknown = payload.keys() - fields
    if unknown:
        _refuse(
            f"unknown field(s): {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(fields))}"
        )
    if "data" not in payload:
        _refuse('missing field "data"')
    data = payload["data"]
    if not isinstance(data, str):
        # Non-string data is sent as compact JSON, so clients can JSON.parse it.
        data = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    for name in ("event", "id"):
        if payload.get(name) is not None and not isinstance(payload[name], str):
            _refuse(f'"{name}" must be a string')
    if payload.get("id") == "":
        # On the wire "id:" with no value resets the client's last event ID, so its
        # next reconnection would resume from nothing and miss what came between.
        _refuse('"id" must not be empty; leave it out to get a server-assigned id')
    retry = payload.get("retry")
    if retry is not None and (isinstance(retry, bool) or not isinstance(retry, int)):
        _refuse('"retry" must be a non-negative integer (milliseconds)')
    try:
        return ServerSentEvent(data, event=payload.get("event"), id=payload.get("id"), retry=retry)
    except InvalidEventError as exc:
        _refuse(str(exc))


def idempotency_key_of(request: quart.Request) -> str | None:
    """The request's ``Idempotency-Key``, checked; ``None`` if it has none."""
    keys = request.headers.getlist("Idempotency-Key")
    if len(keys) > 1:
        _refuse("give one Idempotency-Key header, not several")
    if not keys:
        return None
    return validate_idempotency_key(keys[0])


def check_json_content_type(request: quart.Request) -> None:
    """Refuse a publish whose body is not declared JSON (415).

    A page on any site may send a ``text/plain``, form or multipart ``POST`` to any
    server without asking it first; ``application/json`` needs a CORS preflight, which
    only the origins of ``create_app(cors=...)`` pass. So this header is what keeps
    other sites' pages from publishing to an open server.
    """
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if request.mimetype != "application/json" or charset not in ("utf-8", "utf8"):
        got = request.headers.get("Content-Type")
        _refuse(
            "publishing needs Content-Type: application/json (UTF-8), "
            f"got {'none' if got is None else repr(got[:100])}",
            415,
        )


def topics_of(request: quart.Request, cap: int) -> list[str]:
    """The ``topic`` query parameters of a several-topic stream, checked, in order."""
    topics = request.args.getlist("topic")
    if not topics:
        _refuse("name the topics to stream: /events?topic=a&topic=b")
    if len(topics) > cap:
        _refuse(
            f"{len(topics)} topics requested; a stream may have at most {cap} "
            "(--max-topics-per-stream)"
        )
    seen: set[str] = set()
    for topic in topics:
        validate_topic(topic)
        if topic in seen:
            _refuse(f"topic {topic!r} is given twice")
        seen.add(topic)
    return topics


def presence_limit_of(request: quart.Request) -> int:
    """The ``limit`` query parameter of ``GET /presence/<topic>``, checked."""
    text = request.args.get("limit")
    if text is None:
        return DEFAULT_PRESENCE_LIMIT
    if not (text.isascii() and text.isdigit()) or int(text[:6]) > MAX_PRESENCE_LIMIT:
        _refuse(f"limit must be an integer from 0 to {MAX_PRESENCE_LIMIT}, got {text!r:.40}")
    return int(text)


def batch_event_of(payload: dict[str, Any]) -> ServerSentEvent:
    """A ``POST /publish`` body's event."""
    return _event_from_payload(payload, _BATCH_FIELDS)
