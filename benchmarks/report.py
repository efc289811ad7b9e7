"""Statistics over rounds, the one table (Markdown) and the JSON file."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .figures import (
    CLIENTS,
    FLOOR,
    OURS,
    PYVISA,
    PYVISA_AIOTMC,
    PYVISA_BEST,
    SYNC,
    Measurement,
    Row,
)

__all__ = ["Cell", "Report", "fmt"]

_HEADERS = {
    "aiotmc-asyncio": "aiotmc asyncio",
    "aiotmc-trio": "aiotmc trio",
    "aiotmc-uvloop": "aiotmc uvloop",
    SYNC: "aiotmc.sync",
    PYVISA: "PyVISA",
    PYVISA_BEST: "PyVISA best",
    PYVISA_AIOTMC: "PyVISA @aiotmc",
    FLOOR: "floor",
}
#: One letter per client of :data:`OURS` in the ratio columns.
_LETTERS = {
    "aiotmc-asyncio": "a",
    "aiotmc-trio": "t",
    "aiotmc-uvloop": "u",
    SYNC: "s",
    PYVISA_AIOTMC: "@",
}
_BASES = {"floor": FLOOR, "pyvisa": PYVISA, "pyvisa-best": PYVISA_BEST}


def fmt(value: float) -> str:
    """Three significant digits, no exponent for the ranges seen here."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


