"""Connecting to XNAT: where the credentials come from, the login check, and the retrying
request every other ``x2c.xnat`` module goes through.

pyxnat 1.6 answers a wrong password with empty listings rather than an error (pyxnat issue
162), so :func:`connect` asks ``/data/JSESSION`` first and fails with one clear line naming
the server and user. The pyxnat ``Interface`` holds the HTTP session (Basic auth, then the
JSESSIONID cookie); x2c never hands pyxnat objects out.
"""

from __future__ import annotations

import json
import logging
import netrc
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from pydantic import SecretStr, ValidationError
from pyxnat import Interface

from x2c.config import XnatConfig
from x2c.errors import ConfigError, XnatAuthError, XnatError, XnatNotFoundError
from x2c.xnat.failures import error_for_exception, error_for_status, is_transient

logger = logging.getLogger(__name__)

Body = bytes | Iterable[bytes] | None


def load_xnat_config(
    cfg_path: Path | str | None = None,
    *,
    env: Mapping[str, str],
    netrc_path: Path | str | None = None,
    verify: bool | str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
) -> XnatConfig:
    """Build an :class:`XnatConfig` at the edge (CLI, flow entry point) from, in order:

    1. ``cfg_path``, a pyxnat ``.cfg`` JSON file (``server``, ``user``, ``password``, optional
       ``verify``), the seed's ``--config``;
    2. ``XNAT_HOST`` / ``XNAT_USER`` / ``XNAT_PASS`` in ``env`` (the caller passes
       ``os.environ``; nothing inside x2c reads it);
    3. ``netrc_path`` (default ``~/.netrc``) for the user and password, machine = the URL's host.

    ``verify``, ``timeout`` and ``retries``, when given, set those :class:`XnatConfig` fields
    (``verify`` wins over the config file's). Raises
    :class:`ConfigError` naming the missing piece and where to put it.
    """
    server: str | None = None
    user: str | None = None
    password: str | None = None
    fields: dict[str, Any] = {}
    if cfg_path is not None:
        path = Path(cfg_path).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read XNAT config file {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ConfigError(
                f"XNAT config file {path} is not JSON ({exc}); want "
                '{"server": "https://...", "user": "...", "password": "..."}'
            ) from exc
        if not isinstance(data, dict):
            raise ConfigError(f"XNAT config file {path} must hold a JSON object")
        server, user, password = data.get("server"), data.get("user"), data.get("password")
        if "verify" in data:
            fields["verify"] = data["verify"]
        if not server:
            raise ConfigError(f"XNAT config file {path} has no 'server'")
    server = server or env.get("XNAT_HOST") or None
    if not server:
        raise ConfigError(
            "no XNAT server given: pass a config file (--config), or set XNAT_HOST "
            "(with XNAT_USER/XNAT_PASS or a ~/.netrc entry)"
        )
    user = user or env.get("XNAT_USER") or None
    password = password or env.get("XNAT_PASS") or None
    host = urlsplit(server).hostname or ""
    if not (user and password):
        n_user, n_password = _netrc_login(host, netrc_path)
        user = user or n_user
        password = password or n_password
    if not user or not password:
        missing = "user" if not user else "password"
        raise ConfigError(
            f"no XNAT {missing} for {_redact(server)}: put it in the config file, in "
            f"XNAT_USER/XNAT_PASS, or in ~/.netrc as 'machine {host} login ... password ...'"
        )
    given = {"verify": verify, "timeout": timeout, "retries": retries}
    fields.update({k: v for k, v in given.items() if v is not None})
    try:
        return XnatConfig(url=server, user=user, password=SecretStr(password), **fields)
    except ValidationError as exc:
        raise ConfigError(f"invalid XNAT configuration for {_redact(server)}: {exc}") from exc


def _netrc_login(host: str, netrc_path: Path | str | None) -> tuple[str | None, str | None]:
    path = Path(netrc_path).expanduser() if netrc_path is not None else Path.home() / ".netrc"
    if not host or not path.is_file():
        return None, None
    try:
        auth = netrc.netrc(str(path)).authenticators(host)
    except (netrc.NetrcParseError, OSError) as exc:
        # NetrcParseError's text quotes the offending token, which may be a password.
        raise ConfigError(f"cannot parse {path}: fix its syntax near line {_line(exc)}") from exc
    if auth is None:
        return None, None
    login, _account, password = auth
    return login or None, password or None


def _line(exc: BaseException) -> str:
    return str(getattr(exc, "lineno", "?"))


def _redact(url: str) -> str:
    """The URL without any ``user:password@`` part, for messages and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def path_of(*segments: str) -> str:
    """An XNAT path from raw segments, each URL-quoted so that hostile labels (quotes, spaces,
    ``$()``, ``../``, ``/``) stay one segment: ``path_of("data", "projects", p)``."""
    for segment in segments:
        if segment in ("", ".", ".."):
            raise XnatError(
                f"refusing the XNAT name {segment!r} in {'/'.join(segments)!r}: names may not "
                "be empty, '.' or '..'"
            )
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


class XnatSession:
    """A logged-in connection to one XNAT server; make it with :func:`connect`.

    Every request goes through :meth:`request`, which retries transient failures with capped
    exponential backoff and translates the rest. ``requests_sent`` counts HTTP attempts made
    (retries included), for reporting and tests. Safe to share between threads for requests;
    close it once with :meth:`close` (or use it as a context manager).
    """

    def __init__(self, config: XnatConfig, interface: Interface) -> None:
        self.config = config
        self.url = _redact(config.url).rstrip("/")
        self._interface = interface
        self._http: requests.Session = interface._http
        # requests keeps 10 connections per host by default; a fan-out sharing this session from
        # more threads would open and discard connections ("Connection pool is full")
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=config.max_connections)
        self._http.mount("http://", adapter)
        self._http.mount("https://", adapter)
        self._lock = threading.Lock()
        self.requests_sent = 0
        self._sleep: Callable[[float], None] = time.sleep

    def __enter__(self) -> XnatSession:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections (the server's session expires on its own)."""
        self._http.close()

    def __repr__(self) -> str:
        return f"XnatSession(url={self.url!r}, user={self.config.user!r})"

    def _count(self) -> None:
        with self._lock:
            self.requests_sent += 1

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        body: Callable[[], Body] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        accept: tuple[int, ...] = (200, 201),
    ) -> requests.Response:
        """Send ``method path`` (a path from :func:`path_of`) and return the response whose status
        is in ``accept``; ``what`` names the operation in errors ("list experiments of P").

        ``body`` is a factory so that a retry can send the body again. 5xx answers, resets and
        timeouts are retried ``config.retries`` times, waiting ``backoff_s`` doubling up to
        ``backoff_max_s``; everything else raises at once.
        """
        url = self.url + path
        attempts = self.config.retries + 1
        started = time.monotonic()
        for attempt in range(attempts):
            self._count()
            try:
                response = self._http.request(
                    method,
                    url,
                    params=params,
                    data=body() if body is not None else None,
                    headers=dict(headers or {}),
                    stream=stream,
                    timeout=self.config.timeout,
                    allow_redirects=method in ("GET", "HEAD"),
                )
            except requests.RequestException as exc:
                error = error_for_exception(exc, what=what, url=url)
                if is_transient(error) and attempt + 1 < attempts:
                    self._backoff(attempt, what, error)
                    continue
                raise self._gave_up(error, attempt + 1, started) from exc
            logger.debug("%s %s -> %s", method, path, response.status_code)
            if response.status_code in accept:
                return response
            error = error_for_status(
                response.status_code, what=what, url=url, detail=_detail(response)
            )
            response.close()
            if is_transient(error) and attempt + 1 < attempts:
                self._backoff(attempt, what, error)
                continue
            raise self._gave_up(error, attempt + 1, started)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _gave_up(self, error: XnatError, attempts: int, started: float) -> XnatError:
        """``error`` as raised after the last attempt: a transient one says how long x2c
        tried (the one retry budget of an XNAT request: ``XnatConfig.retries``)."""
        if not is_transient(error) or attempts < 2:
            return error
        spent = time.monotonic() - started
        note = (
            f"; gave up after {attempts} attempts in {spent:.0f} s (xnat.retries, "
            "xnat.backoff_s); the next pass tries again"
        )
        out = type(error)(str(error) + note, url=error.url, status=error.status)
        out.__cause__ = error.__cause__
        return out

    def _backoff(self, attempt: int, what: str, error: XnatError) -> None:
        delay = min(self.config.backoff_s * (2**attempt), self.config.backoff_max_s)
        logger.warning("%s: %s; retry %d in %.1f s", what, error, attempt + 1, delay)
        self._sleep(delay)

    def get_json(self, path: str, *, what: str, params: Mapping[str, str] | None = None) -> Any:
        """GET ``path`` with ``format=json`` and return the decoded body."""
        query = {"format": "json", **(params or {})}
        response = self.request("GET", path, what=what, params=query)
        try:
            return response.json()
        except ValueError as exc:
            raise XnatError(
                f"{what}: {self.url + path} did not answer JSON: is this an XNAT server?",
                url=self.url + path,
                status=response.status_code,
            ) from exc

    def result_set(
        self, path: str, *, what: str, params: Mapping[str, str] | None = None
    ) -> list[dict[str, str]]:
        """GET an XNAT listing and return the rows of its ``ResultSet`` envelope."""
        data = self.get_json(path, what=what, params=params)
        try:
            rows = data["ResultSet"]["Result"]
        except (KeyError, TypeError) as exc:
            raise XnatError(
                f"{what}: {self.url + path} answered JSON without a ResultSet",
                url=self.url + path,
            ) from exc
        if not isinstance(rows, list):
            raise XnatError(f"{what}: ResultSet.Result is not a list", url=self.url + path)
        return [{str(k): "" if v is None else str(v) for k, v in row.items()} for row in rows]


