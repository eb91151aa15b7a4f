"""The ``x2c`` command line: the top layer, above ``flows/`` (it runs passes), ``tasks/`` and
``x2c/``; the edge where the environment is read and errors become one line on stderr.

:mod:`cli.main` parses and dispatches; :mod:`cli.commands` (the seed form, ``run``,
``status``), :mod:`cli.settings` (settings files, the seed form's settings, the XNAT password),
:mod:`cli.runs` (Prefect, passes and their progress lines), :mod:`cli.table` (the table and the
failures) and :mod:`cli.demo` (``x2c demo``) do the work.
"""
