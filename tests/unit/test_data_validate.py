"""Validation errors name file, line and field; all bad rows are reported; skip mode counts."""

import json

import pytest

from rlhf_dist.data.validate import (
    DataValidationError,
    LoadResult,
    RowError,
    load_records,
    validate_rows,
)


def _write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


AB_OK = {"prompt": "p", "response_a": "a", "response_b": "b", "preference": 0}


@pytest.fixture
def bad_ab(tmp_path):
    return _write_lines(
        tmp_path / "bad.jsonl",
        [
            AB_OK,
            {**AB_OK, "preference": 1, "confidence": 0.5},
            {**AB_OK, "preference": 3},
            {**AB_OK, "prompt": 7, "preference": True},
            "{not json",
            {**AB_OK, "response_b": "  "},
            {**AB_OK, "preference": 2},
        ],
    )


def test_fail_mode_reports_every_bad_row_with_file_line_field(bad_ab):
    with pytest.raises(DataValidationError) as exc:
        load_records(bad_ab, "ab")
    text = str(exc.value)
    assert f"{bad_ab}:3: preference: must be 0 (A), 1 (B) or 2 (tie), got 3" in text
    assert "bad.jsonl:4: prompt: expected a string, got int 7" in text
    assert "bad.jsonl:4: preference: must be 0 (A), 1 (B) or 2 (tie), got True" in text
    assert "bad.jsonl:5: <json>: invalid JSON at column" in text
    assert "bad.jsonl:6: response_b: must not be empty or whitespace-only" in text
    assert "5 error(s) in 4 row(s)" in text
    locations = [e.location.rsplit(":", 1)[1] for e in exc.value.errors]
    assert locations == ["3", "4", "4", "5", "6"]


def test_skip_mode_keeps_valid_rows_and_counts(bad_ab):
    result = load_records(bad_ab, "ab", on_error="skip")
    assert [r.preference for r in result.records] == [0, 1, 2]
    assert result.n_rows == 7 and result.n_skipped == 4 and len(result.errors) == 5
    assert result.summary() == f"{bad_ab}: kept 3 of 7 rows, skipped 4"


def test_unknown_column_is_error_unless_allowed(tmp_path):
    path = _write_lines(tmp_path / "sft.jsonl", [{"prompt": "p", "response": "r", "source": "web"}])
    with pytest.raises(DataValidationError, match=r"sft\.jsonl:1: source: unknown column \(expected: prompt, response"):
        load_records(path, "sft")
    assert load_records(path, "sft", allow_extra=True).records[0].response == "r"


def test_missing_field_and_nested_list_locations(tmp_path):
    path = _write_lines(
        tmp_path / "r.jsonl",
        [{"prompt": "p", "responses": ["a", 5], "ranking": [0, 1]}, {"prompt": "p", "responses": ["a", "b"]}],
    )
    errors = load_records(path, "ranked", on_error="skip").errors
    assert [str(e) for e in errors] == [
        f"{path}:1: responses[1]: expected a string, got int 5",
        f"{path}:2: ranking: missing required field",
    ]


def test_csv_cells_are_typed_and_errors_use_csv_lines(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(
        "prompt,chosen,rejected,weight,target\n"
        "p,c,r,0.5,\n"  # empty optional cell -> default target
        "p,c,r,abc,1\n"
        "p,c,,1,2\n"
    )
    result = load_records(path, "pair", on_error="skip")
    assert result.records[0].weight == 0.5 and result.records[0].target == 1.0
    assert [str(e) for e in result.errors] == [
        f"{path}:3: weight: expected a number, got str 'abc'",
        f"{path}:4: rejected: must not be empty or whitespace-only",
        f"{path}:4: target: input should be less than or equal to 1, got 2.0",
    ]


def test_csv_ranked_lists_and_bad_list_cell(tmp_path):
    path = tmp_path / "ranked.csv"
    path.write_text('prompt,responses,ranking\np,"[""a"", ""b""]","[1, 0]"\np,"[""a"", ""b""]",first\n')
    result = load_records(path, "ranked", on_error="skip")
    assert result.records[0].responses == ["a", "b"] and result.records[0].ranking == [1, 0]
    assert str(result.errors[0]) == f"{path}:3: ranking: expected a list, got str 'first'"


def test_message_lists_first_10_and_total():
    errors = [RowError(f"f.jsonl:{i}", "prompt", "missing required field") for i in range(1, 26)]
    text = str(DataValidationError(errors, source="f.jsonl"))
    assert text.splitlines()[0] == "25 error(s) in 25 row(s) of f.jsonl:"
    assert "f.jsonl:10: prompt" in text and "f.jsonl:11: prompt" not in text
    assert text.splitlines()[-1].strip() == "... and 15 more: 15 x prompt: missing required field"  # by reason
    assert isinstance(DataValidationError(errors), ValueError)


def test_validate_rows_in_memory_and_bad_on_error():
    rows = [("mem:0", {"prompt": "a"}), ("mem:1", {"prompt": ""})]
    result = validate_rows(rows, "prompt", on_error="skip", source="mem")
    assert isinstance(result, LoadResult) and len(result.records) == 1
    assert str(result.errors[0]) == "mem:1: prompt: must not be empty or whitespace-only"
    with pytest.raises(ValueError, match="on_error"):
        validate_rows(rows, "prompt", on_error="ignore")
