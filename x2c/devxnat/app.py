"""The Starlette application: authentication, dispatch, and one handler per kind of request.

Every request is counted under ``METHOD route-template`` (``GET /data/projects/{project}``) so
tests and benchmarks can assert how many calls a piece of client code makes
(``GET /x2c/requests``, admin only; ``DELETE`` resets). Routes nobody handles are logged with
their method and path, to trace what a client asks for.
"""

from __future__ import annotations

import collections
import html
import json
import logging
import threading

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    Response,
)
from starlette.routing import Route

from x2c.devxnat import listings
from x2c.devxnat.auth import BadCredentials, Sessions, authenticate, check_password
from x2c.devxnat.paths import NotFound, UnknownRoute, resolve, strip_prefix, template_of
from x2c.devxnat.reading import Reader
from x2c.devxnat.responses import HTTPError, error_response
from x2c.devxnat.schema import SCHEMA_NAMES, element_rows, field_rows, xnat_schema
from x2c.devxnat.store import Store, User
from x2c.devxnat.writing import Writer

log = logging.getLogger(__name__)

XNAT_VERSION = "1.8.10"


class Counter:
    """Requests per ``METHOD template``, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    def add(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


class DevXnat:
    """The server's state and request handlers; :meth:`app` builds the ASGI application."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reader = Reader(store)
        self.writer = Writer(store)
        self.sessions = Sessions()
        self.counter = Counter()

    def app(self) -> Starlette:
        """The Starlette application serving every route."""
        methods = ["GET", "HEAD", "PUT", "POST", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", self.dispatch, methods=methods)])

    # -- dispatch --------------------------------------------------------------------------

    async def dispatch(self, request: Request) -> Response:
        path = request.url.path
        method = request.method
        try:
            user = authenticate(request, self.store, self.sessions)
        except BadCredentials:
            self.counter.add(f"{method} {template_of(path)}")
            return error_response(401, "Unauthorized", "The request requires user authentication")
        try:
            response = await self._route(request, user, path, method)
            if method not in ("GET", "HEAD"):  # the change is on disk before the answer
                await anyio.to_thread.run_sync(self.store.sync)
            return response
        except HTTPError as exc:
            return error_response(exc.status, exc.reason, exc.detail)
        except NotFound as exc:
            return error_response(404, "Not Found", f"{exc} was not found")
        except Exception:
            # A bad request must never take the server down or leave it half-changed: every
            # change is committed at the end of its handler, so failing here changes nothing.
            log.exception("request failed: %s %s", method, path)
            return error_response(500, "Internal Server Error", f"{method} {path} failed")

    async def _route(self, request: Request, user: User | None, path: str, method: str) -> Response:
        params = dict(request.query_params)
        if path in ("/", "") and method in ("GET", "HEAD"):
            self.counter.add(f"{method} /")
            return self._landing(user)
        if path == "/data/services/auth" and method == "PUT":
            self.counter.add("PUT /data/services/auth")
            return await self._services_auth(request)
        if user is None:
            self.counter.add(f"{method} {template_of(path)}")
            return error_response(401, "Unauthorized", "The request requires user authentication")
        if path.startswith("/x2c/"):
            return await self._x2c(request, user, path, method)
        if path in ("/data/search", "/REST/search") and method == "POST":
            self.counter.add("POST /data/search")
            return self.reader.search(await request.body(), user, params)
        special = self._special(request, user, path, method, params)
        if special is not None:
            return special
        rest = strip_prefix(path)
        if rest is None or rest in ("", "/"):
            self.counter.add(f"{method} {path}")
            log.info("unhandled route: %s %s", method, path)
            raise HTTPError(404, "Not Found", path)
        try:
            target = resolve(self.store, user, rest)
        except NotFound as exc:
            self.counter.add(f"{method} {template_of(path)}")
            if isinstance(exc, UnknownRoute):
                log.info("unhandled route: %s %s", method, path)
            raise
        self.counter.add(f"{method} {target.template}")
        if method in ("GET", "HEAD"):
            return self.reader.get(target, user, params)
        if method in ("PUT", "POST"):
            return await self.writer.write(request, target, user, params, method)
        if method == "DELETE":
            return self.writer.delete(target, user)
        raise HTTPError(405, "Method Not Allowed", method)

    def _landing(self, user: User | None) -> Response:
        if user is None:
            body = (
                "<html><head><title>XNAT</title></head><body>"
                '<form name="form1" method="post" action="/login">'
                "<p>x2c devxnat: log in with HTTP Basic credentials.</p></form></body></html>"
            )
        else:
            body = (
                "<html><head><title>XNAT</title></head><body>"
                '<span id="user_info">Logged in as: &nbsp;'
                '<a id="username-link" href="/app/template/XDATScreen_UpdateUser.vm">'
                f"{html.escape(user.name)}</a>"
                "</span></body></html>"
            )
        return Response(body, media_type="text/html")

    async def _services_auth(self, request: Request) -> Response:
        form = await request.form()
        name = str(form.get("username") or "")
        password = str(form.get("password") or "")
        user = check_password(self.store, name, password)
        if user is None:
            return error_response(401, "Unauthorized", "Login attempt failed. Please try again.")
        token = self.sessions.open(user.name)
        resp = PlainTextResponse(token)
        resp.set_cookie("JSESSIONID", token, path="/", httponly=True)
        return resp

    def _special(
        self, request: Request, user: User, path: str, method: str, params: dict[str, str]
    ) -> Response | None:
        """Session, version, schema and search-element routes."""
        key = f"{method} {path}"
        if path == "/data/JSESSION":
            self.counter.add(f"{method} /data/JSESSION")
            if method == "DELETE":
                token = request.cookies.get("JSESSIONID")
                if token:
                    self.sessions.close(token)
                return PlainTextResponse("")
            token = self.sessions.open(user.name)
            resp = PlainTextResponse(token)
            resp.set_cookie("JSESSIONID", token, path="/", httponly=True)
            return resp
        if path == "/data/auth" and method == "GET":
            self.counter.add(key)
            return PlainTextResponse(f"User '{user.name}' is logged in")
        if path in ("/data/version", "/data/buildInfo", "/data/uptime"):
            self.counter.add(key)
            raise HTTPError(404, "Not Found", path)
        if path == "/xapi/siteConfig/buildInfo":
            self.counter.add(key)
            return JSONResponse(
                {
                    "version": XNAT_VERSION,
                    "buildNumber": "x2c",
                    "commit": "devxnat",
                    "isDirty": "false",
                    "Application-Name": "XNAT",
                }
            )
        if path == "/xapi/siteConfig/uptime":
            self.counter.add(key)
            return JSONResponse({"days": 0, "hours": 0, "minutes": 0, "seconds": 0})
        if path == "/xapi/schemas":
            self.counter.add(key)
            return JSONResponse(SCHEMA_NAMES)
        if path in ("/xapi/schemas/xnat", "/schemas/xnat/xnat.xsd", "/schemas/xnat"):
            self.counter.add(f"{method} /xapi/schemas/{{schema}}")
            return Response(xnat_schema(), media_type="application/xml")
        if path.startswith("/xapi/schemas/"):
            self.counter.add(f"{method} /xapi/schemas/{{schema}}")
            raise HTTPError(404, "Not Found", f"no schema {path.rsplit('/', 1)[-1]}")
        if path == "/data/search/elements":
            self.counter.add(key)
            return self.reader.listing(listings.ELEMENTS, element_rows(), params)
        if path.startswith("/data/search/elements/"):
            self.counter.add(f"{method} /data/search/elements/{{element}}")
            rows = field_rows(path.rsplit("/", 1)[-1])
            if rows is None:
                raise HTTPError(404, "Not Found", path)
            return self.reader.listing(listings.FIELDS, rows, params)
        return None

    async def _x2c(self, request: Request, user: User, path: str, method: str) -> Response:
        """Admin-only helpers: the request counter and extra accounts."""
        if not user.admin:
            raise HTTPError(403, "Forbidden", "x2c admin endpoints need the admin account")
        if path == "/x2c/requests":
            if method == "DELETE":
                self.counter.reset()
                return PlainTextResponse("")
            return JSONResponse(self.counter.snapshot())
        if path.startswith("/x2c/users/") and method == "PUT":
            name = path[len("/x2c/users/") :]
            try:
                body = json.loads(await request.body())
                self.store.put_user(
                    name,
                    str(body["password"]),
                    [str(p) for p in body.get("projects_readable", [])],
                    bool(body.get("can_write", False)),
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise HTTPError(400, "Bad Request", f"user document: {exc}") from exc
            return PlainTextResponse(name, status_code=201)
        raise HTTPError(404, "Not Found", path)


def build_app(store: Store) -> Starlette:
    """The ASGI application over ``store``; its :class:`DevXnat` is at ``app.state.devxnat``."""
    dev = DevXnat(store)
    app = dev.app()
    app.state.devxnat = dev
    return app
