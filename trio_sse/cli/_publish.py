"""``trio-sse publish``: publish one event through the reference app's HTTP API.

It POSTs ``{"data": ..., "event": ..., "id": ...}`` (``event`` and ``id`` only when
given) to a ``POST /events/<topic>`` URL and prints the id the server assigned.

Every request carries an ``Idempotency-Key`` (the one given, or a random one), so
that when the answer is lost (a 503, a timeout, a connection broken after the
request went out: the event may have been stored) the command can retry once,
safely: the server answers the first publish's id instead of publishing again.

Exit status: 0 when the server accepted the event; 1 when it refused it (its JSON
``error`` message is printed on stderr), could not be reached, or ``--data`` is not
valid JSON under ``--json-data``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import Final, NoReturn, TextIO
from urllib.parse import urlsplit

import httpx

from ..broker import validate_idempotency_key
from ..errors import InvalidEventError

__all__ = ["DESCRIPTION", "configure", "idempotency_key", "publish", "run"]

DESCRIPTION: Final = (
    "POST one event to the reference app (POST /events/<topic>) and print its id. "
    "Exits 1, with the server's error message, if it is refused."
)

# A publish is one small request to a broker that never waits for subscribers, so
# a server that has not answered in this long is not going to.
PUBLISH_TIMEOUT: Final = 10.0
# A 503 from a backplane that timed out lasts seconds; one retry a second later
# rides out a blip without making a script wait long for a real outage.
RETRY_DELAY: Final = 1.0
# Answers after which the event may or may not have been stored.
_RETRIED_STATUS: Final = 503
# Enough of a non-JSON error page to recognise it, not a whole HTML document.
_MAX_ERROR_TEXT: Final = 200


def _reject_constant(name: str) -> NoReturn:
    # NaN and Infinity are Python's extensions, not JSON; the server refuses them.
    raise ValueError(f"{name} is not allowed")


def _error_of(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return response.text[:_MAX_ERROR_TEXT].strip() or "(no error message)"


class _PublishError(Exception):
    """Why the event was not published, in one line for stderr."""


def _payload(
    data: str, event: str | None, event_id: str | None, *, is_json_data: bool
) -> dict[str, object]:
    payload: dict[str, object] = {"data": data}
    if is_json_data:
        try:
            payload["data"] = json.loads(data, parse_constant=_reject_constant)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise _PublishError(f"--data is not valid JSON: {exc}") from None
    if event is not None:
        payload["event"] = event
    if event_id is not None:
        payload["id"] = event_id
    return payload


class _MaybeStoredError(_PublishError):
    """No answer says whether the event was stored: a retry with the same key is safe."""


def _check_port(url: str) -> None:
    # httpx keeps a port above 65535, and the socket layer takes it modulo 65536:
    # http://host:99999/ would publish to port 34463, to whatever listens there.
    try:
        urlsplit(url).port  # noqa: B018 - raises ValueError out of 0-65535
    except ValueError as exc:
        raise _PublishError(f"invalid url {url!r}: {exc}") from None


def _post(url: str, payload: dict[str, object], idempotency_key: str) -> str:
    headers = {"Idempotency-Key": idempotency_key}
    try:
        response = httpx.post(url, json=payload, headers=headers, timeout=PUBLISH_TIMEOUT)
    except httpx.InvalidURL as exc:
        raise _PublishError(f"invalid url {url!r}: {exc}") from None
    except httpx.UnsupportedProtocol:
        raise _PublishError(f"url must be http:// or https://, got {url!r}") from None
    except httpx.ConnectError as exc:
        raise _PublishError(f"cannot connect to {url}: {exc}") from None
    except httpx.TimeoutException:
        raise _MaybeStoredError(f"no answer from {url} within {PUBLISH_TIMEOUT:g} s") from None
    except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
        raise _MaybeStoredError(f"POST {url} failed: {exc}") from None
    except httpx.HTTPError as exc:
        raise _PublishError(f"POST {url} failed: {exc}") from None
    if not response.is_success:
        # Hypercorn, like many HTTP/1.1 servers, sends no reason phrase.
        reason = response.reason_phrase or httpx.codes.get_reason_phrase(response.status_code)
        status = f"{response.status_code} {reason}"
        error = _MaybeStoredError if response.status_code == _RETRIED_STATUS else _PublishError
        raise error(f"POST {url} answered {status}: {_error_of(response)}")
    try:
        event_id = response.json()["id"]
    except (ValueError, KeyError, TypeError):
        event_id = None
    if not isinstance(event_id, str):
        raise _PublishError(f"POST {url} answered {response.status_code} without an event id")
    return event_id


def _post_with_one_retry(
    url: str, payload: dict[str, object], idempotency_key: str, err: TextIO
) -> str:
    try:
        return _post(url, payload, idempotency_key)
    except _MaybeStoredError as exc:
        err.write(f"trio-sse publish: {exc}; retrying once with the same Idempotency-Key\n")
        err.flush()
    time.sleep(RETRY_DELAY)
    return _post(url, payload, idempotency_key)


def publish(
    url: str,
    *,
    data: str,
    out: TextIO,
    err: TextIO,
    event: str | None = None,
    event_id: str | None = None,
    is_json_data: bool = False,
    idempotency_key: str | None = None,
) -> int:
    """Publish one event to ``url`` and print its id to ``out``.

    Args:
        url: A ``POST /events/<topic>`` URL of the reference app.
        data: The event's data: sent as a string, or, with ``is_json_data``, parsed
            and sent as that JSON value (the server then sends it as compact JSON).
        out: Where the id goes.
        err: Where the error goes.
        event: The event type.
        event_id: The event id, instead of one the server picks.
        is_json_data: Parse ``data`` as JSON.
        idempotency_key: Sent as ``Idempotency-Key``; a random one if not given. A
            publish that gets a 503, a timeout or a broken connection is retried once
            with it, a second later.

    Returns:
        The exit status: 0 if the server accepted the event, else 1.
    """
    try:
        _check_port(url)
        payload = _payload(data, event, event_id, is_json_data=is_json_data)
        key = idempotency_key if idempotency_key is not None else uuid.uuid4().hex
        published_id = _post_with_one_retry(url, payload, key, err)
    except _PublishError as exc:
        err.write(f"trio-sse publish: {exc}\n")
        err.flush()
        return 1
    out.write(f"{published_id}\n")
    out.flush()
    return 0


def idempotency_key(text: str) -> str:
    """The argument type of ``--idempotency-key``: a key the server accepts."""
    try:
        return validate_idempotency_key(text)
    except InvalidEventError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``trio-sse publish`` to ``parser``."""
    parser.add_argument("url", metavar="URL", help="e.g. http://127.0.0.1:8000/events/news")
    parser.add_argument("--data", required=True, metavar="TEXT", help="the event's data")
    parser.add_argument("--event", metavar="TYPE", help="the event type")
    parser.add_argument("--id", metavar="ID", help="the event id (default: the server's)")
    parser.add_argument(
        "--idempotency-key",
        type=idempotency_key,
        metavar="KEY",
        help="1 to 128 visible ASCII characters; a publish repeating an earlier key of "
        "the topic (while its event is in history) publishes nothing and prints the "
        "earlier id; default: a random key. A 503 or a lost answer is retried once with it",
    )
    parser.add_argument(
        "--json-data",
        action="store_true",
        dest="is_json_data",
        help="parse --data as JSON and send that value",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``trio-sse publish`` with the options :func:`configure` added; return its status."""
    return publish(
        args.url,
        data=args.data,
        out=sys.stdout,
        err=sys.stderr,
        event=args.event,
        event_id=args.id,
        is_json_data=args.is_json_data,
        idempotency_key=args.idempotency_key,
    )
