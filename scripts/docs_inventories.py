"""Write the intersphinx inventories the docs build reads: ``python -m scripts.docs_inventories``.

The docs build runs without network (tests/test_docs_site.py), so intersphinx cannot download
``objects.inv`` from docs.python.org, anyio.readthedocs.io or trio.readthedocs.io. Instead
``docs/_inventories/*.inv`` list the objects aiotmc's docs and signatures refer to, with
their addresses on those sites; the links in the built pages point there. Add a name here
when the docs start referring to it, and rerun (the test checks the files match this list
and that every name exists in the installed package).
"""

from __future__ import annotations

import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "docs" / "_inventories"

# (object, role, page relative to the site root); the anchor is the object's name.
Entry = tuple[str, str, str]


def _same_page(page: str, role: str, *names: str) -> list[Entry]:
    return [(name, role, page) for name in names]


_STD = "library/stdtypes.html"
_FUNCS = "library/functions.html"
_EXC = "library/exceptions.html"
_ABC = "library/collections.abc.html"

PYTHON: list[Entry] = [
    *_same_page(_STD, "class", "bytes", "bytearray", "memoryview", "str", "dict", "list"),
    *_same_page(_STD, "class", "tuple", "set", "frozenset", "range"),
    *_same_page(_FUNCS, "class", "int", "float", "bool", "object", "type", "complex"),
    *_same_page(_FUNCS, "function", "len", "isinstance", "print", "repr"),
    *_same_page("library/constants.html", "data", "None", "True", "False", "Ellipsis"),
    *_same_page(_EXC, "exception", "BaseException", "Exception", "TimeoutError", "OSError"),
    *_same_page(_EXC, "exception", "ValueError", "TypeError", "RuntimeError", "KeyError"),
    *_same_page(_EXC, "exception", "ConnectionError", "PermissionError", "EOFError"),
    *_same_page(_EXC, "exception", "FileNotFoundError", "KeyboardInterrupt", "LookupError"),
    *_same_page(_EXC, "exception", "NotImplementedError", "ExceptionGroup", "IndexError"),
    *_same_page(_EXC, "exception", "BaseExceptionGroup"),
    *_same_page(_ABC, "class", "collections.abc.Callable", "collections.abc.Mapping"),
    *_same_page(_ABC, "class", "collections.abc.Sequence", "collections.abc.Awaitable"),
    *_same_page(_ABC, "class", "collections.abc.AsyncIterator", "collections.abc.Iterable"),
    *_same_page(_ABC, "class", "collections.abc.Iterator", "collections.abc.Collection"),
    *_same_page(_ABC, "class", "collections.abc.AsyncIterable"),
    *_same_page(_ABC, "class", "collections.abc.MutableMapping"),
    ("collections.Counter", "class", "library/collections.html"),
    *_same_page("library/contextlib.html", "class", "contextlib.AbstractAsyncContextManager"),
    *_same_page("library/contextlib.html", "class", "contextlib.AbstractContextManager"),
    *_same_page("library/contextlib.html", "function", "contextlib.asynccontextmanager"),
    *_same_page("library/typing.html", "data", "typing.Any", "typing.Final", "typing.Literal"),
    *_same_page("library/typing.html", "class", "typing.Protocol", "typing.TypeVar"),
    *_same_page("library/enum.html", "class", "enum.Enum", "enum.IntEnum", "enum.IntFlag"),
    ("os.PathLike", "class", "library/os.html"),
    ("pathlib.Path", "class", "library/pathlib.html"),
    ("dataclasses.dataclass", "function", "library/dataclasses.html"),
    *_same_page("library/time.html", "function", "time.monotonic", "time.time"),
    *_same_page("library/logging.html", "class", "logging.Logger"),
    *_same_page("library/logging.html", "function", "logging.getLogger", "logging.basicConfig"),
    ("asyncio.run", "function", "library/asyncio-runner.html"),
    *_same_page("library/asyncio-task.html", "function", "asyncio.timeout", "asyncio.wait_for"),
    ("asyncio.TaskGroup", "class", "library/asyncio-task.html"),
    ("asyncio.CancelledError", "exception", "library/asyncio-exceptions.html"),
]

_API = "api.html"
ANYIO: list[Entry] = [
    *_same_page(_API, "function", "anyio.run", "anyio.sleep", "anyio.fail_after"),
    *_same_page(_API, "function", "anyio.move_on_after", "anyio.create_task_group"),
    *_same_page(_API, "function", "anyio.get_cancelled_exc_class", "anyio.connect_tcp"),
    *_same_page(_API, "function", "anyio.to_thread.run_sync", "anyio.from_thread.run"),
    *_same_page(_API, "function", "anyio.from_thread.start_blocking_portal"),
    *_same_page(_API, "class", "anyio.CancelScope", "anyio.Event", "anyio.Lock"),
    *_same_page(_API, "class", "anyio.CapacityLimiter", "anyio.from_thread.BlockingPortal"),
    *_same_page(_API, "class", "anyio.abc.TaskGroup", "anyio.abc.ByteStream"),
    *_same_page(_API, "class", "anyio.abc.SocketStream"),
    *_same_page(_API, "class", "anyio.streams.memory.MemoryObjectReceiveStream"),
    *_same_page(_API, "class", "anyio.streams.memory.MemoryObjectSendStream"),
    *_same_page(_API, "exception", "anyio.ClosedResourceError", "anyio.EndOfStream"),
    *_same_page(_API, "exception", "anyio.BrokenResourceError", "anyio.WouldBlock"),
    *_same_page(_API, "exception", "anyio.BusyResourceError"),
]

_CORE = "reference-core.html"
TRIO: list[Entry] = [
    *_same_page(_CORE, "function", "trio.run", "trio.sleep", "trio.fail_after", "trio.fail_at"),
    *_same_page(_CORE, "function", "trio.move_on_after", "trio.open_nursery"),
    *_same_page(_CORE, "function", "trio.open_memory_channel", "trio.to_thread.run_sync"),
    *_same_page(_CORE, "function", "trio.from_thread.run"),
    *_same_page(_CORE, "class", "trio.CancelScope", "trio.Nursery", "trio.Event", "trio.Lock"),
    *_same_page(_CORE, "class", "trio.CapacityLimiter", "trio.MemoryReceiveChannel"),
    *_same_page(_CORE, "exception", "trio.Cancelled", "trio.TooSlowError"),
    ("trio.open_tcp_stream", "function", "reference-io.html"),
    ("trio.SocketStream", "class", "reference-io.html"),
]

INVENTORIES: dict[str, tuple[str, list[Entry]]] = {
    "python": ("Python", PYTHON),
    "anyio": ("AnyIO", ANYIO),
    "trio": ("Trio", TRIO),
}


def body(entries: list[Entry]) -> str:
    """The inventory's object lines: ``name py:role 1 page#$ -`` (``$``: the name)."""
    return "".join(f"{name} py:{role} 1 {page}#$ -\n" for name, role, page in sorted(entries))


def header(project: str) -> str:
    return (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        "# Version: \n"
        "# The remainder of this file is compressed using zlib.\n"
    )


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for key, (project, entries) in INVENTORIES.items():
        data = header(project).encode() + zlib.compress(body(entries).encode(), 9)
        (OUT / f"{key}.inv").write_bytes(data)
        print(f"{OUT / key}.inv: {len(entries)} objects")


if __name__ == "__main__":
    main()
