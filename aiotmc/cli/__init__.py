"""The ``aiotmc`` command line: list, query, write, read-block, shell, sim and demo.

``main(argv)`` returns the exit status: 0 success, 1 operational error (connection refused,
timeout, instrument error), 2 usage error (bad option, invalid resource name), 130
interrupted. Errors print one line, ``aiotmc: error: <message>``; ``--debug`` adds the
traceback.

One module per job:

- ``_app``: the entry point, ``main``: dispatch, error reporting, exit status
- ``_parser``: argument parsing, ``build_parser``
- ``_errors``: ``UsageError``, ``CommandError`` and ``describe`` (an error in one line)
- ``_runtime``: the global ``Options``, running on the chosen event loop, opening instruments
- ``_catalog``: the simulated models offered, and creating one
- ``_list``, ``_io``, ``_shell``, ``_sim``, ``_demo``: the subcommands
"""

from __future__ import annotations

from ._app import main
from ._errors import CommandError, UsageError, describe
from ._parser import _device_spec as _device_spec
from ._parser import build_parser
from ._shell import HISTORY_FILE

__all__ = ["HISTORY_FILE", "CommandError", "UsageError", "build_parser", "describe", "main"]