def _detail(response: requests.Response) -> str:
    """A short, single-line reason from an error response body (never HTML soup)."""
    if response.headers.get("Content-Type", "").startswith("text/html"):
        return ""
    try:
        text = response.text
    except (requests.RequestException, UnicodeDecodeError):
        return ""
    text = " ".join(text.split())
    return text[:200]


def connect(config: XnatConfig) -> XnatSession:
    """Open a session to ``config.url`` and check the login with one request
    (``GET /data/JSESSION``), so a wrong password, an unknown host, a refused connection or a
    TLS failure fails here with one line naming the server and the user, not later as an
    empty listing (pyxnat issue 162)."""
    server = _redact(config.url).rstrip("/")
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"XNAT URL {server!r} must look like https://host[:port][/path]")
    interface = Interface(
        server=server,
        user=config.user,
        password=config.password.get_secret_value(),
        verify=config.verify,
    )
    session = XnatSession(config, interface)
    who = f"user {config.user!r} at {server}"
    try:
        response = session.request("GET", "/data/JSESSION", what=f"log in as {who}")
    except XnatAuthError as exc:
        raise XnatAuthError(
            f"XNAT at {server} rejected the login of user {config.user!r}: check the password "
            "(config file, XNAT_PASS or ~/.netrc) and that the account is enabled",
            url=exc.url,
            status=exc.status,
        ) from exc
    except XnatNotFoundError as exc:
        raise XnatNotFoundError(
            f"no XNAT REST API at {server} (GET /data/JSESSION answered 404): check the URL, "
            "including any context path such as /xnat",
            url=exc.url,
            status=exc.status,
        ) from exc
    token = response.text.strip()
    if not token or token.startswith("<"):
        # An HTML page instead of a session id: a proxy login page or not XNAT at all.
        raise XnatAuthError(
            f"XNAT at {server} did not start a session for user {config.user!r} (it answered a "
            "web page): check the URL and the credentials",
            url=server + "/data/JSESSION",
            status=response.status_code,
        )
    # Tell pyxnat the session exists, so it never repeats the JSESSION request itself.
    interface._entry = "/data"
    interface._jsession = "JSESSIONID=" + token
    logger.info("connected to %s as %s", server, config.user)
    return session
