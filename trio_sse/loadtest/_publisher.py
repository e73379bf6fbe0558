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
    "Publisher",
    "encode_body",
    "event_data",
]

PAYLOAD_PLACEHOLDER: Final = "{payload}"

# A publish is one small request to a broker that never waits for subscribers; a
# server that takes longer is failing, and the event is counted as not published.
PUBLISH_TIMEOUT: Final = 10.0

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
        failed: Seqs whose publish failed (never delivered, so never counted as lost).
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
    ) -> None:
        self._address = address
        self._target = target
        self._rate = rate
        self._payload = payload
        self._on_error = on_error
        self._format = publish_format
        self._template = template if template is not None else publish_format.default_template
        self._payload_as = payload_as
        self._headers = [("Content-Type", publish_format.content_type), *headers]
        self._stop_scope = trio.CancelScope()
        self.assigned = 0
        self.acked = 0
        self.failed: set[int] = set()
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
                    sent_at = trio.current_time()
                    body = encode_body(
                        self._template,
                        self._format,
                        self._payload_as,
                        event_data(seq, time.monotonic_ns(), self._payload),
                    )
                    try:
                        with trio.fail_after(PUBLISH_TIMEOUT):
                            head, answer = await requester.request(
                                "POST",
                                self._target,
                                body=body,
                                headers=self._headers,
                            )
                    except StreamFailureError as exc:
                        self._fail(seq, exc.kind.of_publish(), str(exc))
                        requester.close()
                        continue
                    except trio.TooSlowError:
                        self._fail(
                            seq, ErrorKind.PUBLISH_TIMEOUT, f"no answer in {PUBLISH_TIMEOUT:g} s"
                        )
                        requester.close()
                        continue
                    if not 200 <= head.status < 300:
                        # The answer's start says why (a JSON error, a page): the reason.
                        said = answer[:120].decode("utf-8", "replace").strip()
                        self._fail(
                            seq,
                            ErrorKind.PUBLISH_STATUS,
                            f"POST answered {head.status}" + (f": {said}" if said else ""),
                        )
                        continue
                    self.acked += 1
                    self.latency.record(trio.current_time() - sent_at)
        finally:
            requester.close()

    def _fail(self, seq: int, kind: ErrorKind, message: str) -> None:
        self.failed.add(seq)
        self._on_error(kind, message)
