"""Every record kind round-trips through JSONL, JSON, CSV, parquet and a datasets directory."""

import csv
import json

import datasets
import pytest

from rlhf_dist.data import demo
from rlhf_dist.data.readers import UnreadableRow, iter_raw_rows, write_jsonl
from rlhf_dist.data.records import ABFeedback, PreferencePair
from rlhf_dist.data.validate import load_records

SAMPLES = {
    "sft": lambda: demo.demo_sft(4, seed=1),
    "prompt": lambda: demo.demo_prompts(4, seed=1),
    "pair": lambda: demo.demo_pairs(4, seed=1, hard_fraction=0.5)
    + [PreferencePair(prompt="p", chosen="c", rejected="r", weight=0.25, target=0.5)],
    "ab": lambda: demo.demo_ab_feedback(6, seed=1)
    + [ABFeedback(prompt="p", response_a="a", response_b="b", preference=2, confidence=0.0)],
    "ranked": lambda: demo.demo_ranked(4, seed=1),
    "rating": lambda: demo.demo_ratings(4, seed=1),
}


def _write_json(path, rows):
    path.write_text(json.dumps(rows))


def _write_csv(path, rows):
    # Lists are stored as JSON text in CSV cells.
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})


def _write_parquet(path, rows):
    datasets.Dataset.from_list(rows).to_parquet(str(path))


def _write_hf_dir(path, rows):
    datasets.Dataset.from_list(rows).save_to_disk(str(path))


WRITERS = {
    "data.jsonl": lambda p, rows: write_jsonl(p, rows),
    "data.json": _write_json,
    "data.csv": _write_csv,
    "data.parquet": _write_parquet,
    "hf_dir": _write_hf_dir,
}


@pytest.mark.parametrize("name", list(WRITERS))
@pytest.mark.parametrize("kind", list(SAMPLES))
def test_round_trip(tmp_path, kind, name):
    records = SAMPLES[kind]()
    path = tmp_path / name
    WRITERS[name](path, [r.model_dump() for r in records])
    result = load_records(path, kind)
    assert result.records == records
    assert result.n_rows == len(records) and result.errors == []


def test_jsonl_locations_skip_blank_lines_and_report_bad_json(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"prompt": "a"}\n\n   \n{"prompt": \n[1, 2]\n{"prompt": "b"}\n')
    rows = list(iter_raw_rows(path))
    assert [loc for loc, _ in rows] == [f"{path}:1", f"{path}:4", f"{path}:5", f"{path}:6"]
    assert rows[0][1] == {"prompt": "a"}
    assert isinstance(rows[1][1], UnreadableRow) and rows[1][1].problem == "invalid JSON at column 12: expecting value"
    assert rows[2][1] == UnreadableRow("<json>", "expected a JSON object, got list")


def test_csv_locations_count_header_and_multiline_cells(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('prompt,response\na,b\n\n"multi\nline",c\nd,e,f\ng\n')
    rows = list(iter_raw_rows(path))
    assert [loc.rsplit(":", 1)[1] for loc, _ in rows] == ["2", "4", "6", "7"]
    assert rows[1][1] == {"prompt": "multi\nline", "response": "c"}
    assert rows[2][1] == UnreadableRow("<csv>", "row has 3 cells but the header has 2")
    assert rows[3][1] == {"prompt": "g"}  # short row: missing cell is absent


def test_json_parquet_and_dir_locations(tmp_path):
    rows = [{"prompt": "a"}, {"prompt": "b"}]
    _write_json(tmp_path / "x.json", rows)
    _write_parquet(tmp_path / "x.parquet", rows)
    _write_hf_dir(tmp_path / "d", rows)
    assert [loc for loc, _ in iter_raw_rows(tmp_path / "x.json")][1] == f"{tmp_path / 'x.json'}:item 1"
    assert [loc for loc, _ in iter_raw_rows(tmp_path / "x.parquet")][1] == f"{tmp_path / 'x.parquet'}:row 1"
    assert [loc for loc, _ in iter_raw_rows(tmp_path / "d")][0] == f"{tmp_path / 'd'}:row 0"


def test_unknown_extension_and_missing_file(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("hello")
    with pytest.raises(ValueError, match=r"data\.txt: unsupported data file extension '\.txt'"):
        iter_raw_rows(path)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        iter_raw_rows(tmp_path / "nope.jsonl")


def test_json_file_must_hold_a_list(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"prompt": "a"}')
    with pytest.raises(ValueError, match="expected a JSON list"):
        list(iter_raw_rows(path))


def test_dataset_dict_dir_asks_for_a_split(tmp_path):
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"prompt": "a"}])}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match=r"holds splits \['train'\]"):
        list(iter_raw_rows(tmp_path / "dd"))
