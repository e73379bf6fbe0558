"""Fuzzing with hypothesis: the decoder under hostile bytes, the publish API under hostile requests.

* Decoder: any bytes, in any chunking, either decode or raise the one documented
  error (:class:`~trio_sse.EventTooLargeError`), and the outcome does not depend on
  the chunking. A hostile stream cannot make it hold more than its limit.
* Publish API: any topic, body and Content-Type give a 2xx or a 4xx with a JSON
  ``error``, never a 5xx; a refused request publishes nothing.
"""

from __future__ import annotations

import json
import tracemalloc
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sse import EventTooLargeError, MemoryBroker
from trio_sse.app import create_app
from trio_sse.protocol import Decoder, MessageEvent

# Pieces a hostile or broken stream is made of, so that random streams hit the
# parser's branches (fields, comments, every line end, BOMs, NUL, bad UTF-8) far
# more often than uniform bytes would.
_PIECES = st.sampled_from(
    [
        b"data",
        b"event",
        b"id",
        b"retry",
        b":",
        b": ",
        b" ",
        b"\r",
        b"\n",
        b"\r\n",
        b"\x00",
        b"\xef\xbb\xbf",
        b"\xe2\x80",  # a cut-off character
        b"\xff",
        b"\xc3\xa9",
        b"123",
        b"x",
        "\u2028".encode(),
    ]
)
hostile_streams = st.one_of(
    st.binary(max_size=2048),
    st.lists(_PIECES, max_size=300).map(b"".join),
)


def _decode(chunks: list[bytes], max_event_size: int) -> tuple[list[MessageEvent], bool, str]:
    """Feed ``chunks`` then close; return the events, whether it failed, the last event id."""
    decoder = Decoder(max_event_size=max_event_size)
    events: list[MessageEvent] = []
    try:
        for chunk in chunks:
            events += decoder.feed(chunk)
        decoder.close()
    except EventTooLargeError:
        return events, True, decoder.last_event_id
    return events, False, decoder.last_event_id


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@pytest.mark.slow
@settings(max_examples=1500, deadline=None)
@given(
    data=hostile_streams,
    cuts=st.lists(st.integers(min_value=0, max_value=4096), max_size=12),
    max_event_size=st.sampled_from([8, 64, 1024 * 1024]),
)
def test_decoder_outcome_is_the_same_in_any_chunking(
    data: bytes, cuts: list[int], max_event_size: int
) -> None:
    """Only the documented error escapes, and chunking changes nothing: the same
    events, the same failure or success, the same last event id."""
    whole = _decode([data], max_event_size)
    assert _decode(_split(data, cuts), max_event_size) == whole
    assert _decode([data[i : i + 1] for i in range(len(data))], max_event_size) == whole
    for event in whole[0]:
        assert "\r" not in event.last_event_id
        assert "\x00" not in event.last_event_id
        assert event.type
        assert "\n" not in event.type
        assert "\r" not in event.type


def _feed_all(decoder: Decoder, chunks: list[bytes]) -> None:
    for chunk in chunks:
        decoder.feed(chunk)


@pytest.mark.parametrize(
    "line",
    [b"x" * 64, b"data: " + b"y" * 58, b"\xff" * 64, b":" + b"c" * 63],
    ids=["junk", "data", "invalid-utf-8", "comment"],
)
def test_decoder_memory_stays_bounded_on_an_endless_line(line: bytes) -> None:
    """8 MiB with no line end, in 64 KiB chunks: the decoder refuses it once the line
    passes the limit, having held no more than a few times the limit and one chunk."""
    limit = 64 * 1024
    chunk = line * 1024  # 64 KiB
    decoder = Decoder(max_event_size=limit)
    tracemalloc.start()
    try:
        with pytest.raises(EventTooLargeError):
            _feed_all(decoder, [chunk] * 128)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A str of 64 Ki code points takes at most 256 KiB (4 bytes each), and a chunk
    # decodes to at most that again; the bound leaves room for the interpreter.
    assert peak < 2 * 1024 * 1024, f"peak {peak / 1024:.0f} KiB"


def test_decoder_memory_stays_bounded_on_an_endless_event() -> None:
    """1 Mi ``data`` lines and no blank line: refused at the limit, not accumulated."""
    limit = 64 * 1024
    decoder = Decoder(max_event_size=limit)
    tracemalloc.start()
    try:
        with pytest.raises(EventTooLargeError):
            _feed_all(decoder, [b"data: a\n" * 1024] * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024, f"peak {peak / 1024:.0f} KiB"


# --- The publish API ---------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_fields = st.sampled_from(["data", "event", "id", "retry", "extra", ""])
publish_bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100).map(str.encode),
    _json_values.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(_fields, _json_values, max_size=5).map(lambda obj: json.dumps(obj).encode()),
    st.dictionaries(st.sampled_from(["data", "event", "id"]), st.text(max_size=30), min_size=1).map(
        lambda obj: json.dumps(obj).encode()
    ),
)
topics = st.one_of(
    st.sampled_from(["news", "a.b-c_d~e", "x" * 128, "x" * 129, "", "..", "a b"]),
    st.text(max_size=40),
)
content_types = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "multipart/form-data",
    ]
)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=topics, body=publish_bodies, content_type=content_types)
async def test_publish_never_fails_with_5xx_and_a_refusal_publishes_nothing(
    topic: str, body: bytes, content_type: str
) -> None:
    broker = MemoryBroker()
    app = create_app(broker=broker, max_body_size=256)
    client = app.test_client()
    path = "/events/" + urllib.parse.quote(topic, safe="")
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post(path, data=body, headers=headers)
    published = broker.statistics().published
    assert response.status_code < 500
    if response.status_code == 202:
        assert published == 1
        event_id = (await response.get_json())["id"]
        assert isinstance(event_id, str)
        assert event_id
    else:
        assert 400 <= response.status_code < 500
        assert published == 0
        error = (await response.get_json())["error"]
        assert isinstance(error, str)
        assert error
    await broker.aclose()
