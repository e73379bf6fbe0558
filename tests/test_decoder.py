"""Tests for the incremental decoder (WHATWG HTML 9.2.5 and 9.2.6).

Every spec case is fed whole, one byte at a time, and split in two at every
position; all chunkings must agree on the events, ``last_event_id`` and ``retry``.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_sse.protocol
from trio_sse import EventTooLargeError, ProtocolError, SSEError
from trio_sse.protocol import (
    DEFAULT_MAX_EVENT_SIZE,
    Decoder,
    MessageEvent,
    ServerSentEvent,
    encode_comment,
)

# The decoded outcome of a whole stream: events, last_event_id, retry.
Outcome = tuple[list[MessageEvent], str, int | None]


def _chunkings(data: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """Yield (label, chunks): whole, byte by byte, and split in two everywhere."""
    yield "whole", [data]
    yield "bytewise", [data[i : i + 1] for i in range(len(data))]
    for i in range(len(data) + 1):
        yield f"split at {i}", [data[:i], data[i:]]


def _decode(chunks: Sequence[bytes], *, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> Outcome:
    decoder = Decoder(max_event_size=max_event_size)
    events: list[MessageEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    decoder.close()
    return events, decoder.last_event_id, decoder.retry


def _decode_until_error(
    chunks: Sequence[bytes], *, max_event_size: int
) -> tuple[list[MessageEvent], ProtocolError | None]:
    decoder = Decoder(max_event_size=max_event_size)
    events: list[MessageEvent] = []
    try:
        for chunk in chunks:
            events.extend(decoder.feed(chunk))
        decoder.close()
    except ProtocolError as exc:
        return events, exc
    return events, None


def _assert_decodes(data: bytes, expected: Outcome) -> None:
    """The helper every table row goes through: all chunkings give ``expected``."""
    for label, chunks in _chunkings(data):
        assert _decode(chunks) == expected, f"{label}: {chunks!r}"


def _events(*triples: tuple[str, str, str]) -> list[MessageEvent]:
    return [MessageEvent(*triple) for triple in triples]


# (id, stream bytes, expected events as (type, data, last_event_id), last_event_id, retry)
SPEC_CASES: list[tuple[str, bytes, list[MessageEvent], str, int | None]] = [
    ("lf", b"data: hello\n\n", _events(("message", "hello", "")), "", None),
    ("crlf", b"data: a\r\ndata: b\r\n\r\n", _events(("message", "a\nb", "")), "", None),
    ("cr", b"data: a\rdata: b\r\r", _events(("message", "a\nb", "")), "", None),
    (
        "mixed_endings",
        b"data: a\rdata: b\ndata: c\r\n\n",
        _events(("message", "a\nb\nc", "")),
        "",
        None,
    ),
    (
        "lf_cr_is_two_line_ends",
        b"data: a\n\rdata: b\n\n",
        _events(("message", "a", ""), ("message", "b", "")),
        "",
        None,
    ),
    ("cr_then_crlf", b"data: a\r\r\n", _events(("message", "a", "")), "", None),
    (
        "cr_then_multibyte",
        b"data: a\r\xe2\x82\xac\n\n",
        _events(("message", "a", "")),
        "",
        None,
    ),
    ("blank_lines_only", b"\n\n\r\n\r", [], "", None),
    ("empty_stream", b"", [], "", None),
    ("bom_once", b"\xef\xbb\xbfdata: a\n\n", _events(("message", "a", "")), "", None),
    ("bom_twice_is_field_name", b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\n", [], "", None),
    (
        "bom_later_is_text",
        b"data: a\n\n\xef\xbb\xbfdata: b\n\n",
        _events(("message", "a", "")),
        "",
        None,
    ),
    (
        "bom_in_value_kept",
        b"data: \xef\xbb\xbfx\n\n",
        _events(("message", "\ufeffx", "")),
        "",
        None,
    ),
    (
        "comments_ignored",
        b":comment\ndata: a\n: another\n:\n\n",
        _events(("message", "a", "")),
        "",
        None,
    ),
    ("comment_only_block", b": hi\n\n", [], "", None),
    ("data_without_colon", b"data\n\n", _events(("message", "", "")), "", None),
    ("data_colon_no_value", b"data:\n\n", _events(("message", "", "")), "", None),
    ("two_empty_data_lines", b"data\ndata\n\n", _events(("message", "\n", "")), "", None),
    ("one_leading_space_removed", b"data:  x\n\n", _events(("message", " x", "")), "", None),
    ("no_leading_space", b"data:x\n\n", _events(("message", "x", "")), "", None),
    ("tab_not_removed", b"data:\tx\n\n", _events(("message", "\tx", "")), "", None),
    ("only_spaces", b"data:   \n\n", _events(("message", "  ", "")), "", None),
    ("colon_in_value", b"data: a: b\n\n", _events(("message", "a: b", "")), "", None),
    ("unknown_field", b"foo: bar\nfoo\ndata: a\n\n", _events(("message", "a", "")), "", None),
    ("field_names_case_sensitive", b"Data: a\nDATA: b\nID: 1\nRetry: 5\n\n", [], "", None),
    ("field_name_trailing_space", b"data : a\n\n", [], "", None),
    ("field_name_leading_space", b" data: a\n\n", [], "", None),
    (
        "multiple_data_lines",
        b"data: a\ndata: b\ndata: c\n\n",
        _events(("message", "a\nb\nc", "")),
        "",
        None,
    ),
    (
        "only_one_trailing_lf_removed",
        b"data: a\ndata\n\n",
        _events(("message", "a\n", "")),
        "",
        None,
    ),
    (
        "two_events",
        b"data: 1\n\ndata: 2\n\n",
        _events(("message", "1", ""), ("message", "2", "")),
        "",
        None,
    ),
    ("event_type", b"event: add\ndata: 1\n\n", _events(("add", "1", "")), "", None),
    ("event_last_wins", b"event: a\nevent: b\ndata: 1\n\n", _events(("b", "1", "")), "", None),
    ("empty_event_type", b"event:\ndata: 1\n\n", _events(("message", "1", "")), "", None),
    ("event_without_colon", b"event\ndata: 1\n\n", _events(("message", "1", "")), "", None),
    (
        "event_type_reset_after_dispatch",
        b"event: add\ndata: 1\n\ndata: 2\n\n",
        _events(("add", "1", ""), ("message", "2", "")),
        "",
        None,
    ),
    (
        "event_type_reset_without_data",
        b"event: add\n\ndata: 2\n\n",
        _events(("message", "2", "")),
        "",
        None,
    ),
    (
        "event_type_kept_verbatim",
        b"event:  a b\xc2\x85\ndata\n\n",
        _events((" a b\x85", "", "")),
        "",
        None,
    ),
    ("id", b"id: 1\ndata: a\n\n", _events(("message", "a", "1")), "1", None),
    ("id_after_data", b"data: a\nid: 5\n\n", _events(("message", "a", "5")), "5", None),
    (
        "id_persists_across_events",
        b"id: 1\ndata: a\n\ndata: b\n\n",
        _events(("message", "a", "1"), ("message", "b", "1")),
        "1",
        None,
    ),
    (
        "id_without_value_resets",
        b"id: 1\ndata: a\n\nid\ndata: b\n\n",
        _events(("message", "a", "1"), ("message", "b", "")),
        "",
        None,
    ),
    (
        "id_colon_empty_resets",
        b"id: 1\ndata: a\n\nid:\ndata: b\n\n",
        _events(("message", "a", "1"), ("message", "b", "")),
        "",
        None,
    ),
    (
        "id_with_nul_ignored",
        b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
        _events(("message", "a", "1"), ("message", "b", "1")),
        "1",
        None,
    ),
    ("id_only_block_updates_last_event_id", b"id: 7\n\n", [], "7", None),
    ("id_in_unterminated_event_not_applied", b"id: 1\n\nid: 2\ndata: b\n", [], "1", None),
    ("id_keeps_second_space", b"id:  x\n\n", [], " x", None),
    ("id_non_ascii", "id: é€😀\n\n".encode(), [], "é€😀", None),
    ("retry", b"retry: 1000\n\n", [], "", 1000),
    ("retry_zero", b"retry: 0\n\n", [], "", 0),
    ("retry_leading_zeros", b"retry: 007\n\n", [], "", 7),
    ("retry_last_valid_wins", b"retry: 10\nretry: 20\n\n", [], "", 20),
    ("retry_fraction_ignored", b"retry: 1000\nretry: 1.5\n\n", [], "", 1000),
    ("retry_two_spaces_ignored", b"retry:  10\n\n", [], "", None),
    ("retry_trailing_space_ignored", b"retry: 10 \n\n", [], "", None),
    ("retry_empty_ignored", b"retry\nretry:\nretry: \n\n", [], "", None),
    ("retry_sign_ignored", b"retry: -1\nretry: +1\n\n", [], "", None),
    ("retry_unit_ignored", b"retry: 10ms\n\n", [], "", None),
    ("retry_non_ascii_digits_ignored", "retry: ١٢\nretry: ²\n\n".encode(), [], "", None),
    ("retry_without_blank_line_applies", b"retry: 5\n", [], "", 5),
    ("retry_unterminated_line_ignored", b"retry: 5", [], "", None),
    ("retry_with_data", b"retry: 5\ndata: a\n\n", _events(("message", "a", "")), "", 5),
    ("retry_big", b"retry: 99999999999999999999999\n\n", [], "", 99999999999999999999999),
    ("retry_many_leading_zeros", b"retry: " + b"0" * 1000 + b"5\n\n", [], "", 5),
    ("retry_absurdly_long_ignored", b"retry: 1\nretry: " + b"9" * 641 + b"\n\n", [], "", 1),
    ("no_dispatch_without_blank_line", b"data: a\n", [], "", None),
    (
        "unterminated_event_discarded",
        b"data: a\n\nevent: x\ndata: b",
        _events(("message", "a", "")),
        "",
        None,
    ),
    ("invalid_byte", b"data: a\xffb\n\n", _events(("message", "a\ufffdb", "")), "", None),
    ("truncated_sequence", b"data: \xe2\x82\n\n", _events(("message", "\ufffd", "")), "", None),
    (
        "truncated_then_valid",
        b"data: \xe2\x82\xe2\x82\xac\n\n",
        _events(("message", "\ufffd\u20ac", "")),
        "",
        None,
    ),
    ("overlong", b"data: \xc0\xaf\n\n", _events(("message", "\ufffd\ufffd", "")), "", None),
    ("surrogate", b"data: \xed\xa0\x80\n\n", _events(("message", "\ufffd" * 3, "")), "", None),
    (
        "f0_out_of_range",
        b"data: \xf0\x80\x80\n\n",
        _events(("message", "\ufffd" * 3, "")),
        "",
        None,
    ),
    (
        "above_u10ffff",
        b"data: \xf4\x90\x80\x80\n\n",
        _events(("message", "\ufffd" * 4, "")),
        "",
        None,
    ),
    ("lead_byte_before_lf", b"data: a\xf0\n\n", _events(("message", "a\ufffd", "")), "", None),
    ("multibyte", "data: é€😀\n\n".encode(), _events(("message", "é€😀", "")), "", None),
    ("nul_in_data", b"data: a\x00b\n\n", _events(("message", "a\x00b", "")), "", None),
    (
        "unicode_line_separators_are_text",
        "data: a\u2028b\u2029c\x85d\x0be\x0cf\x1cg\x1dh\x1ei\n\n".encode(),
        _events(("message", "a\u2028b\u2029c\x85d\x0be\x0cf\x1cg\x1dh\x1ei", "")),
        "",
        None,
    ),
]


@pytest.mark.parametrize(
    ("stream", "events", "last_event_id", "retry"),
    [pytest.param(*case[1:], id=case[0]) for case in SPEC_CASES],
)
def test_decoder_spec_case(
    stream: bytes, events: list[MessageEvent], last_event_id: str, retry: int | None
) -> None:
    _assert_decodes(stream, (events, last_event_id, retry))


def test_decoder_cr_at_chunk_end_then_lf_is_one_line_end() -> None:
    decoder = Decoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n") == []  # the rest of the CRLF, not an empty line
    assert decoder.feed(b"\n") == [MessageEvent("message", "a", "")]


def test_decoder_cr_at_chunk_end_dispatches_at_once() -> None:
    decoder = Decoder()
    assert decoder.feed(b"data: a\r\r") == [MessageEvent("message", "a", "")]
    assert decoder.feed(b"\ndata: b\n\n") == [MessageEvent("message", "b", "")]


def test_decoder_feed_returns_events_as_they_complete() -> None:
    decoder = Decoder()
    assert decoder.feed(b"id: 1\ndata: a\n") == []
    assert decoder.last_event_id == ""  # the id only counts once its event ends
    assert decoder.feed(b"\ndata: b\n\nda") == [
        MessageEvent("message", "a", "1"),
        MessageEvent("message", "b", "1"),
    ]
    assert decoder.last_event_id == "1"


def test_decoder_feed_empty_bytes_does_nothing() -> None:
    decoder = Decoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n") == [MessageEvent("message", "a", "")]


def test_decoder_accepts_bytes_like_chunks() -> None:
    decoder = Decoder()
    assert decoder.feed(bytes(bytearray(b"data: a\n\n"))) == [MessageEvent("message", "a", "")]


def test_decoder_close_keeps_last_event_id_and_retry() -> None:
    decoder = Decoder()
    decoder.feed(b"id: 3\nretry: 50\n\nid: 4\ndata: lost\n")
    decoder.close()
    assert (decoder.last_event_id, decoder.retry) == ("3", 50)


def test_decoder_close_discards_incomplete_character() -> None:
    decoder = Decoder()
    assert decoder.feed(b"data: a\n\n\xe2\x82") == [MessageEvent("message", "a", "")]
    decoder.close()


def test_decoder_feed_after_close_raises_runtime_error() -> None:
    decoder = Decoder()
    decoder.close()
    with pytest.raises(RuntimeError, match=r"after close\(\)") as info:
        decoder.feed(b"data: a\n\n")
    # Our misuse, not the peer's fault: not an SSEError.
    assert not isinstance(info.value, SSEError)


def test_decoder_close_twice_is_fine() -> None:
    decoder = Decoder()
    decoder.close()
    decoder.close()


def test_decoder_rejects_invalid_max_event_size() -> None:
    for bad in (0, -1, True, 1.5, "10"):
        with pytest.raises(ValueError, match="max_event_size"):
            Decoder(max_event_size=bad)  # type: ignore[arg-type]


def test_decoder_rejects_too_long_unterminated_line() -> None:
    stream = b"data: " + b"x" * 20
    for label, chunks in _chunkings(stream):
        if label.startswith("split"):
            continue
        with pytest.raises(EventTooLargeError, match="max_event_size=10"):
            _decode(chunks, max_event_size=10)


def test_decoder_rejects_too_long_complete_line_in_any_chunking() -> None:
    stream = b": " + b"x" * 20 + b"\n\n"
    for label, chunks in _chunkings(stream):
        events, error = _decode_until_error(chunks, max_event_size=10)
        assert (events, type(error)) == ([], EventTooLargeError), label


def test_decoder_rejects_event_whose_data_grows_too_large() -> None:
    # Each line is short, but the data accumulates: 6, 12, 18, then 18 + 11 > 20.
    stream = b"data: 12345\n" * 4 + b"\n"
    for label, chunks in _chunkings(stream):
        events, error = _decode_until_error(chunks, max_event_size=20)
        assert (events, type(error)) == ([], EventTooLargeError), label


def test_decoder_accepts_event_at_the_limit() -> None:
    stream = b"data: " + b"x" * 10 + b"\n\n"  # the line is 16 characters
    for label, chunks in _chunkings(stream):
        assert _decode(chunks, max_event_size=16) == (
            [MessageEvent("message", "x" * 10, "")],
            "",
            None,
        ), label
        _, error = _decode_until_error(chunks, max_event_size=15)
        assert isinstance(error, EventTooLargeError), label


def test_decoder_limit_counts_characters_not_bytes() -> None:
    stream = "data: éé\n\n".encode()  # 8 characters, 10 bytes
    assert _decode([stream], max_event_size=8)[0] == [MessageEvent("message", "éé", "")]


def test_decoder_limit_applies_per_event() -> None:
    stream = b"data: 12345\n\n" * 100
    events, _, _ = _decode([stream], max_event_size=11)
    assert len(events) == 100


def test_decoder_default_limit_is_one_mebibyte() -> None:
    assert DEFAULT_MAX_EVENT_SIZE == 1024 * 1024
    line = b"data: " + b"x" * (DEFAULT_MAX_EVENT_SIZE - 6)
    assert _decode([line + b"\n\n"])[0] == [MessageEvent("message", "x" * (len(line) - 6), "")]
    with pytest.raises(EventTooLargeError):
        _decode([line + b"x\n\n"])


def test_decoder_delivers_events_before_an_oversized_line() -> None:
    stream = b"id: 1\ndata: a\n\ndata: " + b"x" * 30 + b"\n\n"
    for label, chunks in _chunkings(stream):
        events, error = _decode_until_error(chunks, max_event_size=20)
        assert events == [MessageEvent("message", "a", "1")], label
        assert isinstance(error, EventTooLargeError), label


def test_decoder_raises_deferred_error_on_next_feed() -> None:
    decoder = Decoder(max_event_size=10)
    events = decoder.feed(b"data: a\n\n: " + b"x" * 20)
    assert events == [MessageEvent("message", "a", "")]
    with pytest.raises(EventTooLargeError):
        decoder.feed(b"\n")
    with pytest.raises(RuntimeError, match="ProtocolError"):
        decoder.feed(b"\n")


def test_decoder_raises_deferred_error_on_close() -> None:
    decoder = Decoder(max_event_size=10)
    decoder.feed(b"data: a\n\n: " + b"x" * 20)
    with pytest.raises(EventTooLargeError):
        decoder.close()
    decoder.close()  # the error was reported; closing again is harmless


def test_decoder_is_unusable_after_error() -> None:
    decoder = Decoder(max_event_size=10)
    with pytest.raises(EventTooLargeError):
        decoder.feed(b"data: " + b"x" * 20)
    with pytest.raises(RuntimeError, match="ProtocolError"):
        decoder.feed(b"\n\n")
    decoder.close()


def test_message_event_is_frozen() -> None:
    event = MessageEvent("message", "a", "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.data = "b"  # type: ignore[misc]


def test_protocol_exports_decoder_names() -> None:
    for name in ("DEFAULT_MAX_EVENT_SIZE", "Decoder", "MessageEvent"):
        assert name in trio_sse.protocol.__all__
        assert hasattr(trio_sse.protocol, name)


# -- property: decode(encode(events)) == events, under any chunking and line ends --

_NO_SURROGATES = st.characters(exclude_categories=["Cs"])
# Data may hold every line break the decoder must (or must not) split at.
_DATA = st.text(alphabet=st.one_of(_NO_SURROGATES, st.sampled_from("\r\n\u2028\x85")))
_FIELD = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00"))
_EVENTS = st.builds(
    ServerSentEvent,
    _DATA,
    event=st.none() | _FIELD,
    id=st.none() | _FIELD,
    retry=st.none() | st.integers(min_value=0, max_value=2**63),
)
_CR_OR_CRLF = re.compile(r"\r\n?")


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(st.tuples(st.none() | _DATA, _EVENTS), max_size=8),
    data=st.data(),
)
def test_decoder_round_trips_encoded_events(
    items: list[tuple[str | None, ServerSentEvent]], data: st.DataObject
) -> None:
    wire = b"".join(
        (b"" if comment is None else encode_comment(comment)) + event.encode()
        for comment, event in items
    )
    expected: list[MessageEvent] = []
    last_event_id = ""
    retry: int | None = None
    for _, event in items:
        if event.id is not None:
            last_event_id = event.id
        if event.retry is not None:
            retry = event.retry
        text = _CR_OR_CRLF.sub("\n", event.data)
        expected.append(MessageEvent(event.event or "message", text, last_event_id))

    # The encoder ends lines with LF; a server may use CR or CRLF instead, and may
    # send a BOM first. A CR followed by an LF terminator would fuse into one CRLF,
    # so that pair becomes CR, CRLF.
    rng = data.draw(st.randoms(use_true_random=False), label="line ends")
    lines = wire.split(b"\n")
    ends: list[bytes] = []
    for _ in lines[1:]:
        end = rng.choice((b"\n", b"\r", b"\r\n"))
        ends.append(b"\r\n" if end == b"\n" and ends and ends[-1] == b"\r" else end)
    bom = b"\xef\xbb\xbf" if data.draw(st.booleans(), label="bom") else b""
    wire = bom + b"".join(line + end for line, end in zip(lines, [*ends, b""], strict=True))

    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=20), label="cuts"))
    bounds = [0, *cuts, len(wire)]
    chunks = [wire[start:end] for start, end in itertools.pairwise(bounds)]

    assert _decode(chunks) == (expected, last_event_id, retry)


def test_decoder_seeded_with_last_event_id_keeps_it_across_blank_lines() -> None:
    # A reconnecting client seeds the decoder with the id it sent; a comment block or
    # a lone retry before the stream's first event must not reset it.
    decoder = Decoder(last_event_id="41")
    assert decoder.last_event_id == "41"
    events = decoder.feed(b"\xef\xbb\xbf: hello\n\nretry: 10\n\ndata: x\n\n")
    assert events == [MessageEvent("message", "x", "41")]
    assert decoder.last_event_id == "41"
    decoder.feed(b"id: 42\ndata: y\n\n")
    assert decoder.last_event_id == "42"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b"])
def test_decoder_refuses_a_seed_no_stream_could_have_set(bad: str) -> None:
    with pytest.raises(ValueError, match="may not contain"):
        Decoder(last_event_id=bad)
