"""Read raw rows from JSONL, JSON, CSV, parquet and ``datasets`` directories.

Every row comes with a location string that points a human at it:

* ``.jsonl``  -> ``file:LINE`` (1-based physical line; blank lines skipped)
* ``.json``   -> ``file:item N`` (0-based index into the top-level list)
* ``.csv``    -> ``file:LINE`` (header is line 1, first data row line 2)
* ``.parquet``-> ``file:row N`` (0-based)
* directory written by ``datasets.Dataset.save_to_disk`` -> ``dir:row N`` (0-based)

Rows that cannot even be parsed (bad JSON, a CSV row with too many cells)
are yielded as :class:`UnreadableRow` so the validator reports them with
all other bad rows instead of aborting on the first one.

CSV cells are yielded as the strings found in the file; the validator
converts them to the schema's types (numbers, JSON lists for ranked
``responses``/``ranking``) because only it knows the schema.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Union

from pydantic import BaseModel

from rlhf_dist.data.errors import DataFileError, DataFileNotFound


@dataclass(frozen=True)
class UnreadableRow:
    """A row that could not be parsed; ``field`` is e.g. ``"<json>"``."""

    field: str
    problem: str


RawRow = Union[dict[str, Any], UnreadableRow]

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def iter_raw_rows(path: str | Path) -> Iterator[tuple[str, RawRow]]:
    """Yield ``(location, row)`` for every row of a supported data file or directory."""
    path = Path(path)
    if not path.exists():
        raise DataFileNotFound(f"{path}: data file not found (check the data.*_path option or the working directory)")
    if path.is_dir():
        return _iter_dataset_dir(path)
    readers = {".jsonl": _iter_jsonl, ".json": _iter_json, ".csv": _iter_csv, ".parquet": _iter_parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataFileError(
            f"{path}: unsupported data file extension {path.suffix!r}; "
            f"expected one of {', '.join(SUPPORTED_SUFFIXES)} or a datasets save_to_disk directory"
        )
    return reader(path)


def is_text_table(path: str | Path) -> bool:
    """True when the file stores every cell as text (CSV), so values need type conversion."""
    return Path(path).suffix.lower() == ".csv"


def _object_or_problem(value: Any) -> RawRow:
    if isinstance(value, dict):
        return value
    return UnreadableRow("<json>", f"expected a JSON object, got {type(value).__name__}")


def json_problem(e: json.JSONDecodeError) -> str:
    """'invalid JSON at column 12: expecting ',' delimiter' (the parser's own text without its position)."""
    return f"invalid JSON at column {e.colno}: {e.msg[0].lower()}{e.msg[1:]}"


def _utf8_problem(e: UnicodeDecodeError) -> str:
    return f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at byte {e.start + 1} of the line); save the file as UTF-8"


def _iter_jsonl(path: Path) -> Iterator[tuple[str, RawRow]]:
    # bytes, decoded line by line: a bad byte is one bad row with its line, not a crash of the whole read
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            location = f"{path}:{line_no}"
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield location, UnreadableRow("<utf-8>", _utf8_problem(e))
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line.rstrip("\r\n"))  # a column of this line, not of the next
            except json.JSONDecodeError as e:
                yield location, UnreadableRow("<json>", json_problem(e))
                continue
            yield location, _object_or_problem(value)


def _read_text(path: Path, encoding: str = "utf-8") -> str:
    """The whole file as text, or a DataFileError naming the line of the first non-UTF-8 byte."""
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataFileError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); "
                            "save the file as UTF-8") from None


def _iter_json(path: Path) -> Iterator[tuple[str, RawRow]]:
    try:
        data = json.loads(_read_text(path, "utf-8-sig"))
    except json.JSONDecodeError as e:
        raise DataFileError(f"{path}:{e.lineno}: {json_problem(e)}") from None
    if not isinstance(data, list):
        raise DataFileError(f"{path}: expected a JSON list of row objects, got {type(data).__name__}")
    for i, value in enumerate(data):
        yield f"{path}:item {i}", _object_or_problem(value)


def _iter_csv(path: Path) -> Iterator[tuple[str, RawRow]]:
    # utf-8-sig: spreadsheets often write a BOM that would corrupt the first column name.
    _read_text(path, "utf-8-sig")  # a bad byte: one error with its line, before any row is read
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return
        prev_end = reader.line_num
        for cells in reader:
            # A quoted cell may span lines: report the line where the row starts.
            start, prev_end = prev_end + 1, reader.line_num
            if not cells:
                continue
            location = f"{path}:{start}"
            if len(cells) > len(header):
                yield location, UnreadableRow("<csv>", f"row has {len(cells)} cells but the header has {len(header)}")
                continue
            # Short rows: the missing trailing cells are absent, not empty.
            yield location, dict(zip(header, cells))


def _drop_nulls(row: dict[str, Any]) -> dict[str, Any]:
    # Columnar formats store a missing optional field as null; treat it as absent.
    return {k: v for k, v in row.items() if v is not None}


def _iter_parquet(path: Path) -> Iterator[tuple[str, RawRow]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataFileError(f"{path}: not a readable parquet file ({first}); "
                            "is it another format with a .parquet name?") from None
    for i, row in enumerate(table.to_pylist()):
        yield f"{path}:row {i}", _drop_nulls(row)


def _iter_dataset_dir(path: Path) -> Iterator[tuple[str, RawRow]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise DataFileError(f"{path}: not a datasets save_to_disk directory ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        example = path / next(iter(ds))
        raise DataFileError(f"{path}: holds splits {sorted(ds)}; point at one split's directory, e.g. {example}")
    for i, row in enumerate(ds):
        yield f"{path}:row {i}", _drop_nulls(row)


def _as_dict(record: BaseModel | dict[str, Any]) -> dict[str, Any]:
    return record.model_dump() if isinstance(record, BaseModel) else dict(record)


def write_jsonl(path: str | Path, records: Iterable[BaseModel | dict[str, Any]]) -> Path:
    """Write records (pydantic models or dicts) as one JSON object per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(_as_dict(record), ensure_ascii=False) + "\n")
    return path
