"""Writes sessions' trajectories (see :mod:`agent.trajectory`) as JSONL, CSV or Parquet.

One row per turn, both speakers, in time order; columns are :data:`agent.trajectory.EXPORT_COLUMNS`.
JSON-valued columns (scores, evidence, latency_ms) are JSON strings in CSV and Parquet, objects in JSONL.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from agent.trajectory import EXPORT_COLUMNS, JSON_COLUMNS, TurnRecord

ExportFormat = Literal["jsonl", "csv", "parquet", "emotionml"]
FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet", "emotionml")


class ExportError(Exception):
    """The export cannot be written as asked (unknown format, Parquet to a terminal, ...)."""


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (json.dumps(v) if k in JSON_COLUMNS and v is not None else v) for k, v in row.items()}


def to_jsonl(records: Iterable[TurnRecord]) -> str:
    return "".join(json.dumps(r.row(), ensure_ascii=False) + "\n" for r in records)


def to_csv(records: Iterable[TurnRecord]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(EXPORT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(_flat(record.row()))
    return buf.getvalue()


def write_parquet(records: Iterable[TurnRecord], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [_flat(r.row()) for r in records]
    table = pa.Table.from_pylist(rows, schema=_parquet_schema(pa))
    pq.write_table(table, path)


def _parquet_schema(pa: Any) -> Any:
    types = {
        "t_start": pa.float64(),
        "t_end": pa.float64(),
        "valence": pa.float64(),
        "arousal": pa.float64(),
        "interrupted": pa.bool_(),
        "schema_version": pa.int32(),
    }
    return pa.schema([(name, types.get(name, pa.string())) for name in EXPORT_COLUMNS])


def filter_time(records: list[TurnRecord], since: float | None, until: float | None) -> list[TurnRecord]:
    """Turns that start within [since, until] (Unix seconds; ``None`` = open)."""
    return [
        r for r in records if (since is None or r.t_start >= since) and (until is None or r.t_start <= until)
    ]


def parse_time(text: str) -> float:
    """Unix seconds from ``1732240000``, ``2026-11-22`` or ``2026-11-22T10:30:00`` (UTC unless zoned)."""
    from datetime import UTC, datetime

    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ExportError(f"not a time: {text!r} (use Unix seconds or ISO 8601)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def write_export(records: list[TurnRecord], fmt: str, out: Path | None) -> str | None:
    """Write ``records`` in ``fmt`` to ``out``; with ``out=None`` return the text (JSONL/CSV only)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        if out is None:
            raise ExportError("Parquet is binary: give --out FILE.parquet")
        write_parquet(records, out)
        return None
    if fmt == "emotionml":
        from agent.emotionml import to_emotionml

        text = to_emotionml(records)
    else:
        text = to_jsonl(records) if fmt == "jsonl" else to_csv(records)
    if out is None:
        return text
    out.write_text(text, encoding="utf-8")
    return None
