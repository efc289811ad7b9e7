"""Acquisition rows to CSV: :func:`write_csv` and :func:`rows_to_csv`."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .acquisition import Row

__all__ = ["rows_to_csv", "write_csv"]

_FIXED: Final = ("index", "scheduled", "monotonic", "wall", "missed", "skew")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, str):
        return value
    if isinstance(value, Iterable):
        return ";".join(_cell(v) for v in value)
    return str(value)


def write_csv(
    rows: Iterable[Row],
    path_or_file: str | os.PathLike[str] | IO[str],
    *,
    names: Sequence[str] | None = None,
    header: bool = True,
) -> int:
    """Write rows as CSV; returns how many rows were written.

    Columns: ``index, scheduled, monotonic, wall, missed, skew``, then for each instrument
    ``<name>`` (the value: floats exactly as ``repr``, lists joined with ``;``, bytes as
    hex), ``<name>.monotonic`` and ``<name>.error`` (``Type: message``). ``names``
    (default: the first row's) picks and orders the instruments. A path is opened with
    ``newline=""`` and UTF-8; an open text file is written as is (``header=False`` to
    append). This is blocking file I/O: for big exports from async code use
    ``await anyio.to_thread.run_sync(write_csv, rows, path)``.

    Raises ``OSError`` from the file and ``KeyError`` when a row lacks a named instrument.
    """
    if isinstance(path_or_file, str | os.PathLike):
        with open(path_or_file, "w", newline="", encoding="utf-8") as file:
            return write_csv(rows, file, names=names, header=header)
    writer = csv.writer(path_or_file)
    count = 0
    chosen = list(names) if names is not None else None
    for row in rows:
        if chosen is None:
            chosen = list(row.samples)
        if count == 0 and header:
            columns = list(_FIXED)
            for name in chosen:
                columns += [name, f"{name}.monotonic", f"{name}.error"]
            writer.writerow(columns)
        cells = [
            str(row.index),
            repr(row.scheduled),
            repr(row.monotonic),
            repr(row.wall),
            str(row.missed),
            "" if row.skew is None else repr(row.skew),
        ]
        for name in chosen:
            sample = row.samples[name]
            error = sample.error
            cells += [
                _cell(sample.value),
                repr(sample.monotonic),
                "" if error is None else f"{type(error).__name__}: {error}",
            ]
        writer.writerow(cells)
        count += 1
    return count


def rows_to_csv(rows: Iterable[Row], *, names: Sequence[str] | None = None) -> str:
    """:func:`write_csv` into a string."""
    buffer = io.StringIO()
    write_csv(rows, buffer, names=names)
    return buffer.getvalue()
