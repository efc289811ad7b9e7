"""``aiotmc read-block``: a binary block streamed to a file, with a progress display.

The payload is read straight into a memory map of the output file (a sparse temporary
file beside it, sized to the limit, renamed over the target once the block is complete
and cut to its length), so the kernel writes it back while it arrives and the process
holds no copy. Output to stdout or to a device (``/dev/null``, a FIFO) is buffered.
The display (rich, from the ``cli`` extra) shows bytes, percent, rate and the time left
where the transport reports progress (:class:`~aiotmc.transports.base.SupportsBlockProgress`);
elsewhere the elapsed time.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import mmap
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..transports.base import MessageTransport, SupportsBlockProgress
from ._runtime import Options, open_instrument, run_async

__all__ = ["cmd_read_block"]


def cmd_read_block(args: argparse.Namespace, options: Options) -> int:
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    output = None if args.output == "-" else Path(args.output)
    streamed = output is not None and (output.is_file() or not output.exists())

    async def run() -> tuple[int, float, bytes | None]:
        async with open_instrument(args.resource, options) as inst:
            limit = args.max_size or inst.max_message_size
            what = args.cmd if len(args.cmd) <= 24 else args.cmd[:23] + "…"
            with _display(show, what) as update, _reporting(inst.transport, update):
                start = time.perf_counter()
                if streamed:
                    assert output is not None
                    with _MappedFile(output, limit) as target:
                        payload = await inst.query_block(args.cmd, into=target.view, max_size=limit)
                        size = len(payload)
                        payload.release()
                        target.commit(size)
                    return size, time.perf_counter() - start, None
                data = await inst.query_block(args.cmd, max_size=limit)
                return len(data), time.perf_counter() - start, bytes(data)

    size, elapsed, data = run_async(options, run)
    if data is not None:
        if output is None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            output.write_bytes(data)
    where = "stdout" if output is None else str(output)
    rate = size / elapsed / 1e6 if elapsed > 0 else math.inf
    print(f"wrote {size} bytes to {where} in {elapsed:.3f} s ({rate:.2f} MB/s)", file=sys.stderr)
    return 0


class _MappedFile:
    """A sparse temporary file beside ``path``, memory-mapped for ``size`` bytes; it
    replaces ``path`` on :meth:`commit`, else it is removed."""

    def __init__(self, path: Path, size: int) -> None:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        self._temp = Path(name)
        self._target = path
        self._file = os.fdopen(fd, "r+b")
        self._map: mmap.mmap | None = None
        self._file.truncate(max(size, 1))  # sparse: disk is used as the payload arrives
        self._map = mmap.mmap(self._file.fileno(), max(size, 1))
        self.view = memoryview(self._map)
        self._done = False

    def commit(self, size: int) -> None:
        """Cut the file to ``size`` bytes and move it to the target path."""
        self._close_map()
        self._file.truncate(size)
        self._file.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self._temp, 0o666 & ~umask)  # as a plain open() would have created it
        os.replace(self._temp, self._target)
        self._done = True

    def _close_map(self) -> None:
        self.view.release()
        if self._map is not None:
            with contextlib.suppress(BufferError):  # a view still held by a traceback
                self._map.close()
            self._map = None

    def __enter__(self) -> _MappedFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._done:
            self._close_map()
            self._file.close()
            with contextlib.suppress(OSError):
                self._temp.unlink()


@contextlib.contextmanager
def _reporting(
    transport: MessageTransport, update: Callable[[int, int], None] | None
) -> Iterator[None]:
    """Route the transport's block progress to ``update`` while the block is read."""
    if update is None or not isinstance(transport, SupportsBlockProgress):
        yield
        return
    transport.block_progress = update
    try:
        yield
    finally:
        transport.block_progress = None


@contextlib.contextmanager
def _display(show: bool, what: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress display on stderr (when ``show``); yields its update function."""
    if not show:
        yield None
        return
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
    except ImportError:  # without the cli extra: elapsed time only
        with _elapsed(what):
            yield None
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        DownloadColumn(),
        TaskProgressColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=Console(file=sys.stderr),
        transient=True,
    )
    task = progress.add_task(what, total=None)

    def update(received: int, size: int) -> None:
        progress.update(task, completed=received, total=size)

    with progress:
        yield update


@contextlib.contextmanager
def _elapsed(what: str) -> Iterator[None]:
    """Elapsed seconds on stderr, refreshed by a thread, erased at the end."""
    import threading

    stop = threading.Event()
    start = time.perf_counter()

    def tick(write: Any = sys.stderr.write) -> None:
        while not stop.wait(0.1):
            write(f"\rreading {what}  {time.perf_counter() - start:5.1f} s")
            sys.stderr.flush()
        write("\r\x1b[K")
        sys.stderr.flush()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=1)
