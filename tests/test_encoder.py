"""The encoder: wire format and the validation that keeps fields from injecting others."""

from __future__ import annotations

import dataclasses

import pytest

from trio_sse import InvalidEventError, ServerSentEvent, encode_comment, encode_retry


@pytest.mark.parametrize(
    ("event", "wire"),
    [
        (ServerSentEvent("hi"), b"data: hi\n\n"),
        (ServerSentEvent(""), b"data: \n\n"),
        (ServerSentEvent(" lead"), b"data:  lead\n\n"),
        (ServerSentEvent("a\nb"), b"data: a\ndata: b\n\n"),
        (ServerSentEvent("a\r\nb"), b"data: a\ndata: b\n\n"),
        (ServerSentEvent("a\rb"), b"data: a\ndata: b\n\n"),
        (ServerSentEvent("a\n\nb"), b"data: a\ndata: \ndata: b\n\n"),
        (ServerSentEvent("a\n"), b"data: a\ndata: \n\n"),
        (ServerSentEvent("\r\n"), b"data: \ndata: \n\n"),
        # Only CR, LF and CRLF break lines; these are data.
        (ServerSentEvent("a\u2028b\x85c\x0bd"), "data: a\u2028b\x85c\x0bd\n\n".encode()),
        (ServerSentEvent("x", event="update"), b"event: update\ndata: x\n\n"),
        (ServerSentEvent("x", id="42"), b"id: 42\ndata: x\n\n"),
        (ServerSentEvent("x", id=""), b"id: \ndata: x\n\n"),
        (ServerSentEvent("x", retry=0), b"retry: 0\ndata: x\n\n"),
        (
            ServerSentEvent("é ✓", event="e", id="7", retry=1500),
            "event: e\nid: 7\nretry: 1500\ndata: é ✓\n\n".encode(),
        ),
        (ServerSentEvent(":not a comment"), b"data: :not a comment\n\n"),
        (ServerSentEvent("nul\x00ok"), b"data: nul\x00ok\n\n"),
    ],
)
def test_encode_wire_format(event: ServerSentEvent, wire: bytes) -> None:
    assert event.encode() == wire


@pytest.mark.parametrize(
    "fields",
    [
        # Injection attempts: each would smuggle a field or an event into the stream.
        {"id": "1\ndata: injected"},
        {"id": "1\r\nevent: admin"},
        {"id": "1\rretry: 1"},
        {"event": "message\ndata: injected"},
        {"event": "x\r"},
        {"event": "\n"},
        # A browser ignores an id with NUL; sending one would desynchronise resume.
        {"id": "a\x00b"},
        {"retry": -1},
        {"retry": 1.5},
        {"retry": True},
        {"retry": "100"},
        {"event": 5},
        {"id": 5},
    ],
)
def test_invalid_fields_are_rejected_not_stripped(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidEventError) as info:
        ServerSentEvent("x", **fields)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("data", [None, b"bytes", 5, ["x"]])
def test_data_must_be_text(data: object) -> None:
    with pytest.raises(InvalidEventError, match="data must be a str"):
        ServerSentEvent(data)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "fields"), [("\ud800", {}), ("x", {"event": "\udfff"}), ("x", {"id": "a\ud83d"})]
)
def test_lone_surrogates_are_rejected(data: str, fields: dict[str, str]) -> None:
    with pytest.raises(InvalidEventError, match="surrogate"):
        ServerSentEvent(data, **fields)  # type: ignore[arg-type]


def test_event_is_frozen_and_compares_by_value() -> None:
    event = ServerSentEvent("x", id="1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.data = "y"  # type: ignore[misc]
    assert event == ServerSentEvent("x", id="1")
    assert hash(event) == hash(ServerSentEvent("x", id="1"))


def test_encode_is_computed_once_and_shared() -> None:
    event = ServerSentEvent("payload" * 100)
    assert event.encode() is event.encode()
    # replace() makes a new event with its own encoding, never a stale cached one.
    renamed = dataclasses.replace(event, id="9")
    assert renamed.encode().startswith(b"id: 9\n")
    assert renamed == ServerSentEvent("payload" * 100, id="9")


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("", b":\n"),
        ("heartbeat", b": heartbeat\n"),
        # A newline in a comment starts another comment line, never a field.
        ("a\ndata: injected", b": a\n: data: injected\n"),
        ("a\r\n\rb", b": a\n:\n: b\n"),
    ],
)
def test_encode_comment(text: str, wire: bytes) -> None:
    assert encode_comment(text) == wire


def test_encode_retry() -> None:
    assert encode_retry(2500) == b"retry: 2500\n"
    for bad in (-5, 2.5, True):
        with pytest.raises(InvalidEventError):
            encode_retry(bad)  # type: ignore[arg-type]
