"""Who may publish to and subscribe to which topic: bearer tokens and JWTs.

Two kinds of credential, either or both configured in :class:`AuthConfig`:

* **A static publish token** (``publish_token``): whoever presents it may publish
  to every topic. For a back end that is the only publisher.
* **JWTs** (``jwt_key``), HS256 with a shared secret or RS256 with the issuer's
  public key, checked by PyJWT (RS256 needs ``cryptography``: ``trio-sse[auth]``).
  What a token allows is in its ``trio_sse`` claim, in the spirit of Mercure's
  ``mercure.publish`` / ``mercure.subscribe``::

      {"trio_sse": {"publish": ["chat.*"], "subscribe": ["chat.*", "news"]}, "exp": ...}

  A pattern is a topic name, ``*`` for every topic, or a prefix ending in ``*``.
  A stream opened with a token that has ``exp`` ends when the token expires. The
  time claims ``exp``, ``nbf`` and ``iat``, when present, must be numbers of seconds
  from 0 to :data:`MAX_NUMERIC_DATE` (the end of the year 9999); anything else (a
  string, ``true``, ``10**400``) makes the token invalid (401).

The key must suit the algorithms, checked when the :class:`AuthConfig` is built: a
secret for HS*, an RSA public key (PEM or OpenSSH) for RS*, never both kinds at once,
never a private key.

Where a token comes from, first found wins: the ``Authorization: Bearer`` header,
then (subscribing only) the cookie ``cookie_name``, then the query parameter
``query_parameter``. Browsers cannot set headers on an ``EventSource``, hence the
cookie and the query parameter. A cookie is never accepted for publishing: a
cross-site form could POST with it (CSRF), while a header or query token must be
known to the page that sends it. Query parameters end up in access logs; prefer the
cookie where you can.

With nothing configured, everything is open (the default, for a local demo).
Errors: :class:`AuthError` with ``status`` 401 (no token where one is required, or
a bad one: malformed, badly signed, expired) or 403 (a valid token that does not
cover the topic).
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import jwt

from ..broker import MAX_SUBJECT_LENGTH
from ..errors import AuthError

__all__ = [
    "CLAIM",
    "DEFAULT_COOKIE_NAME",
    "DEFAULT_QUERY_PARAMETER",
    "JWT_ALGORITHMS",
    "MAX_NUMERIC_DATE",
    "Action",
    "AuthConfig",
    "AuthError",
    "Authorizer",
    "Credentials",
    "Grant",
    "jwt_key_family",
]

CLAIM: Final = "trio_sse"
DEFAULT_COOKIE_NAME: Final = "trio_sse_token"
DEFAULT_QUERY_PARAMETER: Final = "access_token"
JWT_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512", "RS256", "RS384", "RS512"})
# The last second of the year 9999: the largest ``exp``, ``nbf`` or ``iat`` accepted.
MAX_NUMERIC_DATE: Final = 253_402_300_799
_TIME_CLAIMS: Final = ("exp", "nbf", "iat")


class Action(enum.Enum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Authorization settings for :func:`trio_sse.app.create_app`; see the module docs.

    Args:
        publish_token: A static bearer token that may publish to every topic.
        jwt_key: The HS* secret or the RS* public key (PEM) that verifies JWTs.
        jwt_algorithms: The algorithms accepted; never ``none``.
        subscribe_requires_token: Refuse anonymous subscribers (401). Off by
            default: with only a publish token, streams stay public.
        cookie_name: The cookie a browser's ``EventSource`` carries its token in.
        query_parameter: The query parameter a token may come in.

    Raises:
        ValueError: A setting is out of range, or ``jwt_key`` does not suit
            ``jwt_algorithms`` (a PEM key with HS*, a secret or a private key with
            RS*, HS* and RS* together).
    """

    publish_token: str | None = None
    jwt_key: str | bytes | None = None
    jwt_algorithms: Sequence[str] = ("HS256",)
    subscribe_requires_token: bool = False
    cookie_name: str = DEFAULT_COOKIE_NAME
    query_parameter: str = DEFAULT_QUERY_PARAMETER

    def __post_init__(self) -> None:
        if self.publish_token is not None and len(self.publish_token) < 16:
            raise ValueError("publish_token must be at least 16 characters")
        unknown = set(self.jwt_algorithms) - JWT_ALGORITHMS
        if unknown or not self.jwt_algorithms:
            raise ValueError(
                f"jwt_algorithms must be some of {', '.join(sorted(JWT_ALGORITHMS))}; "
                f"got {list(self.jwt_algorithms)!r}"
            )
        if self.subscribe_requires_token and self.jwt_key is None:
            raise ValueError("subscribe_requires_token needs jwt_key: subscribers present JWTs")
        if self.jwt_key is not None:
            _check_jwt_key(self.jwt_key, self.jwt_algorithms)

    @property
    def is_open(self) -> bool:
        """Whether nothing is protected (no token and no JWT key configured)."""
        return self.publish_token is None and self.jwt_key is None


def jwt_key_family(key: str | bytes) -> str:
    """``"RS"`` for a PEM or OpenSSH public key, ``"HS"`` for anything else (a secret)."""
    head = (key.encode() if isinstance(key, str) else key).lstrip()
    return "RS" if head.startswith((b"-----BEGIN", b"ssh-rsa ")) else "HS"


