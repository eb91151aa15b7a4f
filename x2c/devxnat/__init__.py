"""``x2c devxnat``: an XNAT-compatible REST server for the demo and the tests.

Unmodified pyxnat and xnatpy work against it. Modules: ``server`` (the ``serve`` entry point),
``app`` (authentication, dispatch, request counter), ``paths`` (REST path to objects and route
template), ``reading`` and ``writing`` (the handlers), ``listings`` (ResultSet JSON/CSV and
``columns=``), ``documents`` (object JSON/XML, catalogs, error pages), ``schema`` (the schema
document xnatpy builds its classes from), ``uploads`` and ``archives`` (streamed uploads, safe
unpacking, streamed zips), ``store`` (the on-disk data), ``demo`` (``--demo-data``).

Nothing else in x2c imports this package; it never imports pyxnat or xnatpy.
"""
