"""One rule for what people may send the feedback service: names, free text, ids, imported pairs.

SQLite stores a NUL byte, PostgreSQL refuses it with an error; terminal escapes and other control
characters would reach admins' terminals and files. So both databases get the same refusal, before any
write: 422 naming the field over HTTP, `file:line: field: problem` for an imported file, one line naming
the option on the CLI.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from rlhf_dist.data.errors import DataValidationError, RowError
from rlhf_dist.data.validate import LoadResult, OnError, load_records

NAME_MAX = 200
# ids and seeds live in INTEGER columns: 32-bit on PostgreSQL, so the same bound on both databases
ID_MAX = 2**31 - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_IN_FREE_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # \t and \n are layout, allowed


def control_problem(value: str, free_text: bool = False) -> str | None:
    """What is wrong with `value`'s characters, or None: control characters (free text: except \\n, \\t)."""
    found = (_CONTROL_IN_FREE_TEXT if free_text else _CONTROL).search(value)
    if found is None:
        return None
    allowed = " (only \\n and \\t are allowed)" if free_text else ""
    return f"control character {found.group()!r} at position {found.start()}{allowed}"


def name_problem(name: str) -> str | None:
    """The one rule for campaign and annotator names: 1-200 printable characters, no '/'."""
    if not name or len(name) > NAME_MAX:
        return f"must be 1-{NAME_MAX} characters, got {len(name)}"
    bad = control_problem(name)
    if bad is not None:
        return bad
    if "/" in name:
        return "must not contain '/' (names appear in URLs and file names)"
    if not name.isprintable():  # format characters (bidi marks, zero-width), non-ASCII spaces
        odd = next(ch for ch in name if not ch.isprintable())
        return f"must be printable; {odd!r} (U+{ord(odd):04X}) is not"
    return None


def check_name(name: str) -> str:
    """A name by the rule (surrounding spaces dropped); ValueError says what is wrong."""
    name = name.strip()
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(problem)
    return name


def _check_single_line(value: str) -> str:
    problem = control_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _check_free_text(value: str) -> str:
    problem = control_problem(value, free_text=True)
    if problem is not None:
        raise ValueError(problem)
    return value


# pydantic types of request bodies and URL parameters
Name = Annotated[str, AfterValidator(check_name)]
Lookup = Annotated[str, Field(min_length=1, max_length=NAME_MAX), AfterValidator(_check_single_line)]
FreeText = Annotated[str, AfterValidator(_check_free_text)]
Id = Annotated[int, Field(ge=1, le=ID_MAX)]

_FREE_TEXT_FIELDS = ("prompt", "response_a", "response_b")
_LINE_FIELDS = ("source_a", "source_b")


def _pair_errors(location: str, pair) -> list[RowError]:  # noqa: ANN001 - a ComparisonPair
    errors = []
    for fields, free in ((_FREE_TEXT_FIELDS, True), (_LINE_FIELDS, False)):
        for name in fields:
            problem = control_problem(getattr(pair, name), free_text=free)
            if problem is not None:
                errors.append(RowError(location, name, problem))
    if pair.seed is not None and not -ID_MAX - 1 <= pair.seed <= ID_MAX:
        errors.append(RowError(location, "seed", f"must be a 32-bit integer, got {pair.seed}"))
    return errors


def load_pairs(path: str, on_error: OnError = "fail") -> LoadResult:
    """load_records(path, "comparison") with the text rule on every row: bad rows are skipped or, with
    on_error="fail", all reported in one DataValidationError (`file:line: field: problem`)."""
    loaded = load_records(path, "comparison", on_error="skip")
    kept, locations, errors = [], [], list(loaded.errors)
    for record, location in zip(loaded.records, loaded.locations):
        bad = _pair_errors(location, record)
        errors.extend(bad)
        if not bad:
            kept.append(record)
            locations.append(location)
    if errors and on_error == "fail":
        raise DataValidationError(errors, source=loaded.source)
    return LoadResult(records=kept, errors=errors, n_rows=loaded.n_rows, source=loaded.source, locations=locations)
