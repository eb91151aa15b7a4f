"""``x2c devxnat``: run the XNAT-compatible development server in the foreground."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from x2c.devxnat.app import build_app
from x2c.devxnat.demo import create_demo
from x2c.devxnat.store import Store
from x2c.errors import ConfigError

log = logging.getLogger(__name__)


def serve(*, host: str, port: int, data: str, user: str, password: str, demo_data: int) -> None:
    """Serve the XNAT-compatible API on ``host:port`` until interrupted (Ctrl-C).

    ``data`` holds everything the server stores and survives restarts; ``user``/``password`` is
    the admin account; ``demo_data`` > 0 creates the ``DEMO`` project with that many subjects if
    it is absent.
    """
    if not user or not password:
        raise ConfigError("x2c devxnat needs a non-empty --user and --password")
    if demo_data < 0:
        raise ConfigError(f"--demo-data must be 0 or more, got {demo_data}")
    try:
        store = Store(Path(data), user, password)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot use {data} as the devxnat data directory: {exc}") from exc
    if demo_data:
        create_demo(store, demo_data)
    app = build_app(store)
    log.info("devxnat serving %s on http://%s:%d", data, host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
