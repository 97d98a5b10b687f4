"""The bad-input sweep (issue #13): each mistake a user makes gives one clear message naming the file:line
or the option and the bad value, exit code 2 (config) or 3 (data), and no traceback.

In-process (`rlhf_dist.cli.main`) so the whole sweep takes seconds: `config validate` for config mistakes,
`rm` / `sft` with tiny files the test writes for data mistakes (they fail before any model is built).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf_dist.cli import main

GOOD = {"prompt": "p", "chosen": "good", "rejected": "bad"}


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse-level usage errors exit like argparse does
        rc = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, out + err
    return rc, err


def _error_lines(err: str) -> list[str]:
    """The error message: the 'rlhf-dist: ...' line and the indented lines under it (log lines aside)."""
    lines = err.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("rlhf-dist: ")]
    assert len(starts) == 1, err
    block = [lines[starts[0]]]
    block += [line for line in lines[starts[0] + 1 :] if line.startswith("  ")]
    return block


# ---------------------------------------------------------------- config mistakes (exit 2)

# name: (YAML text or None for no file, extra argv, substrings the one error line must hold)
CONFIG_CASES = {
    "duplicate top-level section": ("ppo:\n  steps: 2\nrun:\n  seed: 1\nppo:\n  steps: 3\n", [],
                                    [":5: duplicate key 'ppo' (first at line 1)"]),
    "duplicate nested key": ("ppo:\n  kl:\n    coef: 0.1\n    coef: 0.2\n", [],
                             [":4: duplicate key 'ppo.kl.coef' (first at line 3)"]),
    "duplicate key in a list item": ("ppo:\n  rewards:\n    - kind: model\n      weight: 1\n      weight: 2\n", [],
                                     [":5: duplicate key 'ppo.rewards[0].weight' (first at line 4)"]),
    "duplicate reward block": ("reward:\n  epochs: 1\nreward:\n  epochs: 2\n", [],
                               [":3: duplicate key 'reward' (first at line 1)"]),
    ".inf entropy_coef": ("ppo:\n  entropy_coef: .inf\n", [], [":2: ppo.entropy_coef", "finite", "inf"]),
    ".nan value_clip": ("ppo:\n  value_clip: .nan\n", [], [":2: ppo.value_clip", "finite", "nan"]),
    ".inf reward weight": ("ppo:\n  rewards:\n    - kind: model\n      weight: .inf\n", [],
                           [":4: ppo.rewards[0].weight", "finite", "inf"]),
    "-.inf kl coef": ("ppo:\n  kl:\n    coef: -.inf\n", [], [":3: ppo.kl.coef", "-inf"]),
    ".nan learning rate": ("reward:\n  train:\n    lr: .nan\n", [], [":3: reward.train.lr", "nan"]),
    "inf on the command line": (None, ["--ppo.entropy_coef", "inf"],
                                ["override --ppo.entropy_coef=inf", "finite", "'inf'"]),
    "nan on the command line": (None, ["--ppo.value_clip=nan"], ["override --ppo.value_clip=nan", "'nan'"]),
    "inf reward weight on the command line": (None, ["--ppo.rewards.0.weight", "inf"],
                                              ["override --ppo.rewards.0.weight=inf", "'inf'"]),
    "override index past the list": (None, ["--ppo.rewards.5.weight", "1"],
                                     ["ppo.rewards.5.weight=1", "index 5 is past the end of 'ppo.rewards'"]),
    "override index past a list the file sets": (
        "ppo:\n  rewards:\n    - kind: model\n    - kind: function\n      function: a:b\n",
        ["--ppo.rewards.2.weight", "1"], ["index 2 is past the end of 'ppo.rewards' (2 item(s)"]),
    "override into a value": (None, ["--ppo.steps.x", "1"], ["override --ppo.steps.x=1", "ppo.steps"]),
    "override with a bad value": (None, ["--ppo.steps", "three"], ["override --ppo.steps=three", "'three'"]),
    "override out of range": (None, ["--ppo.clip_eps", "1.5"], ["override --ppo.clip_eps=1.5", "1.5"]),
    "override without a value": (None, ["--ppo.steps"], ["'--ppo.steps' needs a value"]),
    "unknown override": (None, ["--ppo.stpes", "2"], ["ppo.stpes", "did you mean 'steps'"]),
    "tie_policy half with the pair format": ("data:\n  tie_policy: half\n", [],
                                             ["data.tie_policy 'half' applies to A/B feedback only",
                                              "data.pairs_format is 'pair'"]),
    "min_confidence with the ranked format": ("data:\n  pairs_format: ranked\n  min_confidence: 0.5\n", [],
                                              ["data.min_confidence 0.5 applies to A/B feedback only"]),
    "confidence_as_weight from the command line": (None, ["--data.confidence_as_weight", "true"],
                                                   ["data.confidence_as_weight true applies to A/B"]),
    "rating_min_gap with the ab format": ("data:\n  pairs_format: ab\n  rating_min_gap: 0.5\n", [],
                                          ["data.rating_min_gap 0.5 applies to data.pairs_format 'rating'"]),
    "builtin:nope policy": ("policy:\n  path: builtin:nope\n", [],
                            [":2: policy.path: unknown built-in model 'builtin:nope'", "builtin:tiny-llama"]),
    "builtin:nope reward model from the command line": (None, ["--reward_model.path", "builtin:nope"],
                                                        ["override --reward_model.path=builtin:nope",
                                                         "unknown built-in model"]),
    "unknown key with a suggestion": ("ppo:\n  setps: 3\n", [], [":2: ppo.setps: unknown option", "'steps'"]),
    "wrong type in the file": ("ppo:\n  steps: three\n", [], [":2: ppo.steps", "'three'"]),
    "bad choice": ("data:\n  on_error: ignore\n", [], [":2: data.on_error", "'ignore'"]),
    "invalid YAML": ("ppo:\n  steps: [1, 2\nrun: {}\n", [], ["invalid YAML"]),
    "top level is a list": ("- ppo\n- run\n", [], [":1: the top level must be a mapping"]),
}


@pytest.mark.parametrize("name", list(CONFIG_CASES))
def test_config_mistake(name, tmp_path, capsys):
    text, extra, expected = CONFIG_CASES[name]
    argv = ["config", "validate"]
    if text is not None:
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        argv.append(str(path))
    before = sorted(tmp_path.rglob("*"))
    rc, err = _run(capsys, argv + extra)
    block = _error_lines(err)
    assert rc == 2, err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written
    assert len(block) == 1, err  # one problem, one line
    for piece in expected:
        assert piece in block[0], (piece, block[0])
    if text is not None and "duplicate" in name:
        assert str(tmp_path / "bad.yaml") in block[0]


def test_config_file_missing_and_not_utf8(tmp_path, capsys):
    rc, err = _run(capsys, ["config", "validate", str(tmp_path / "nope.yaml")])
    assert rc == 2 and _error_lines(err) == [
        f"rlhf-dist: invalid config: {tmp_path / 'nope.yaml'}: config file not found"]
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"run:\n  name: caf\xe9\n")
    rc, err = _run(capsys, ["config", "validate", str(path)])
    assert rc == 2 and f"{path}:2: not UTF-8 text (byte 0xe9)" in _error_lines(err)[0]


def test_unknown_log_level(capsys):
    rc, err = _run(capsys, ["--log-level", "LOUD", "config", "validate"])
    assert rc == 2
    assert err.strip() == ("rlhf-dist: --log-level 'LOUD' is not a log level "
                           "(use one of DEBUG, INFO, WARNING, ERROR, CRITICAL)")


# ---------------------------------------------------------------- data mistakes (exit 3)

def _jsonl(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


LONG = "word " * 200
# name: (file name, bytes, extra argv, substrings of the error ('{f}' = the file's path))
DATA_CASES = {
    "empty file": ("p.jsonl", b"", [], ["{f}: no data rows (the file is empty)"]),
    "blank lines only": ("p.jsonl", b"\n  \n\n", [], ["{f}: no data rows"]),
    "chosen == rejected": ("p.jsonl", _jsonl(GOOD, {"prompt": "p", "chosen": "same", "rejected": "same"}), [],
                           ["{f}:2: <row>: chosen and rejected are the same text ('same')"]),
    "over-long row": ("p.jsonl", _jsonl(GOOD, GOOD, {"prompt": "p", "chosen": LONG, "rejected": "b"}),
                      ["--data.max_length", "64", "--data.max_prompt_length", "8"],
                      ["{f}:3: chosen: ", "exceeds max_length 64"]),
    "over-long prompt with truncation error": (
        "p.jsonl", _jsonl({"prompt": LONG, "chosen": "a", "rejected": "b"}),
        ["--data.max_length", "64", "--data.max_prompt_length", "8", "--data.truncation", "error"],
        ["{f}:1: prompt: ", "exceeds max_length 64"]),
    "invalid JSON": ("p.jsonl", _jsonl(GOOD, b'{"prompt": "p", "chosen": "a" "rejected": "b"}'), [],
                     ["{f}:2: <json>: invalid JSON at column 31: expecting ',' delimiter"]),
    "truncated JSON line": ("p.jsonl", _jsonl(b'{"prompt": '), [], ["{f}:1: <json>: invalid JSON at column 12"]),
    "invalid UTF-8": ("p.jsonl", _jsonl(GOOD, b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}'), [],
                      ["{f}:2: <utf-8>: not UTF-8 text (byte 0xe9"]),
    "text file named .parquet": ("p.parquet", b"prompt,chosen,rejected\np,a,b\n", [],
                                 ["{f}: not a readable parquet file", "another format"]),
    "unsupported extension": ("p.txt", b"hello\n", [], ["{f}: unsupported data file extension '.txt'"]),
    "JSON file with a syntax error": ("p.json", b'[\n  {"prompt": "p",\n   "chosen": }\n]\n', [],
                                      ["{f}:3: invalid JSON at column 14"]),
    "JSON file that is not a list": ("p.json", b'{"prompt": "p"}', [], ["{f}: expected a JSON list of row objects"]),
    "JSON file not UTF-8": ("p.json", b'[\n{"prompt": "\xff"}]', [], ["{f}:2: not UTF-8 text (byte 0xff)"]),
    "CSV not UTF-8": ("p.csv", b"prompt,chosen,rejected\np,a,b\np,\xe9,b\n", [], ["{f}:3: not UTF-8 text (byte 0xe9)"]),
    "CSV row with too many cells": ("p.csv", b"prompt,chosen,rejected\np,a,b,c\n", [],
                                    ["{f}:2: <csv>: row has 4 cells but the header has 3"]),
    "missing field": ("p.jsonl", _jsonl({"prompt": "p", "chosen": "a"}), [],
                      ["{f}:1: rejected: missing required field"]),
    "blank response": ("p.jsonl", _jsonl({"prompt": "p", "chosen": "  ", "rejected": "b"}), [],
                       ["{f}:1: chosen: must not be empty or whitespace-only"]),
    "number as text": ("p.jsonl", _jsonl({"prompt": 7, "chosen": "a", "rejected": "b"}), [],
                       ["{f}:1: prompt: expected a string, got int 7"]),
    "zero weight": ("p.jsonl", _jsonl({**GOOD, "weight": 0}), [], ["{f}:1: weight: ", "got 0"]),
    "target above 1": ("p.jsonl", _jsonl({**GOOD, "target": 1.5}), [], ["{f}:1: target: ", "got 1.5"]),
    "NaN weight": ("p.jsonl", _jsonl(b'{"prompt": "p", "chosen": "a", "rejected": "b", "weight": NaN}'), [],
                   ["{f}:1: weight: must be a finite number, got nan"]),
    "unknown column": ("p.jsonl", _jsonl({**GOOD, "score": 1}), [], ["{f}:1: score: unknown column"]),
    "row not an object": ("p.jsonl", _jsonl([1, 2]), [], ["{f}:1: <json>: expected a JSON object, got list"]),
    "A/B preference out of range": (
        "ab.jsonl", _jsonl({"prompt": "p", "response_a": "a", "response_b": "b", "preference": 3}),
        ["--data.pairs_format", "ab"], ["{f}:1: preference: must be 0 (A), 1 (B) or 2 (tie), got 3"]),
    "A/B confidence above 1": (
        "ab.jsonl", _jsonl({"prompt": "p", "response_a": "a", "response_b": "b", "preference": 0, "confidence": 2}),
        ["--data.pairs_format", "ab"], ["{f}:1: confidence: ", "got 2"]),
    "A/B only ties, dropped": (
        "ab.jsonl", _jsonl({"prompt": "p", "response_a": "a", "response_b": "b", "preference": 2}),
        ["--data.pairs_format", "ab"], ["{f}: no usable preference pairs", "dropped 1 ties"]),
    "A/B identical responses only": (
        "ab.jsonl", _jsonl({"prompt": "p", "response_a": "a", "response_b": "a", "preference": 0}),
        ["--data.pairs_format", "ab"], ["{f}: no usable preference pairs", "the same text"]),
    "ranking with a gap": ("r.jsonl", _jsonl({"prompt": "p", "responses": ["a", "b"], "ranking": [0, 2]}),
                           ["--data.pairs_format", "ranked"], ["{f}:1: ranking: must give each response its rank"]),
    "ranking of the wrong length": ("r.jsonl", _jsonl({"prompt": "p", "responses": ["a", "b"], "ranking": [0]}),
                                    ["--data.pairs_format", "ranked"], ["{f}:1: ranking: has 1 ranks for 2 responses"]),
    "rating that is text": ("r.csv", b"prompt,response,reward\np,a,high\n", ["--data.pairs_format", "rating"],
                            ["{f}:2: reward: expected a number, got str 'high'"]),
    "rating that is inf": ("r.jsonl", _jsonl(b'{"prompt": "p", "response": "a", "reward": Infinity}'),
                           ["--data.pairs_format", "rating"], ["{f}:1: reward: must be a finite number, got inf"]),
    "skip mode with every row bad": ("p.jsonl", _jsonl({"prompt": "p"}, [1]), ["--data.on_error", "skip"],
                                     ["{f}: no usable preference pairs", "kept 0 of 2 rows"]),
    "not a datasets directory": ("ds", None, [], ["{f}: not a datasets save_to_disk directory"]),
    "fewer pairs than one global batch": ("p.jsonl", _jsonl(GOOD, {**GOOD, "chosen": "fine"}),
                                          ["--reward.train.global_batch_size", "4",
                                           "--reward.train.micro_batch_size", "2"],
                                          ["2 training pairs is fewer than one global batch "
                                           "(reward.train.global_batch_size = 4)"]),
}


@pytest.fixture()
def rm_argv(tmp_path, tiny_llama_dir):
    """`rm` with every data path set (no demo data is written) and the local tiny model."""
    good = tmp_path / "good.jsonl"
    good.write_bytes(_jsonl(GOOD, GOOD))
    sft = tmp_path / "sft.jsonl"
    sft.write_bytes(_jsonl({"prompt": "p", "response": "r"}))
    run = tmp_path / "run"

    def argv(pairs: Path, extra: list[str]) -> list[str]:
        return ["rm", "--data.pairs_path", str(pairs), "--data.eval_pairs_path", str(good),
                "--data.sft_path", str(sft), "--data.prompts_path", str(sft), "--data.eval_prompts_path", str(sft),
                "--reward_model.path", str(tiny_llama_dir), "--run.output_dir", str(run), *extra]

    return argv


@pytest.mark.parametrize("name", list(DATA_CASES))
def test_data_mistake(name, tmp_path, capsys, rm_argv):
    file_name, content, extra, expected = DATA_CASES[name]
    path = tmp_path / file_name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    rc, err = _run(capsys, rm_argv(path, extra))
    block = _error_lines(err)
    assert rc == 3, err
    text = "\n".join(block)
    for piece in expected:
        assert piece.format(f=path) in text, (piece, text)
    if "{f}:" not in expected[0]:  # a whole-file problem: one line
        assert len(block) == 1, block
    # nothing but the list of rejected rows is written to the run dir before the data is valid
    run = tmp_path / "run"
    assert not run.exists() or {p.name for p in run.iterdir()} <= {"rejected_rows.jsonl"}


def test_missing_data_file(tmp_path, capsys, rm_argv):
    rc, err = _run(capsys, rm_argv(tmp_path / "nope.jsonl", []))
    assert rc == 3
    assert _error_lines(err) == [f"rlhf-dist: {tmp_path / 'nope.jsonl'}: data file not found "
                                 "(check the data.*_path option or the working directory)"]


def test_missing_data_file_with_the_other_splits_left_to_the_demo_data_writes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    rc, err = _run(capsys, ["rm", "configs/tiny.yaml", "--data.pairs_path", str(tmp_path / "typo.jsonl"),
                            "--run.output_dir", str(run)])
    assert rc == 3 and "typo.jsonl: data file not found (data.pairs_path" in err
    assert not run.exists()  # the built-in demo data for the unset splits is not written first


def test_every_bad_row_is_counted_and_saved_with_its_reason(tmp_path, capsys, rm_argv):
    rows = [GOOD] + [{"prompt": "p", "chosen": "a", "rejected": ""}] * 24 + [{"prompt": "p", "chosen": "x"}]
    path = tmp_path / "many.jsonl"
    path.write_bytes(_jsonl(*rows))
    rc, err = _run(capsys, rm_argv(path, []))
    block = _error_lines(err)
    assert rc == 3
    assert block[0] == f"rlhf-dist: 25 error(s) in 25 row(s) of {path}:"
    assert len(block) == 1 + 10 + 1  # header, the first 10 on screen, the total
    assert block[1].strip() == f"{path}:2: rejected: must not be empty or whitespace-only"
    saved = tmp_path / "run" / "rejected_rows.jsonl"
    assert block[-1].strip() == f"... and 15 more (all 25 in {saved})"
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    assert len(lines) == 25 and lines[-1] == {"what": "train pairs", "location": f"{path}:26",
                                              "field": "rejected", "problem": "missing required field"}


def test_skip_mode_logs_the_count_per_reason(tmp_path, caplog, rm_argv):
    rows = [GOOD, {"prompt": "p", "chosen": "a", "rejected": ""}, {"prompt": "p", "chosen": "b", "rejected": " "},
            {"prompt": "p", "chosen": "same", "rejected": "same"}]
    path = tmp_path / "p.jsonl"
    path.write_bytes(_jsonl(*rows))
    from rlhf_dist.config import load_config
    from rlhf_dist.data.files import load_encoded_pairs
    from rlhf_dist.models import load_tokenizer

    argv = rm_argv(path, ["--data.on_error", "skip"])
    overrides = [f"{argv[i][2:]}={argv[i + 1]}" for i in range(1, len(argv), 2)]
    cfg = load_config(None, overrides)
    with caplog.at_level("WARNING", logger="rlhf_dist.data.files"):
        kept = load_encoded_pairs(cfg, load_tokenizer(cfg.reward_model.path), path, "pair", "train pairs")
    assert len(kept) == 1
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"][0]
    assert "skipped 3 bad row(s)" in warning
    assert ("2 x rejected: must not be empty or whitespace-only; "
            "1 x <row>: chosen and rejected are the same text") in warning
    assert len((tmp_path / "run" / "rejected_rows.jsonl").read_text().splitlines()) == 3


def test_sft_over_long_row_names_its_line(tmp_path, capsys, rm_argv):
    path = tmp_path / "sft_bad.jsonl"
    path.write_bytes(_jsonl({"prompt": "p", "response": "r"}, {"prompt": "p", "response": LONG}))
    argv = rm_argv(tmp_path / "unused.jsonl", ["--data.max_length", "64", "--data.max_prompt_length", "8"])
    argv[0] = "sft"
    argv[argv.index("--data.sft_path") + 1] = str(path)
    argv[argv.index("--reward_model.path")] = "--policy.path"
    rc, err = _run(capsys, argv)
    assert rc == 3
    assert f"{path}:2: response: " in "\n".join(_error_lines(err))


@pytest.mark.parametrize("where", ["is_a_file", "under_a_file"])
def test_output_dir_that_is_a_file(where, tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory\n")
    out = blocker if where == "is_a_file" else blocker / "run"
    rc, err = _run(capsys, ["rm", "configs/tiny.yaml", f"--run.output_dir={out}"])
    assert rc == 2 and len(_error_lines(err)) == 1, err
    assert "run.output_dir" in err and str(out if where == "is_a_file" else blocker) in err
    assert blocker.read_text() == "not a directory\n"  # nothing written


def test_debug_shows_the_traceback(tmp_path):
    from rlhf_dist.cli import main
    from rlhf_dist.config import ConfigError

    with pytest.raises(ConfigError, match="ppo.steps"):
        main(["--debug", "config", "validate", "configs/tiny.yaml", "--ppo.steps=-1"])


@pytest.mark.parametrize("argv", [
    ["rm", "--data.pairs_path", "{empty}"],
    ["sft", "--data.sft_path", "{empty}"],
    ["rm", "--reward_model.path", "{nomodel}"],
    ["sft", "--policy.path", "{nomodel}"],
    ["ppo", "--policy.path", "{nomodel}"],
], ids=["rm empty pairs", "sft empty file", "rm model dir without config.json", "sft model dir without config.json",
        "ppo model dir without config.json"])
def test_empty_file_or_missing_model_writes_nothing(argv, tmp_path, capsys):
    from rlhf_dist.cli import main

    (tmp_path / "empty.jsonl").touch()
    (tmp_path / "nomodel").mkdir()
    out = tmp_path / "new-run"
    args = [a.format(empty=tmp_path / "empty.jsonl", nomodel=tmp_path / "nomodel") for a in argv]
    assert main([*args, "-c", "configs/tiny.yaml", f"--run.output_dir={out}"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and (argv[1].removeprefix("--") in err[0])  # one line naming the option
    assert not out.exists()
