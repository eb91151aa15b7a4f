"""x2c's public API is exactly its sorted __all__, and every exported error is an X2CError."""

from __future__ import annotations

import x2c


def test_all_is_sorted_and_complete() -> None:
    public = {name for name in vars(x2c) if not name.startswith("_")} - {
        "config",
        "errors",
        "hosts",
        "schedulers",
        "xnat",
        "devxnat",
    }
    public |= {"__version__"}
    assert sorted(x2c.__all__) == x2c.__all__
    missing = {n for n in public if not isinstance(getattr(x2c, n), type(x2c))} - set(x2c.__all__)
    assert not missing, f"public names missing from __all__: {sorted(missing)}"
    for name in x2c.__all__:
        assert hasattr(x2c, name), name


def test_every_error_derives_from_x2c_error() -> None:
    for name in x2c.__all__:
        obj = getattr(x2c, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, x2c.X2CError), name
