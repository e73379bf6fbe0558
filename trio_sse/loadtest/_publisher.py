"""The publisher: numbered, timestamped events POSTed at a steady rate.

Each event's data is compact JSON, ``{"t": <ns>, "seq": <n>, "pad": "xx..."}``:
``t`` is ``time.monotonic_ns()`` just before the POST is sent, so a subscriber in the
same process (one clock) gets the delivery latency by subtraction; ``seq`` numbers
the events 1, 2, 3... in the order they are handed out; ``pad`` brings the data to
the ``--payload`` size.

The body is a template with :data:`PAYLOAD_PLACEHOLDER` where the payload goes, in
one of three formats (:class:`PublishFormat`): JSON (the reference app's contract,
``{"data": {payload}}`` to ``POST /events/<topic>``), a form, or raw text. In a JSON
body the payload is the data object itself or, with :attr:`PayloadForm.STRING`, that
object's JSON text as a string (``{"data": "{\"t\":...}"}``), for servers that take
``data`` as a string; a form carries the text URL-encoded, a raw body as it is. Any
2xx answer is a success.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote_plus

import trio

from ._connection import Address, ErrorKind, StreamFailureError
from ._http import Target
from ._requests import Requester
from ._stats import Histogram

__all__ = [
    "PAYLOAD_PLACEHOLDER",
    "PUBLISH_TIMEOUT",
    "PayloadForm",
    "PublishFormat",
    "PublishOutcome",
    "PublishRecord",
    "Publisher",
    "answered_id",
    "encode_body",
    "event_data",
]

PAYLOAD_PLACEHOLDER: Final = "{payload}"

# A publish is one small request to a broker that never waits for subscribers; a
# server that takes longer is failing. The load tester stops waiting then, but the
# server may still make the event: see PublishOutcome.
PUBLISH_TIMEOUT: Final = 10.0

# An event id longer than this in a publish's answer is cut: the report keeps one
# per seq, and no real id is near it.
MAX_ANSWERED_ID: Final = 128

# Concurrent POSTs at most: at low rates only one is ever in flight (so events are
# published in seq order); at high rates a server answering in 10 ms still keeps up
# with 400 events/s.
PUBLISH_WORKERS: Final = 4


class PublishFormat(enum.Enum):
    """The publish body's format; the value is the CLI's name for it."""

    JSON = "json"
    FORM = "form"
    TEXT = "text"

    @property
    def content_type(self) -> str:
        """The ``Content-Type`` header sent with it."""
        return _CONTENT_TYPES[self]

    @property
    def default_template(self) -> str:
        """The body when no template is given."""
        return _DEFAULT_TEMPLATES[self]


_CONTENT_TYPES: Final = {
    PublishFormat.JSON: "application/json",
    PublishFormat.FORM: "application/x-www-form-urlencoded",
    PublishFormat.TEXT: "text/plain; charset=utf-8",
}
_DEFAULT_TEMPLATES: Final = {
    PublishFormat.JSON: '{"data": ' + PAYLOAD_PLACEHOLDER + "}",
    PublishFormat.FORM: "data=" + PAYLOAD_PLACEHOLDER,
    PublishFormat.TEXT: PAYLOAD_PLACEHOLDER,
}


class PublishOutcome(enum.Enum):
    """How one publish ended, as the load tester saw it; the value is the report's."""

    OK = "ok"
    """Answered 2xx, so the server made the event."""

    REFUSED = "refused"
    """Answered with another status, so the server says it made nothing."""

    TIMEOUT = "timeout"
    """No answer within the publish timeout (the server may still have made it)."""

    BROKEN = "broken"
    """The connection failed (refused, reset, closed, malformed answer), so the server
    may have made it, if the request reached it."""

    @property
    def may_be_made(self) -> bool:
        """Whether the server may have made the event though the publish failed."""
        return self in (PublishOutcome.TIMEOUT, PublishOutcome.BROKEN)


@dataclass(slots=True)
class PublishRecord:
    """One seq's publish.

    Attributes:
        seq: The load tester's number for the event.
        outcome: How it ended.
        sent_at: When its POST began, on Trio's clock.
        took: From the POST to its answer or failure, in seconds.
        event_id: The id the server answered with; ``None`` without an answer, or an
            answer that carries none.
        error: The error kind of a failure, else ``None``.
    """

    seq: int
    outcome: PublishOutcome
    sent_at: float
    took: float
    event_id: str | None = None
    error: ErrorKind | None = None


def answered_id(answer: bytes) -> str | None:
    """The event id in a publish's answer (a JSON object's ``id``), or ``None``."""
    try:
        value = json.loads(answer)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    event_id = value.get("id")
    if isinstance(event_id, bool) or not isinstance(event_id, str | int):
        return None
    return str(event_id)[:MAX_ANSWERED_ID]


class PayloadForm(enum.Enum):
    """How the payload sits in a JSON body."""

    OBJECT = "object"
    STRING = "string"


def encode_body(
    template: str, form: PublishFormat, payload_as: PayloadForm, data: dict[str, object]
) -> bytes:
    """The publish body: ``template`` with the payload in place of :data:`PAYLOAD_PLACEHOLDER`."""
    text = json.dumps(data, separators=(",", ":"))
    if form is PublishFormat.JSON:
        value = text if payload_as is PayloadForm.OBJECT else json.dumps(text)
    elif form is PublishFormat.FORM:
        value = quote_plus(text)
    else:
        value = text
    return template.replace(PAYLOAD_PLACEHOLDER, value).encode()


