"""The ``azureml-chat`` command: ``demo``, ``emulator``, ``chat`` and ``batch``.

A user mistake (bad URL, missing key, 401, unknown deployment) prints one line and exits non-zero; it never
shows a traceback, and it names the flags and ``AZUREML_*`` variables a command-line user sets, never the
library's Python keywords. Exit codes: 0 success, 1 a failed call (for ``batch``: some item failed), 2 bad
arguments or configuration (a flag, an ``AZUREML_*`` variable, a path), 130 Ctrl-C.

``_main`` holds the parser and the commands, ``_options`` the options they share (and the wording of
configuration errors), ``_types`` the checked flag values, ``_batch`` the ``batch`` command (with its files
in ``_jsonl`` and its progress display in ``_progress``).
"""

from ._main import main

__all__ = ["main"]