def _check_jwt_key(key: str | bytes, algorithms: Sequence[str]) -> None:
    """Refuse a key that cannot verify tokens of ``algorithms``: PyJWT would refuse
    every token (a PEM key as an HS* secret, a secret as an RS* key), or fail on each
    one (an RSA private key has no ``verify``)."""
    families = sorted({algorithm[:2] for algorithm in algorithms})
    if len(families) > 1:
        raise ValueError(
            f"jwt_algorithms mixes {' and '.join(f + '*' for f in families)}: one key cannot "
            "verify both kinds"
        )
    for algorithm in algorithms:
        try:
            prepared = jwt.get_algorithm_by_name(algorithm).prepare_key(key)
        except NotImplementedError:
            raise ValueError(
                f"{algorithm} needs the cryptography package (pip install 'trio-sse[auth]')"
            ) from None
        except (jwt.InvalidKeyError, ValueError, TypeError) as exc:
            found = "a PEM public key" if jwt_key_family(key) == "RS" else "not a PEM public key"
            raise ValueError(f"jwt_key does not suit {algorithm}: it is {found} ({exc})") from None
        if algorithm.startswith("RS"):
            from cryptography.hazmat.primitives.asymmetric.rsa import (  # noqa: PLC0415
                RSAPrivateKey,  # cryptography is there: prepare_key needed it
            )

            if isinstance(prepared, RSAPrivateKey):
                raise ValueError(
                    "jwt_key is an RSA private key; give its public key: the server only "
                    "verifies tokens, and must not hold the key that signs them"
                )


@dataclass(frozen=True, slots=True)
class Credentials:
    """The token candidates a request carries."""

    authorization: str | None = None  # the Authorization header, whole
    cookie: str | None = None
    query: str | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """A permission given.

    Attributes:
        expires_at: The token's ``exp`` (Unix time), if it has one.
        subject: The token's ``sub``, if it has one: who is present on the stream.
    """

    expires_at: float | None = None
    subject: str | None = None


def _check_time_claims(claims: Mapping[str, Any]) -> int | float | None:
    """Refuse registered time claims that are not NumericDates in range; return ``exp``.

    PyJWT takes anything ``int()`` accepts: a string ``exp`` passed its check and then
    never expired the stream, and ``10**400`` passed and then overflowed a float.
    """
    for name in _TIME_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 <= value <= MAX_NUMERIC_DATE  # NaN fails this too
        ):
            raise AuthError(
                401,
                f'invalid token: the "{name}" claim must be a number of seconds since 1970 '
                f"(0 to {MAX_NUMERIC_DATE}), got {value!r:.40}",
            )
    exp: int | float | None = claims.get("exp")
    return exp


def _subject_of(claims: Mapping[str, Any]) -> str | None:
    """The ``sub`` claim, refused unless it is a name presence can list."""
    subject = claims.get("sub")
    if subject is None:
        return None
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_LENGTH:
        raise AuthError(
            401,
            f'invalid token: the "sub" claim must be a string of 1 to {MAX_SUBJECT_LENGTH} '
            f"characters, got {subject!r:.40}",
        )
    return subject


def _matches(pattern: object, topic: str) -> bool:
    if not isinstance(pattern, str):
        return False
    if pattern.endswith("*"):
        return topic.startswith(pattern[:-1])
    return pattern == topic


class Authorizer:
    """Decides requests by an :class:`AuthConfig`."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self._publish_token = (
            config.publish_token.encode() if config.publish_token is not None else None
        )

    def authorize(self, action: Action, topic: str, credentials: Credentials) -> Grant:
        """Return the :class:`Grant` for ``action`` on ``topic``, or raise :class:`AuthError`."""
        return self.authorize_all(action, (topic,), credentials)

    def authorize_all(
        self, action: Action, topics: Sequence[str], credentials: Credentials
    ) -> Grant:
        """Return the :class:`Grant` for ``action`` on every one of ``topics``.

        The token is checked once, then each topic against its claims.

        Raises:
            AuthError: 401 as :meth:`authorize`; 403 naming the first topic the token
                does not allow.
        """
        config = self.config
        if config.is_open:
            return Grant()
        token = self._token_of(action, credentials)
        if token is None:
            if action is Action.SUBSCRIBE and not config.subscribe_requires_token:
                return Grant()
            raise AuthError(401, f"{action.value} needs a bearer token")
        if self._publish_token is not None and hmac.compare_digest(
            token.encode(), self._publish_token
        ):
            if action is Action.PUBLISH:
                return Grant()
            raise AuthError(403, "the publish token does not allow subscribing")
        if self.config.jwt_key is None:
            raise AuthError(401, "invalid token")
        claims = self._decode(token)
        patterns = claims.get(CLAIM, {})
        allowed = patterns.get(action.value, []) if isinstance(patterns, Mapping) else []
        for topic in topics:
            if not isinstance(allowed, list) or not any(_matches(p, topic) for p in allowed):
                raise AuthError(403, f"the token does not allow {action.value} on topic {topic!r}")
        exp = _check_time_claims(claims)
        return Grant(expires_at=None if exp is None else float(exp), subject=_subject_of(claims))

    def _token_of(self, action: Action, credentials: Credentials) -> str | None:
        if credentials.authorization is not None:
            scheme, _, token = credentials.authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError(401, "the Authorization header must be 'Bearer <token>'")
            return token.strip()
        if action is Action.SUBSCRIBE and credentials.cookie:
            return credentials.cookie
        return credentials.query or None

    def _decode(self, token: str) -> Mapping[str, Any]:
        key = self.config.jwt_key
        assert key is not None
        try:
            claims: Mapping[str, Any] = jwt.decode(
                token, key, algorithms=list(self.config.jwt_algorithms)
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "the token has expired") from None
        except jwt.PyJWTError as exc:  # malformed, bad signature, wrong key type, ...
            raise AuthError(401, f"invalid token: {exc}") from None
        return claims