def event_data(seq: int, t_ns: int, payload: int) -> dict[str, object]:
    """The event's data: ``seq``, ``t`` and padding to about ``payload`` bytes of JSON."""
    data: dict[str, object] = {"t": t_ns, "seq": seq, "pad": ""}
    size = len(json.dumps(data, separators=(",", ":")))
    data["pad"] = "x" * max(0, payload - size)
    return data


class Publisher:
    """Publishes at ``rate`` events/s until :meth:`stop`; the outcome of every seq is known.

    Attributes:
        assigned: The last seq handed out (its POST may still be in flight).
        acked: Publishes the server accepted.
        failed: Seqs whose publish failed. The server may still have made some (a
            timeout, a broken connection): the run tells those by their deliveries.
        records: Each finished publish, by seq (one small record per event published).
        latency: Time from sending each POST to its answer.
    """

    def __init__(
        self,
        address: Address,
        target: Target,
        *,
        rate: float,
        payload: int,
        on_error: Callable[[ErrorKind, str], None],
        publish_format: PublishFormat = PublishFormat.JSON,
        template: str | None = None,
        payload_as: PayloadForm = PayloadForm.OBJECT,
        headers: Sequence[tuple[str, str]] = (),
        timeout: float = PUBLISH_TIMEOUT,
        on_assign: Callable[[int], None] | None = None,
    ) -> None:
        """``on_assign`` is called with each seq as it is handed out, before its POST."""
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self._address = address
        self._timeout = timeout
        self._target = target
        self._rate = rate
        self._payload = payload
        self._on_error = on_error
        self._format = publish_format
        self._template = template if template is not None else publish_format.default_template
        self._payload_as = payload_as
        self._headers = [("Content-Type", publish_format.content_type), *headers]
        self._stop_scope = trio.CancelScope()
        self._on_assign = on_assign
        self.assigned = 0
        self.acked = 0
        self.failed: set[int] = set()
        self.records: dict[int, PublishRecord] = {}
        self.latency = Histogram()

    def stop(self) -> None:
        """Publish nothing new; :meth:`run` returns once the POSTs in flight are answered."""
        self._stop_scope.cancel()

    async def run(self) -> None:
        """Publish until :meth:`stop`, then wait for the publishes in flight."""
        send, receive = trio.open_memory_channel[None](0)
        async with trio.open_nursery() as nursery:
            for _ in range(PUBLISH_WORKERS):
                nursery.start_soon(self._work, receive.clone())
            receive.close()
            with send, self._stop_scope:
                await self._schedule(send)

    async def _schedule(self, send: trio.MemorySendChannel[None]) -> None:
        if self._rate <= 0:
            await trio.sleep_forever()
        start = trio.current_time()
        ticks = 0
        while True:
            ticks += 1
            await trio.sleep_until(start + ticks / self._rate)
            # Blocks while every worker is busy: the server sets the pace then, and
            # the report shows the rate achieved.
            await send.send(None)

    async def _work(self, receive: trio.MemoryReceiveChannel[None]) -> None:
        requester = Requester(self._address)
        try:
            with receive:
                async for _ in receive:
                    self.assigned += 1
                    seq = self.assigned
                    if self._on_assign is not None:
                        self._on_assign(seq)
                    sent_at = trio.current_time()
                    body = encode_body(
                        self._template,
                        self._format,
                        self._payload_as,
                        event_data(seq, time.monotonic_ns(), self._payload),
                    )
                    try:
                        with trio.fail_after(self._timeout):
                            head, answer = await requester.request(
                                "POST",
                                self._target,
                                body=body,
                                headers=self._headers,
                            )
                    except StreamFailureError as exc:
                        requester.close()
                        kind = exc.kind.of_publish()
                        self._fail(seq, sent_at, PublishOutcome.BROKEN, kind, str(exc))
                        continue
                    except trio.TooSlowError:
                        requester.close()
                        message = f"no answer in {self._timeout:g} s"
                        self._fail(
                            seq, sent_at, PublishOutcome.TIMEOUT, ErrorKind.PUBLISH_TIMEOUT, message
                        )
                        continue
                    if not 200 <= head.status < 300:
                        # The answer's start says why (a JSON error, a page): the reason.
                        said = answer[:120].decode("utf-8", "replace").strip()
                        self._fail(
                            seq,
                            sent_at,
                            PublishOutcome.REFUSED,
                            ErrorKind.PUBLISH_STATUS,
                            f"POST answered {head.status}" + (f": {said}" if said else ""),
                        )
                        continue
                    took = trio.current_time() - sent_at
                    self.acked += 1
                    self.latency.record(took)
                    self.records[seq] = PublishRecord(
                        seq, PublishOutcome.OK, sent_at, took, event_id=answered_id(answer)
                    )
        finally:
            requester.close()

    def _fail(
        self, seq: int, sent_at: float, outcome: PublishOutcome, kind: ErrorKind, message: str
    ) -> None:
        took = trio.current_time() - sent_at
        self.records[seq] = PublishRecord(seq, outcome, sent_at, took, error=kind)
        self.failed.add(seq)
        self._on_error(kind, message)
