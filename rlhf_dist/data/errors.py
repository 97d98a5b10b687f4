"""Data errors: one problem per bad row (`RowError`), all of them in one exception, and file-level
problems (missing, empty, unreadable file) as one line. The CLI exits 3 on any of them."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

MAX_LISTED_ERRORS = 10  # on screen, the rest counted per reason; 'skip' mode saves each (write_rejected_rows)


@dataclass(frozen=True)
class RowError:
    """One problem with one field of one row."""

    location: str
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.location}: {self.field}: {self.problem}"

    @property
    def reason(self) -> str:
        """The problem without the row's own value, so equal problems count together."""
        return f"{self.field}: {self.problem.split(', got ')[0]}"


class DataValidationError(ValueError):
    """Raised when rows fail validation; ``errors`` holds every problem found."""

    def __init__(self, errors: list[RowError], source: str = "data", saved_to: Path | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        self.saved_to = saved_to
        n_rows = len({e.location for e in self.errors})
        lines = [f"{len(self.errors)} error(s) in {n_rows} row(s) of {source}:"]
        lines += [f"  {e}" for e in self.errors[:MAX_LISTED_ERRORS]]
        if len(self.errors) > MAX_LISTED_ERRORS:
            rest = self.errors[MAX_LISTED_ERRORS:]
            more = f"  ... and {len(rest)} more"  # by reason: a failed check writes no file to list them in
            lines.append(more + (f" (all {len(self.errors)} in {saved_to})" if saved_to
                                 else f": {reason_counts(rest)}"))
        elif saved_to:
            lines.append(f"  (also in {saved_to})")
        super().__init__("\n".join(lines))


class DataFileError(DataValidationError):
    """A whole data file is unusable (missing, empty, not the format its name says): one line."""

    def __init__(self, message: str) -> None:
        self.errors, self.source, self.saved_to = [], "", None
        ValueError.__init__(self, message)


class DataFileNotFound(DataFileError, FileNotFoundError):
    """A data path that does not exist."""


def naming_option(err: DataValidationError, option: str) -> DataValidationError:
    """The same problem, its message naming the option the file came from (`data.pairs_path: p.txt: ...`;
    a list of bad rows: `... of p.jsonl (data.pairs_path):`). Unchanged when it names the option already."""
    if option in str(err).split("\n")[0]:
        return err
    if err.errors:
        return DataValidationError(err.errors, source=f"{err.source} ({option})", saved_to=err.saved_to)
    return type(err)(f"{option}: {err}")


def reason_counts(errors: list[RowError]) -> str:
    """'3 x chosen: must not be empty; 1 x <json>: invalid JSON' (most frequent first)."""
    counts = Counter(e.reason for e in errors)
    return "; ".join(f"{n} x {reason}" for reason, n in counts.most_common())


def write_rejected_rows(path: Path, errors: list[RowError], what: str) -> Path:
    """Append one JSON line per problem ({what, location, field, problem}) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for e in errors:
            f.write(json.dumps({"what": what, "location": e.location, "field": e.field, "problem": e.problem},
                               ensure_ascii=False) + "\n")
    return path
