"""Cross-origin access (CORS) for a Quart app: which other origins may read its responses.

A browser lets a page read a response from another origin (an ``EventSource`` stream,
a ``fetch`` answer) only if the response names the page's origin, or ``*``, in
``Access-Control-Allow-Origin``. Before a ``POST`` with a JSON body it first sends a
preflight ``OPTIONS`` request and goes ahead only if the answer allows the method and
headers. A server that sends no CORS headers is readable from its own origin only.

Rules this module follows (the Fetch standard, "CORS protocol"):

* An allowed ``Origin`` is echoed back, with ``Vary: Origin`` so that a cache never
  serves one origin's answer to another. A disallowed one gets no CORS header at all,
  and the browser blocks the response.
* ``*`` allows every origin, but only without credentials: browsers refuse
  ``Access-Control-Allow-Credentials: true`` next to ``*``, so that combination is
  rejected when the policy is built rather than sent.
* ``null`` (the origin of sandboxed frames and ``file:`` pages) cannot be allowed: any
  page can make itself ``null``, so allowing it would allow everyone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

import quart

__all__ = ["CORS_MAX_AGE", "CorsPolicy", "enable_cors"]

# How long a browser may reuse a preflight answer. Chromium caps it at 2 hours; 10
# minutes keeps a policy change quick to take effect while sparing most preflights.
CORS_MAX_AGE: Final = 600

# What a cross-origin page may send: JSON bodies (which make a POST "non-simple"), a
# resume id for streams opened by fetch-based clients, bearer tokens, and the key that
# makes a retried publish safe.
_ALLOWED_HEADERS: Final = "Content-Type, Last-Event-ID, Authorization, Idempotency-Key"

# scheme://host[:port], nothing after: an origin is never a URL with a path.
_ORIGIN: Final = re.compile(r"[a-z][a-z0-9+.-]*://(\[[0-9a-f:.]+\]|[^\s/?#@:\[\]]+)(:\d{1,5})?")


def _validate_origin(origin: str) -> str:
    if not isinstance(origin, str) or _ORIGIN.fullmatch(origin) is None:
        raise ValueError(
            f"a CORS origin must look like 'https://example.com' or 'http://host:8080' "
            f"(lower case, no path or trailing slash), got {origin!r:.100}"
        )
    return origin


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """Which origins may read responses, and whether with credentials.

    Build it with :meth:`allowing`; attach it to an app with :func:`enable_cors`.

    Attributes:
        origins: The allowed origins, or ``"*"`` for any.
        allow_credentials: Whether pages may send cookies or HTTP auth
            (``new EventSource(url, {withCredentials: true})``).
    """

    origins: frozenset[str] | Literal["*"]
    allow_credentials: bool = False

    def __post_init__(self) -> None:
        if self.origins == "*":
            if self.allow_credentials:
                raise ValueError(
                    "CORS credentials cannot be allowed for every origin ('*'): browsers "
                    "refuse that combination; list the origins instead"
                )
            return
        if not isinstance(self.origins, frozenset) or not self.origins:
            raise ValueError("CORS origins must be '*' or a non-empty set of origins")
        for origin in self.origins:
            _validate_origin(origin)

    @classmethod
    def allowing(
        cls, origins: Iterable[str] | Literal["*"], *, allow_credentials: bool = False
    ) -> CorsPolicy:
        """Build a policy from a list of origins, where ``"*"`` in the list means any.

        Raises:
            ValueError: An origin is malformed (a path, a trailing slash, upper case,
                ``null``), the list is empty, or credentials are combined with ``*``.
        """
        if isinstance(origins, str):
            origins = [origins]
        listed = list(origins)
        if "*" in listed:
            if len(listed) > 1:
                raise ValueError("CORS origin '*' already allows every origin; list it alone")
            return cls("*", allow_credentials=allow_credentials)
        return cls(frozenset(listed), allow_credentials=allow_credentials)

    def allows(self, origin: str) -> bool:
        """Whether a page from ``origin`` may read responses."""
        return self.origins == "*" or origin in self.origins

    def headers_for(self, origin: str | None, *, is_preflight: bool) -> dict[str, str]:
        """The CORS headers to add to a response to a request from ``origin``.

        Args:
            origin: The request's ``Origin`` header, if any.
            is_preflight: Whether the request is a preflight (``OPTIONS`` with
                ``Access-Control-Request-Method``).

        Returns:
            No ``Access-Control-*`` header for a disallowed or missing origin: the
            browser then blocks the response.
        """
        headers: dict[str, str] = {}
        if self.origins == "*":
            if origin is None:
                return headers
            headers["Access-Control-Allow-Origin"] = "*"
        else:
            # The answer depends on Origin even when it is refused.
            headers["Vary"] = "Origin"
            if origin is None or origin not in self.origins:
                return headers
            headers["Access-Control-Allow-Origin"] = origin
            if self.allow_credentials:
                headers["Access-Control-Allow-Credentials"] = "true"
        if is_preflight:
            headers["Access-Control-Allow-Methods"] = "GET, POST"
            headers["Access-Control-Allow-Headers"] = _ALLOWED_HEADERS
            headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE)
        return headers


def enable_cors(app: quart.Quart, policy: CorsPolicy) -> None:
    """Add ``policy``'s headers to every response of ``app``, preflights included.

    Quart answers ``OPTIONS`` for every route by itself (with ``Allow``); this adds
    the preflight headers to those answers, and the allow-origin headers to every
    other response, error answers included, so a page can read why it was refused.
    """

    @app.after_request
    async def add_cors_headers(response: quart.Response) -> quart.Response:
        request = quart.request
        is_preflight = (
            request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        )
        for name, value in policy.headers_for(
            request.headers.get("Origin"), is_preflight=is_preflight
        ).items():
            if name == "Vary":
                response.vary.add("Origin")
            else:
                response.headers[name] = value
        return response
