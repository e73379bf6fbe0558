"""``trio-sse publish``: publish one event through the reference app's HTTP API.

It POSTs ``{"data": ..., "event": ..., "id": ...}`` (``event`` and ``id`` only when
given) to a ``POST /events/<topic>`` URL and prints the id the server assigned.

Exit status: 0 when the server accepted the event; 1 when it refused it (its JSON
``error`` message is printed on stderr), could not be reached, or ``--data`` is not
valid JSON under ``--json-data``.
"""

from __future__ import annotations

import json
from typing import Final, NoReturn, TextIO

import httpx

__all__ = ["publish"]

# A publish is one small request to a broker that never waits for subscribers, so
# a server that has not answered in this long is not going to.
PUBLISH_TIMEOUT: Final = 10.0
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


def _post(url: str, payload: dict[str, object]) -> str:
    try:
        response = httpx.post(url, json=payload, timeout=PUBLISH_TIMEOUT)
    except httpx.InvalidURL as exc:
        raise _PublishError(f"invalid url {url!r}: {exc}") from None
    except httpx.UnsupportedProtocol:
        raise _PublishError(f"url must be http:// or https://, got {url!r}") from None
    except httpx.ConnectError as exc:
        raise _PublishError(f"cannot connect to {url}: {exc}") from None
    except httpx.TimeoutException:
        raise _PublishError(f"no answer from {url} within {PUBLISH_TIMEOUT:g} s") from None
    except httpx.HTTPError as exc:
        raise _PublishError(f"POST {url} failed: {exc}") from None
    if not response.is_success:
        # Hypercorn, like many HTTP/1.1 servers, sends no reason phrase.
        reason = response.reason_phrase or httpx.codes.get_reason_phrase(response.status_code)
        status = f"{response.status_code} {reason}"
        raise _PublishError(f"POST {url} answered {status}: {_error_of(response)}")
    try:
        event_id = response.json()["id"]
    except (ValueError, KeyError, TypeError):
        event_id = None
    if not isinstance(event_id, str):
        raise _PublishError(f"POST {url} answered {response.status_code} without an event id")
    return event_id


def publish(
    url: str,
    *,
    data: str,
    out: TextIO,
    err: TextIO,
    event: str | None = None,
    event_id: str | None = None,
    is_json_data: bool = False,
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

    Returns:
        The exit status: 0 if the server accepted the event, else 1.
    """
    try:
        payload = _payload(data, event, event_id, is_json_data=is_json_data)
        published_id = _post(url, payload)
    except _PublishError as exc:
        err.write(f"trio-sse publish: {exc}\n")
        err.flush()
        return 1
    out.write(f"{published_id}\n")
    out.flush()
    return 0
