"""Authorization decisions (trio_sse.web._auth): static publish token, HS256 and RS256 JWTs."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from trio_sse.web import Action, AuthConfig, AuthError, Authorizer, Credentials, Grant

SECRET = "s" * 32
PUBLISH_TOKEN = "p" * 24


def hs256(claims: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def bearer(token: str) -> Credentials:
    return Credentials(authorization=f"Bearer {token}")


def refused(
    authorizer: Authorizer, action: Action, topic: str, credentials: Credentials
) -> tuple[int, str]:
    with pytest.raises(AuthError) as caught:
        authorizer.authorize(action, topic, credentials)
    return caught.value.status, str(caught.value)


def test_nothing_configured_is_open() -> None:
    authorizer = Authorizer(AuthConfig())
    assert authorizer.authorize(Action.PUBLISH, "t", Credentials()) == Grant()
    assert authorizer.authorize(Action.SUBSCRIBE, "t", Credentials()) == Grant()


def test_publish_token() -> None:
    authorizer = Authorizer(AuthConfig(publish_token=PUBLISH_TOKEN))
    assert authorizer.authorize(Action.PUBLISH, "t", bearer(PUBLISH_TOKEN)) == Grant()
    assert authorizer.authorize(Action.PUBLISH, "t", Credentials(query=PUBLISH_TOKEN)) == Grant()
    assert refused(authorizer, Action.PUBLISH, "t", Credentials())[0] == 401
    assert refused(authorizer, Action.PUBLISH, "t", bearer("x" * 24)) == (401, "invalid token")
    # Streams stay public with only a publish token.
    assert authorizer.authorize(Action.SUBSCRIBE, "t", Credentials()) == Grant()


def test_a_cookie_never_publishes() -> None:
    """A cross-site form would carry the cookie (CSRF); only a header or query token publishes."""
    authorizer = Authorizer(AuthConfig(publish_token=PUBLISH_TOKEN))
    assert refused(authorizer, Action.PUBLISH, "t", Credentials(cookie=PUBLISH_TOKEN))[0] == 401


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer   ", "token"])
def test_a_malformed_authorization_header_is_401(header: str) -> None:
    authorizer = Authorizer(AuthConfig(publish_token=PUBLISH_TOKEN))
    status, message = refused(authorizer, Action.PUBLISH, "t", Credentials(authorization=header))
    assert (status, message) == (401, "the Authorization header must be 'Bearer <token>'")


def test_jwt_topic_claims() -> None:
    authorizer = Authorizer(AuthConfig(jwt_key=SECRET, subscribe_requires_token=True))
    token = hs256({"trio_sse": {"publish": ["chat.*"], "subscribe": ["news", "chat.*"]}})
    assert authorizer.authorize(Action.PUBLISH, "chat.room1", bearer(token)) == Grant()
    assert authorizer.authorize(Action.SUBSCRIBE, "news", bearer(token)) == Grant()
    assert refused(authorizer, Action.PUBLISH, "news", bearer(token)) == (
        403,
        "the token does not allow publish on topic 'news'",
    )
    assert refused(authorizer, Action.SUBSCRIBE, "newsroom", bearer(token))[0] == 403
    everything = hs256({"trio_sse": {"subscribe": ["*"]}})
    assert authorizer.authorize(Action.SUBSCRIBE, "any", bearer(everything)) == Grant()
    assert refused(authorizer, Action.PUBLISH, "any", bearer(everything))[0] == 403


@pytest.mark.parametrize(
    "claims",
    [{}, {"trio_sse": None}, {"trio_sse": {"subscribe": "news"}}, {"trio_sse": {"subscribe": [1]}}],
)
def test_jwt_without_a_usable_claim_is_403(claims: dict[str, Any]) -> None:
    authorizer = Authorizer(AuthConfig(jwt_key=SECRET))
    assert refused(authorizer, Action.SUBSCRIBE, "news", bearer(hs256(claims)))[0] == 403


def test_subscribe_token_sources_cookie_and_query() -> None:
    authorizer = Authorizer(AuthConfig(jwt_key=SECRET, subscribe_requires_token=True))
    token = hs256({"trio_sse": {"subscribe": ["news"]}})
    assert authorizer.authorize(Action.SUBSCRIBE, "news", Credentials(cookie=token)) == Grant()
    assert authorizer.authorize(Action.SUBSCRIBE, "news", Credentials(query=token)) == Grant()
    assert refused(authorizer, Action.SUBSCRIBE, "news", Credentials()) == (
        401,
        "subscribe needs a bearer token",
    )
    # The header wins: a bad header is not rescued by a good cookie.
    both = Credentials(authorization="Bearer nope", cookie=token)
    assert refused(authorizer, Action.SUBSCRIBE, "news", both)[0] == 401


def test_anonymous_subscribers_allowed_but_a_bad_token_is_still_refused() -> None:
    authorizer = Authorizer(AuthConfig(jwt_key=SECRET))
    assert authorizer.authorize(Action.SUBSCRIBE, "news", Credentials()) == Grant()
    assert refused(authorizer, Action.SUBSCRIBE, "news", bearer("garbage"))[0] == 401


def test_jwt_expiry() -> None:
    authorizer = Authorizer(AuthConfig(jwt_key=SECRET))
    exp = int(time.time()) + 60
    token = hs256({"trio_sse": {"subscribe": ["news"]}, "exp": exp})
    assert authorizer.authorize(Action.SUBSCRIBE, "news", bearer(token)) == Grant(expires_at=exp)
    expired = hs256({"trio_sse": {"subscribe": ["news"]}, "exp": int(time.time()) - 10})
    assert refused(authorizer, Action.SUBSCRIBE, "news", bearer(expired)) == (
        401,
        "the token has expired",
    )


def test_jwt_signed_with_another_key_or_alg_none_is_401() -> None:
    authorizer = Authorizer(AuthConfig(jwt_key=SECRET))
    claims = {"trio_sse": {"publish": ["*"]}}
    assert refused(authorizer, Action.PUBLISH, "t", bearer(hs256(claims, "x" * 32)))[0] == 401
    unsigned = jwt.encode(claims, "", algorithm="none")
    assert refused(authorizer, Action.PUBLISH, "t", bearer(unsigned))[0] == 401


def test_rs256() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    authorizer = Authorizer(AuthConfig(jwt_key=public_pem, jwt_algorithms=("RS256",)))
    claims = {"trio_sse": {"publish": ["news"]}}
    token = jwt.encode(claims, private, algorithm="RS256")
    assert authorizer.authorize(Action.PUBLISH, "news", bearer(token)) == Grant()
    # Key confusion: an HS256 token "signed" with the public key must not pass.
    assert refused(authorizer, Action.PUBLISH, "news", bearer(hs256(claims, SECRET)))[0] == 401


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"publish_token": "short"}, "at least 16"),
        ({"jwt_key": SECRET, "jwt_algorithms": ("none",)}, "jwt_algorithms"),
        ({"jwt_key": SECRET, "jwt_algorithms": ()}, "jwt_algorithms"),
        ({"subscribe_requires_token": True}, "needs jwt_key"),
    ],
)
def test_bad_config_is_refused(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        AuthConfig(**options)
