"""Validate raw rows against the record schemas and report every bad row.

``load_records`` scans the whole file before deciding: in ``"fail"`` mode it
raises one :class:`DataValidationError` listing all bad rows (so users fix a
file in one pass), in ``"skip"`` mode it keeps the valid rows and returns the
errors so the caller can log what was skipped.  Nothing is dropped silently.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ValidationError

from rlhf_dist.data.errors import DataFileError, DataValidationError, RowError
from rlhf_dist.data.readers import RawRow, UnreadableRow, is_text_table, iter_raw_rows
from rlhf_dist.data.records import RecordKind, model_for

OnError = Literal["fail", "skip"]


@dataclass
class LoadResult:
    """Valid records, the errors of rejected rows, and how many rows were read."""

    records: list[Any]
    errors: list[RowError] = field(default_factory=list)
    n_rows: int = 0
    source: str = "data"
    locations: list[str] = field(default_factory=list)  # where each record is, e.g. 'pairs.jsonl:7'

    @property
    def n_skipped(self) -> int:
        """Number of rows rejected (a row can have several errors)."""
        return len({e.location for e in self.errors})

    def summary(self) -> str:
        """One line for logs, e.g. ``"data.jsonl: kept 98 of 100 rows, skipped 2"``."""
        return f"{self.source}: kept {len(self.records)} of {self.n_rows} rows, skipped {self.n_skipped}"


def _field_kind(model: type[BaseModel], name: str) -> str:
    """Classify a schema field as ``"str"``, ``"int"``, ``"float"`` or ``"list"``."""
    annotation = model.model_fields[name].annotation
    origin = typing.get_origin(annotation)
    if origin is list or annotation is list:
        return "list"
    if annotation in (int, float):
        return annotation.__name__
    return "str"


def _parse_cell(text: str, kind: str) -> Any:
    # Unparseable cells stay strings: the strict schema then reports them with the value.
    try:
        if kind == "int":
            return int(text.strip())
        if kind == "float":
            return float(text.strip())  # nan/inf parse here and are rejected by the schema
        if kind == "list":
            value = json.loads(text)
            return value if isinstance(value, list) else text
    except ValueError:
        return text
    return text


def coerce_text_cells(row: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """Convert CSV text cells to the schema's types; empty optional cells count as absent."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        info = model.model_fields.get(name)
        if info is None or not isinstance(value, str):
            out[name] = value  # unknown columns are reported by the schema
            continue
        kind = _field_kind(model, name)
        # An empty cell is an absent value, except for required text, which gets the blank-text error.
        if value.strip() == "" and (kind != "str" or not info.is_required()):
            continue
        out[name] = value if kind == "str" else _parse_cell(value, kind)
    return out


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _humanise(err: dict[str, Any]) -> str:
    """Turn one pydantic error into a short message a user can act on."""
    kind, value = err["type"], err.get("input")
    messages = {
        "missing": "missing required field",
        "string_type": f"expected a string, got {_describe(value)}",
        "float_type": f"expected a number, got {_describe(value)}",
        "int_type": f"expected an integer, got {_describe(value)}",
        "list_type": f"expected a list, got {_describe(value)}",
        "finite_number": f"must be a finite number, got {value!r}",
    }
    if kind in messages:
        return messages[kind]
    if kind == "value_error":
        return str(err["ctx"]["error"])
    if kind == "too_short":
        return f"needs at least {err['ctx']['min_length']} items, got {err['ctx']['actual_length']}"
    # Range checks and anything else: pydantic's text plus the offending value.
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {value!r}"


def _field_name(loc: tuple[Any, ...]) -> str:
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "<row>"


def validate_row(
    location: str, row: RawRow, model: type[BaseModel], *, allow_extra: bool = False, text_cells: bool = False
) -> tuple[BaseModel | None, list[RowError]]:
    """Validate one raw row; returns ``(record, [])`` or ``(None, errors)``."""
    if isinstance(row, UnreadableRow):
        return None, [RowError(location, row.field, row.problem)]
    if allow_extra:
        row = {k: v for k, v in row.items() if k in model.model_fields}
    if text_cells:
        row = coerce_text_cells(row, model)
    try:
        return model.model_validate(row), []
    except ValidationError as e:
        known = ", ".join(model.model_fields)
        errors = []
        for err in e.errors():
            problem = _humanise(err)
            if err["type"] == "extra_forbidden":
                problem = f"unknown column (expected: {known}; pass allow_extra=True to ignore extra columns)"
            errors.append(RowError(location, _field_name(err["loc"]), problem))
        return None, errors


def validate_rows(
    rows: Iterable[tuple[str, RawRow]],
    kind: RecordKind,
    *,
    on_error: OnError = "fail",
    allow_extra: bool = False,
    text_cells: bool = False,
    source: str = "data",
) -> LoadResult:
    """Validate ``(location, row)`` pairs; see :func:`load_records` for ``on_error``."""
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    model = model_for(kind)
    result = LoadResult(records=[], source=source)
    for location, row in rows:
        result.n_rows += 1
        record, errors = validate_row(location, row, model, allow_extra=allow_extra, text_cells=text_cells)
        if record is not None:
            result.records.append(record)
            result.locations.append(location)
        result.errors.extend(errors)
    if result.n_rows == 0:
        raise DataFileError(f"{source}: no data rows (the file is empty)")
    if result.errors and on_error == "fail":
        raise DataValidationError(result.errors, source=source)
    return result


def load_records(
    path: str | Path, kind: RecordKind, on_error: OnError = "fail", allow_extra: bool = False
) -> LoadResult:
    """Read and validate every row of ``path`` as records of ``kind``.

    ``on_error="fail"`` raises :class:`DataValidationError` listing all bad rows
    after the whole file is scanned; ``"skip"`` keeps valid rows and returns
    the errors in the result (log ``result.summary()``).
    """
    return validate_rows(
        iter_raw_rows(path),
        kind,
        on_error=on_error,
        allow_extra=allow_extra,
        text_cells=is_text_table(path),
        source=str(path),
    )
