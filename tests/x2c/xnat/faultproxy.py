"""A small fault-injecting HTTP proxy on loopback, in front of the devxnat server.

Real sockets, no patching: a test queues :class:`Fault` rules, and the proxy answers the
matching requests with an error status, a dropped connection, or a tampered body; all others
are forwarded unchanged. ``seen`` records every request line that reached the proxy.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


@dataclass
class Fault:
    """Answer the next ``times`` requests whose ``"METHOD /path?query"`` matches ``pattern``
    with ``status`` (an HTTP status), ``reset`` (close the socket without answering), or
    ``tamper`` (forward, then rewrite the upstream body), or ``truncate`` (forward the headers
    and half the body, then close); ``delay_s`` holds the answer back that long first (to make
    the client time out)."""

    pattern: str
    times: int = 1
    status: int | None = None
    reset: bool = False
    tamper: Callable[[bytes], bytes] | None = None
    truncate: bool = False
    delay_s: float = 0.0


class FaultProxy:
    """Forwards to ``upstream`` (e.g. ``http://127.0.0.1:8080``) and injects queued faults."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: list[Fault] = []
        self.seen: list[str] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self._http = requests.Session()
        self._http.trust_env = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length", "0") or "0")
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                with proxy._lock:
                    proxy._in_flight += 1
                try:
                    self._forward()
                finally:
                    with proxy._lock:
                        proxy._in_flight -= 1

            def _forward(self) -> None:
                line = f"{self.command} {self.path}"
                body = self._body()
                fault = proxy._take(line)
                if fault is not None and fault.reset:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault is not None and fault.status is not None:
                    payload = f"injected {fault.status}".encode()
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if fault is not None and fault.delay_s:
                    time.sleep(fault.delay_s)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                headers.pop("Host", None)
                upstream = proxy._http.request(
                    self.command,
                    proxy.upstream + self.path,
                    data=body or None,
                    headers=headers,
                    allow_redirects=False,
                )
                content = upstream.content
                if fault is not None and fault.tamper is not None:
                    content = fault.tamper(content)
                self.send_response(upstream.status_code)
                for key, value in upstream.headers.items():
                    if key.lower() not in _HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if fault is not None and fault.truncate:
                    self.wfile.write(content[: len(content) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(content)

            def handle_one_request(self) -> None:
                # A client that timed out has gone away; its late answer has nowhere to go.
                try:
                    super().handle_one_request()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _take(self, line: str) -> Fault | None:
        with self._lock:
            self.seen.append(line)
            for fault in self.faults:
                if fault.times > 0 and re.search(fault.pattern, line):
                    fault.times -= 1
                    return fault
        return None

    def add(self, fault: Fault) -> Fault:
        """Queue ``fault``; returns it so the test can check ``times`` reached 0."""
        with self._lock:
            self.faults.append(fault)
        return fault

    def count(self, pattern: str) -> int:
        """How many requests matching ``pattern`` reached the proxy."""
        with self._lock:
            return sum(1 for line in self.seen if re.search(pattern, line))

    @contextmanager
    def running(self) -> Iterator[FaultProxy]:
        self._thread.start()
        try:
            yield self
        finally:
            # A delayed request still being forwarded when the test ends would reach the server
            # during the next test and be counted there: wait (bounded) for it to finish.
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:
                with self._lock:
                    if self._in_flight == 0:
                        break
                time.sleep(0.02)
            self._server.shutdown()
            self._server.server_close()
            self._http.close()
