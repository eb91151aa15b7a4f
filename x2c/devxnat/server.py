"""The XNAT-compatible development server (being built: see issue 2)."""

from __future__ import annotations

from x2c.errors import ConfigError


def serve(*, host: str, port: int, data: str, user: str, password: str, demo_data: int) -> None:
    """Serve the XNAT-compatible API in the foreground until interrupted."""
    raise ConfigError("x2c devxnat is not built yet")
