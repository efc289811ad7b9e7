"""``aiotmc shell``: an interactive session with one instrument (``Shell``)."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar

from ._complete import DELIMITERS, ShellCompleter
from ._errors import UsageError, describe
from ._parser import parse_timeout
from ._runtime import Options, check_backend, open_instrument

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

    from ..instrument import Instrument

T = TypeVar("T")

SHELL_HELP = """\
  CMD?              query (any line ending in '?'), print the answer
  CMD               write
  :block CMD [> F]  query a binary block; show its size, or save it to file F
  :stb              read the status byte
  :clear            device clear
  :trigger          trigger
  :errors           read the error queue (SYST:ERR?)
  :timeout [S]      show or set the timeout in seconds ('none': forever)
  :help             this text
  :quit             leave (or end of input, Ctrl-D)
Tab completes these commands and the SCPI headers sent before (this session or history).
Any other ':word' in lower case is a local error, never sent to the instrument; write a
SCPI header such as :abort in upper case (:ABORt) or without the leading ':'."""

HISTORY_FILE = "~/.aiotmc_history"
"""The ``aiotmc shell`` history; read from here when the shell starts (patchable)."""


def cmd_shell(args: argparse.Namespace, options: Options) -> int:
    from anyio.from_thread import start_blocking_portal

    check_backend(options.backend)
    interactive = sys.stdin.isatty()
    # The event loop runs in the portal's thread; this thread blocks in input() so that
    # line editing, history and Ctrl-C behave as in any other REPL.
    with (
        start_blocking_portal(backend=options.backend) as portal,
        portal.wrap_async_context_manager(open_instrument(args.resource, options)) as inst,
    ):
        return Shell(inst, portal, interactive=interactive).run()


@dataclass
class Shell:
    """The ``aiotmc shell`` loop; each instrument call runs on the portal's event loop."""

    inst: Instrument
    portal: BlockingPortal
    interactive: bool
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    failures: int = 0
    _busy: bool = False
    completer: ShellCompleter = field(default_factory=lambda: ShellCompleter(_SHELL_COMMANDS))

    def call(self, func: Callable[..., Awaitable[T]], *args: object) -> T:
        future: Future[T] = self.portal.start_task_soon(func, *args)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()  # cancels the task's scope on the event loop
            raise

    def run(self) -> int:
        """Read and execute lines until ``:quit`` or end of input; returns the exit status."""
        with self._history():
            if self.interactive:
                print(f"connected to {self.inst.resource}; ':help' for help, Ctrl-D to quit")
            while True:
                self._busy = False
                try:
                    if not self.step():
                        break
                except KeyboardInterrupt:
                    if not self.interactive:
                        raise
                    # Ctrl-C at the prompt drops the line; during a command it cancels it.
                    if self._busy:
                        print("interrupted", file=sys.stderr)
                        self.failures += 1
                    else:
                        print()
        return 1 if self.failures and not self.interactive else 0

    def step(self) -> bool:
        """Read and run one line; False at the end."""
        try:
            line = self._read_line(f"{self.inst.resource}> ").strip()
        except EOFError:
            if self.interactive:
                print()
            return False
        if not line or line.startswith("#"):
            return True
        self._busy = True
        try:
            return self.execute(line)
        except Exception as exc:
            print(f"error: {describe(exc)}", file=sys.stderr)
            self.failures += 1
            return True

    def _read_line(self, prompt: str) -> str:
        if self.interactive:
            return input(prompt)
        line = self.stdin.readline()
        if not line:
            raise EOFError
        return line

    @contextlib.contextmanager
    def _history(self) -> Iterator[None]:
        if not self.interactive:
            yield
            return
        try:
            import readline
        except ImportError:  # Windows without pyreadline
            yield
            return
        path = os.path.expanduser(HISTORY_FILE)
        with contextlib.suppress(OSError):
            readline.read_history_file(path)
        readline.set_history_length(1000)
        for index in range(1, readline.get_current_history_length() + 1):
            self.completer.learn(readline.get_history_item(index) or "")
        previous = readline.get_completer(), readline.get_completer_delims()
        readline.set_completer(self.completer.complete)
        readline.set_completer_delims(DELIMITERS)
        if "libedit" in (readline.__doc__ or ""):  # macOS
            readline.parse_and_bind("bind ^I rl_complete")
        else:
            readline.parse_and_bind("tab: complete")
        try:
            yield
        finally:
            readline.set_completer(previous[0])
            readline.set_completer_delims(previous[1])
            with contextlib.suppress(OSError):
                readline.write_history_file(path)

    def execute(self, line: str) -> bool:
        """Run one line; False means quit."""
        inst = self.inst
        # SCPI headers may start with ':' too (":MEAS:VOLT?"); shell commands are the
        # lower-case words of _SHELL_COMMANDS, so ":TRIGger" still goes to the instrument.
        word, _, rest = line.partition(" ")
        name = word
        if name in _SHELL_COMMANDS:
            rest = rest.strip()
            if name in (":quit", ":q", ":exit"):
                return False
            if name == ":help":
                print(SHELL_HELP)
            elif name == ":stb":
                print(_format_stb(int(self.call(inst.read_stb))))
            elif name == ":clear":
                self.call(inst.clear)
            elif name == ":trigger":
                self.call(inst.trigger)
            elif name == ":errors":
                errors = self.call(inst.errors)
                for error in errors:
                    print(f'{error.code}, "{error.message}"')
                if not errors:
                    print('0, "No error"')
            elif name == ":timeout":
                if rest:
                    try:
                        inst.timeout = parse_timeout(rest)
                    except argparse.ArgumentTypeError as exc:
                        raise UsageError(str(exc)) from None
                print(f"timeout: {inst.timeout if inst.timeout is not None else 'none'}")
            elif name == ":block":
                self._block(rest)
            return True
        if _SHELL_WORD.fullmatch(name):
            raise UsageError(f"unknown shell command {name!r} (':help' lists them); not sent")
        self.completer.learn(line)
        if line.endswith("?") or word.endswith("?"):  # "*IDN?", "MEAS:VOLT? 10,0.001"
            print(self.call(inst.query, line), flush=True)
        else:
            self.call(inst.write, line)
        return True

    def _block(self, rest: str) -> None:
        command, _, target = rest.partition(">")
        command, target = command.strip(), target.strip()
        if not command:
            raise UsageError("usage: :block CMD [> FILE]")
        data = self.call(self.inst.query_block, command)
        if target:
            Path(target).write_bytes(data)
            print(f"wrote {len(data)} bytes to {target}")
        else:
            preview = bytes(data[:16]).hex(" ")
            more = " ..." if len(data) > 16 else ""
            print(f"{len(data)} bytes: {preview}{more}", flush=True)


_SHELL_WORD = re.compile(r":[a-z]+")  # the shape of a shell command (SCPI: ":ABORt")

_SHELL_COMMANDS: frozenset[str] = frozenset(
    [":block", ":stb", ":clear", ":trigger", ":errors", ":timeout", ":help", ":quit", ":q", ":exit"]
)


def _format_stb(value: int) -> str:
    from .._types import StatusByte

    names = [flag.name for flag in StatusByte if flag and value & flag and flag.name]
    return f"{value} (0x{value:02X}{': ' + ' '.join(names) if names else ''})"
