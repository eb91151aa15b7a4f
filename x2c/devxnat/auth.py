"""Who is asking: HTTP Basic credentials or a ``JSESSIONID`` cookie, as XNAT accepts both."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading

from starlette.requests import Request

from x2c.devxnat.store import Store, User


class Sessions:
    """Live JSESSION tokens (in memory: a restart logs everyone out, as XNAT's does)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}

    def open(self, user: str) -> str:
        """A new session token for ``user``."""
        token = secrets.token_hex(16).upper()
        with self._lock:
            self._tokens[token] = user
        return token

    def close(self, token: str) -> None:
        """End a session; unknown tokens are ignored."""
        with self._lock:
            self._tokens.pop(token, None)

    def user_of(self, token: str) -> str | None:
        """The user a token belongs to, or None."""
        with self._lock:
            return self._tokens.get(token)


def check_password(store: Store, name: str, password: str) -> User | None:
    """The user if ``password`` is right, compared in constant time; None otherwise."""
    user = store.users().get(name)
    if user is None:
        return None
    if hmac.compare_digest(user.password.encode(), password.encode()):
        return user
    return None


class BadCredentials(Exception):
    """Raised when a request carries credentials and they are wrong (answered with 401)."""


def authenticate(request: Request, store: Store, sessions: Sessions) -> User | None:
    """The requesting user, None when the request carries no credentials at all.

    Basic credentials win over the cookie; wrong Basic credentials raise
    :class:`BadCredentials` even when a valid cookie is present.
    """
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise BadCredentials("malformed Basic credentials") from exc
        name, _, password = decoded.partition(":")
        user = check_password(store, name, password)
        if user is None:
            raise BadCredentials(f"wrong password or unknown user {name!r}")
        return user
    token = request.cookies.get("JSESSIONID")
    if token:
        owner = sessions.user_of(token)
        if owner is not None:
            return store.users().get(owner)
    return None
