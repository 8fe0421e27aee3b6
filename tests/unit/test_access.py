"""The key check every route shares: where a key may be offered, and the throttle."""

from __future__ import annotations

from starlette.requests import Request

from whisperwire.access import KeyCheck
from whisperwire.limits import AuthThrottle


def request(query: str = "", authorization: str | None = None, host: str = "10.0.0.1") -> Request:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "query_string": query.encode(),
        "headers": headers,
        "client": (host, 5000),
    }
    return Request(scope)


def test_no_keys_lets_everyone_in() -> None:
    assert KeyCheck([])(request()) is None


def test_a_key_is_taken_from_the_query_or_a_bearer_or_token_header() -> None:
    check = KeyCheck(["s3cret"])
    assert check(request("token=s3cret")) is None
    assert check(request(authorization="Bearer s3cret")) is None
    assert check(request(authorization="token s3cret")) is None


def test_wrong_empty_prefix_and_extended_keys_are_refused() -> None:
    check = KeyCheck(["s3cret"])
    for offered in ("", "s3cre", "s3cret1", "S3CRET"):
        denied = check(request(authorization=f"Bearer {offered}"))
        assert denied is not None and not denied.throttled
    denied = check(request(authorization="Basic s3cret"))
    assert denied is not None and not denied.throttled


def test_failures_throttle_the_address_even_with_the_right_key_then_expire() -> None:
    now = [0.0]
    check = KeyCheck(["k"], AuthThrottle(max_failures=3, window_s=60.0), lambda: now[0])
    for _ in range(3):
        assert check(request("token=bad")) is not None
    denied = check(request("token=k"))
    assert denied is not None and denied.throttled and denied.retry_after == 60.0
    assert "10.0.0.1" in denied.message and "retry in 60 s" in denied.message
    assert check(request("token=k", host="10.0.0.2")) is None  # another address
    now[0] = 60.0
    assert check(request("token=k")) is None