@dataclass
class Cell:
    """Everything one client produced for one row, over all rounds."""

    samples: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    na: str = ""
    error: str = ""

    @property
    def median(self) -> float | None:
        """Median over rounds, ``None`` without samples."""
        return float(statistics.median(self.samples)) if self.samples else None

    def add_note(self, note: str) -> None:
        """Record a note once."""
        if note and note not in self.notes:
            self.notes.append(note)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        out: dict[str, Any] = {"median": self.median, "samples": self.samples}
        if self.samples:
            out["min"], out["max"] = min(self.samples), max(self.samples)
        for key in ("na", "error"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.notes:
            out["notes"] = self.notes
        return out


@dataclass
class RowResult:
    """One table row: its definition and a cell per client."""

    row: Row
    measurement: Measurement
    cells: dict[str, Cell]

    def ratio(self, client: str, basis: str) -> float | None:
        """``client / basis`` of the medians."""
        a, b = self.cells[client].median, self.cells[basis].median
        if a is None or b is None or b == 0:
            return None
        return a / b

    def verdicts(self) -> dict[str, bool]:
        """PASS (True) / MISS (False) per judged client (the target's) that has a figure."""
        target = self.row.target
        out: dict[str, bool] = {}
        if target is None:
            return out
        basis = _BASES.get(target.basis)
        for client in target.clients:
            if client not in self.cells:
                continue
            if basis is None:
                value = self.cells[client].median
            else:
                value = self.ratio(client, basis) if basis in self.cells else None
            if value is None:
                continue
            out[client] = value <= target.value if target.op == "<=" else value >= target.value
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON form (ratios and verdicts included)."""
        target = self.row.target
        ratios: dict[str, dict[str, float | None]] = {}
        for basis in (FLOOR, PYVISA, PYVISA_BEST):
            if basis in self.cells:
                ratios[f"aiotmc/{basis}"] = {
                    c: self.ratio(c, basis) for c in OURS if c in self.cells
                }
        return {
            "key": self.row.key,
            "label": self.row.label,
            "unit": self.row.unit,
            "higher_is_better": self.row.higher_is_better,
            "params": {
                k: v for k, v in self.measurement.params.items() if k not in ("scope", "dmm")
            },
            "target": None
            if target is None
            else {"op": target.op, "value": target.value, "basis": target.basis},
            "clients": {c: cell.to_json() for c, cell in self.cells.items()},
            "methods": self.measurement.notes,
            "ratios": ratios,
            "verdicts": {c: ("PASS" if ok else "MISS") for c, ok in self.verdicts().items()},
        }


class Report:
    """Collects samples per (row, client) and renders them."""

    def __init__(self, measurements: list[Measurement], clients: list[str] | None = None) -> None:
        """``clients``: the ones run (``--clients``); rows and columns of others are left
        out, and so are rows that only compared aiotmc clients left out with a reference."""
        self.rows: list[RowResult] = []
        self._by_key: dict[str, RowResult] = {}
        chosen = set(CLIENTS if clients is None else clients)
        for m in measurements:
            for row in m.rows:
                every = [c for c in m.clients if row.only is None or c in row.only]
                members = [c for c in every if c in chosen]
                if not members or (set(every) & set(OURS) and not set(members) & set(OURS)):
                    continue
                cells = {c: Cell(na=m.na) for c in members}
                rr = RowResult(row, m, cells)
                self.rows.append(rr)
                self._by_key[row.key] = rr

    def add(self, measurement: Measurement, client: str, answer: dict[str, Any]) -> None:
        """Record one worker answer for every row of ``measurement``."""
        for row in measurement.rows:
            rr = self._by_key.get(row.key)
            cell = None if rr is None else rr.cells.get(client)
            if cell is None:
                continue
            metric = row.floor_metric if row.floor_metric and client == FLOOR else row.metric
            if answer.get("ok"):
                value = answer.get("metrics", {}).get(metric)
                if value is None:
                    cell.error = f"metric {metric!r} missing"
                else:
                    cell.samples.append(float(value))
                for note in answer.get("notes", []):
                    cell.add_note(note)
            elif answer.get("na"):
                cell.na = str(answer["na"])
            else:
                cell.error = str(answer.get("error", "unknown error"))

    def fail_client(self, client: str, reason: str, measurement: Measurement) -> None:
        """Mark the still-empty cells of ``client`` in ``measurement`` as not available."""
        for row in measurement.rows:
            rr = self._by_key.get(row.key)
            cell = None if rr is None else rr.cells.get(client)
            if cell is not None and not cell.samples and not cell.error:
                cell.na = cell.na or reason

    # -- rendering --------------------------------------------------------------------------

    def table(self) -> str:
        """The one Markdown table: medians [min-max], ratios, targets, verdicts."""
        footnotes: list[str] = []

        def footnote(text: str) -> str:
            if text not in footnotes:
                footnotes.append(text)
            return f"[{footnotes.index(text) + 1}]"

        columns = [c for c in CLIENTS if any(c in rr.cells for rr in self.rows)]
        header = [
            "figure",
            "unit",
            *(_HEADERS[c] for c in columns),
            "aiotmc/floor (a/t/u/s/@)",
            "aiotmc/PyVISA (a/t/u/s/@)",
            "target",
            "verdict",
        ]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for rr in self.rows:
            cells = []
            for client in columns:
                cell = rr.cells.get(client)
                if cell is None:
                    cells.append("-")
                elif cell.samples:
                    text = fmt(cell.median or 0.0)
                    lo, hi = min(cell.samples), max(cell.samples)
                    if len(cell.samples) > 1:
                        text += f" [{fmt(lo)}-{fmt(hi)}]"
                    for note in cell.notes:
                        text += " " + footnote(note)
                    cells.append(text)
                elif cell.error:
                    cells.append("error " + footnote(f"{_HEADERS[client]}: {cell.error}"))
                else:
                    cells.append("n/a " + footnote(f"n/a: {cell.na or 'not measured'}"))
            ratios = []
            for basis in (FLOOR, PYVISA):
                if basis not in rr.cells:
                    ratios.append("-")
                    continue
                ours = [c for c in OURS if c in rr.cells]
                values = [rr.ratio(c, basis) for c in ours]
                shown = [fmt(v) if v is not None else "-" for v in values]
                if len(ours) < len(OURS):  # name them: "s 0.45 @ 0.97"
                    shown = [f"{_LETTERS[c]} {text}" for c, text in zip(ours, shown, strict=True)]
                joiner = "/" if len(ours) == len(OURS) else " "
                ratios.append(joiner.join(shown) if any(v is not None for v in values) else "-")
            target = rr.row.target
            verdicts = rr.verdicts()
            if target is None:
                verdict = ""
            elif not verdicts:
                verdict = "n/a"
            elif all(verdicts.values()):
                verdict = "PASS"
            else:
                missed = [
                    _HEADERS[c].removeprefix("aiotmc ") for c, ok in verdicts.items() if not ok
                ]
                verdict = f"MISS ({', '.join(missed)})"
            row = [
                rr.row.label,
                rr.row.unit,
                *cells,
                *ratios,
                target.describe(rr.row.unit) if target else "",
                verdict,
            ]
            lines.append("| " + " | ".join(row) + " |")
        if footnotes:
            lines.append("")
            lines += [f"[{i}] {text}" for i, text in enumerate(footnotes, 1)]
        return "\n".join(lines)

    def to_json(self, meta: dict[str, Any]) -> dict[str, Any]:
        """The whole run as JSON."""
        return {"meta": meta, "rows": [rr.to_json() for rr in self.rows]}

    def write_json(self, path: Path, meta: dict[str, Any]) -> None:
        """Write :meth:`to_json` to ``path`` (directories created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(meta), indent=2, ensure_ascii=False) + "\n")
