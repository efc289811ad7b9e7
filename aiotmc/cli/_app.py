"""The entry point: parse, dispatch to the command, turn errors into one line and a status."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from .._exceptions import InvalidResourceName
from ._agent import cmd_agent
from ._completion import cmd_completion
from ._demo import cmd_demo
from ._errors import UsageError, describe, leaf
from ._gateway import cmd_gateway
from ._info import cmd_info
from ._io import cmd_query, cmd_read_block, cmd_write
from ._list import cmd_list
from ._nats_users import cmd_nats_users
from ._parser import build_parser
from ._runtime import Options, options_from, start_logging
from ._shell import cmd_shell
from ._sim import cmd_sim


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 1
    options = options_from(args)
    start_logging(options)
    command: Callable[[argparse.Namespace, Options], int] = COMMANDS[args.command]
    try:
        return command(args, options)
    except BaseException as exc:
        if isinstance(leaf(exc), BrokenPipeError):
            return _reader_gone()
        if isinstance(leaf(exc), KeyboardInterrupt):
            if args.command == "sim":
                print("aiotmc: simulators stopped", file=sys.stderr)
                return 0
            if args.command == "gateway":
                print("aiotmc: gateway stopped", file=sys.stderr)
                return 0
            print("aiotmc: interrupted", file=sys.stderr)
            return 130
        if not isinstance(exc, Exception):
            raise  # SystemExit and the like are not ours to report
        return _report(exc, debug=options.debug)


def _reader_gone() -> int:
    """stdout's reader left (``| head -1``): stop quietly, as ``cat`` would (status 141,
    128 + SIGPIPE). stdout is pointed at /dev/null so that the interpreter's final flush
    does not complain either."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 141


def _report(exc: BaseException, *, debug: bool) -> int:
    if debug:
        traceback.print_exception(exc)
    print(f"aiotmc: error: {describe(exc)}", file=sys.stderr)
    inner = leaf(exc)
    return 2 if isinstance(inner, InvalidResourceName | UsageError) else 1


COMMANDS: dict[str, Callable[[argparse.Namespace, Options], int]] = {
    "list": cmd_list,
    "info": cmd_info,
    "query": cmd_query,
    "write": cmd_write,
    "read-block": cmd_read_block,
    "shell": cmd_shell,
    "sim": cmd_sim,
    "agent": cmd_agent,
    "nats-users": cmd_nats_users,
    "demo": cmd_demo,
    "gateway": cmd_gateway,
    "completion": cmd_completion,
}
