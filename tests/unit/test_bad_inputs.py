"""The bad-input sweep (issue #13): each mistake a user makes gives one clear message naming the file:line
or the option and the bad value, exit code 2 (options) or 3 (data), no traceback, and nothing written.

In-process (`rlhf_dist.cli.main`) so the whole sweep takes seconds: the commands with tiny files the test
writes (they fail before any model is built). Config mistakes: test_bad_config.py.
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




# ---------------------------------------------------------------- data mistakes (exit 3)

def _jsonl(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


LONG = "word " * 200
# name: (file name, bytes, extra argv, substrings of the error ('{f}' = the file's path))
DATA_CASES = {
    "empty file": ("p.jsonl", b"", [], ["{f}: no data rows (the file is empty", "data.pairs_path"]),
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
        ["--data.pairs_format", "ab"], ["{f}: no usable preference pairs", "dropped 1 ties",
                                        "--data.tie_policy half trains on them"]),
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
    if "{f}" in expected[0]:
        assert "data.pairs_path" in block[0]  # the option the file came from
    assert not (tmp_path / "run").exists()  # nothing written: not even a list of the (<= 10, shown) bad rows


def test_missing_data_file(tmp_path, capsys, rm_argv):
    rc, err = _run(capsys, rm_argv(tmp_path / "nope.jsonl", []))
    assert rc == 3
    assert _error_lines(err) == [f"rlhf-dist: {tmp_path / 'nope.jsonl'}: data file not found "
                                 "(data.pairs_path; check the path or the working directory)"]
    assert not (tmp_path / "run").exists()


def test_missing_data_file_with_the_other_splits_left_to_the_demo_data_writes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    rc, err = _run(capsys, ["rm", "configs/tiny.yaml", "--data.pairs_path", str(tmp_path / "typo.jsonl"),
                            "--run.output_dir", str(run)])
    assert rc == 3 and "typo.jsonl: data file not found (data.pairs_path" in err
    assert not run.exists()  # the built-in demo data for the unset splits is not written first


def test_every_bad_row_is_counted_and_nothing_is_written(tmp_path, capsys, rm_argv):
    rows = [GOOD] + [{"prompt": "p", "chosen": "a", "rejected": ""}] * 24 + [{"prompt": "p", "chosen": "x"}]
    path = tmp_path / "many.jsonl"
    path.write_bytes(_jsonl(*rows))
    rc, err = _run(capsys, rm_argv(path, []))
    block = _error_lines(err)
    assert rc == 3
    assert block[0] == f"rlhf-dist: 25 error(s) in 25 row(s) of {path} (data.pairs_path):"
    assert len(block) == 1 + 10 + 1  # header, the first 10 on screen, the rest by reason
    assert block[1].strip() == f"{path}:2: rejected: must not be empty or whitespace-only"
    assert block[-1].strip() == ("... and 15 more: 14 x rejected: must not be empty or whitespace-only; "
                                 "1 x rejected: missing required field")
    assert not (tmp_path / "run").exists()  # no rejected_rows.jsonl either: a failed check writes nothing


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
    argv = rm_argv(tmp_path / "good.jsonl", ["--data.max_length", "64", "--data.max_prompt_length", "8"])
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


# ---------------------------------------------------------------- nothing written before every input is checked

def _nothing_written(out: Path) -> None:
    assert not out.exists(), sorted(str(p.relative_to(out)) for p in out.rglob("*"))


# A user's file that is wrong, for a command whose other data paths are unset (the built-in demo data would
# fill them): the file is read and refused before the demo data, a run dir or a feedback database is written.
BAD_FILES = {
    "blank lines only": ("p.jsonl", b"\n \n"),
    "invalid JSON": ("p.jsonl", b'{"prompt": \n'),
    "a directory": ("d", None),
    "a .txt file": ("p.txt", b"hello\n"),
    "a row without the fields": ("p.jsonl", b'{"foo": "bar"}\n'),
    "a JSON object, not a list": ("p.json", b'{"prompt": "p"}'),
    "not UTF-8": ("p.jsonl", b"\xff\xfe\n"),
}
COMMAND_FILES = [("sft", "data.sft_path"), ("rm", "data.pairs_path"), ("rm", "data.eval_pairs_path"),
                 ("ppo", "data.prompts_path"), ("pipeline", "data.prompts_path"),
                 ("pipeline", "data.eval_prompts_path"), ("pipeline", "data.pairs_path"),
                 ("pipeline", "data.eval_pairs_path"), ("eval", "data.eval_prompts_path"),
                 ("experiment kl-sweep", "data.prompts_path"), ("experiment pooling", "data.prompts_path")]


@pytest.mark.parametrize("bad", list(BAD_FILES))
@pytest.mark.parametrize("command, option", COMMAND_FILES, ids=[f"{c} {o}" for c, o in COMMAND_FILES])
def test_a_bad_file_is_refused_before_the_demo_data_is_written(command, option, bad, tmp_path, capsys, tiny_llama_dir):
    name, content = BAD_FILES[bad]
    path = tmp_path / name
    path.mkdir() if content is None else path.write_bytes(content)
    out = tmp_path / "run"
    extra = ["--policy", str(tiny_llama_dir)] if command == "eval" else []
    rc, err = _run(capsys, [*command.split(), "configs/tiny.yaml", f"--{option}", str(path), *extra,
                            f"--run.output_dir={out}"])
    block = _error_lines(err)
    assert rc == 3, err
    assert option in block[0] and str(path) in "\n".join(block), block  # the option and the file
    _nothing_written(out)


MODEL_OPTIONS = [("sft", "--policy.path", []), ("rm", "--reward_model.path", []), ("ppo", "--policy.path", []),
                 ("ppo", "--reward_model.path", ["--ppo.rewards.0.kind", "model"]), ("pipeline", "--policy.path", []),
                 ("pipeline", "--reward_model.path", []), ("eval", "--reference", []), ("eval", "--reward-model", []),
                 ("experiment kl-sweep", "--policy.path", []), ("experiment pooling", "--policy.path", [])]
NOT_MODELS = {"does not exist": "nope", "a dir without config.json": "empty", "a file": "file.txt"}


@pytest.mark.parametrize("kind", list(NOT_MODELS))
@pytest.mark.parametrize("command, option, extra", MODEL_OPTIONS, ids=[f"{c} {o}" for c, o, _ in MODEL_OPTIONS])
def test_a_model_path_that_is_no_model_is_one_line(command, option, extra, kind, tmp_path, capsys, tiny_llama_dir):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("not a model\n")
    bad = tmp_path / NOT_MODELS[kind]
    out = tmp_path / "run"
    extra = [*extra, *(["--policy", str(tiny_llama_dir)] if command == "eval" else [])]
    rc, err = _run(capsys, [*command.split(), "configs/tiny.yaml", option, str(bad), *extra,
                            f"--run.output_dir={out}"])
    block = _error_lines(err)
    assert rc == 3 and len(block) == 1, err
    assert f"'{bad}'" in block[0] and option.removeprefix("--") in block[0], block[0]
    _nothing_written(out)


def test_a_reward_model_dir_that_was_never_trained_is_refused_by_eval(tmp_path, capsys, tiny_llama_dir):
    rc, err = _run(capsys, ["eval", "configs/tiny.yaml", "--policy", str(tiny_llama_dir), "--reward-model",
                            str(tiny_llama_dir), f"--run.output_dir={tmp_path / 'run'}"])
    assert rc == 3 and _error_lines(err) == [f"rlhf-dist: --reward-model '{tiny_llama_dir}' is not a trained reward "
                                             "model (no scalar_head.json; train one with `rlhf-dist rm`)"]
    _nothing_written(tmp_path / "run")


@pytest.mark.parametrize("argv, option", [
    (["rm", "--data.pairs_path", ""], "data.pairs_path"), (["ppo", "--data.prompts_path", " "], "data.prompts_path"),
    (["sft", "--policy.path", ""], "policy.path"), (["rm", "--reward_model.path", ""], "reward_model.path"),
    (["eval", "--reference", ""], "--reference"), (["eval", "--human", "--baseline", ""], "--baseline"),
], ids=["data path", "data path of spaces", "policy", "reward model", "eval --reference", "eval --human --baseline"])
def test_an_empty_path_option_is_reported_as_empty(argv, option, tmp_path, capsys):
    rc, err = _run(capsys, [*argv, "configs/tiny.yaml", f"--run.output_dir={tmp_path / 'run'}"])
    block = _error_lines(err)
    assert rc == 2 and len(block) == 1 and option in block[0] and "empty" in block[0], err
    assert "save_to_disk" not in block[0]
    _nothing_written(tmp_path / "run")


def _ties(n: int) -> bytes:
    return _jsonl(*[{"prompt": f"p{i}", "response_a": f"a {i}", "response_b": f"b {i}", "preference": 2}
                    for i in range(n)])


def test_an_all_ties_export_suggests_tie_policy_half(tmp_path, capsys):
    path = tmp_path / "export.jsonl"
    path.write_bytes(_ties(40))
    rc, err = _run(capsys, ["rm", "configs/tiny.yaml", "--data.pairs_path", str(path), "--data.pairs_format", "ab",
                            f"--run.output_dir={tmp_path / 'run'}"])
    block = _error_lines(err)
    assert rc == 3 and len(block) == 1, err
    assert "all 40 usable rows are ties" in block[0] and "--data.tie_policy half" in block[0]
    _nothing_written(tmp_path / "run")


def test_tie_policy_half_evaluates_on_the_users_pairs_not_the_built_in_ones(tmp_path, capsys, tiny_llama_dir):
    path = tmp_path / "export.jsonl"
    path.write_bytes(_ties(40))
    out = tmp_path / "run"
    rc, _ = _run(capsys, ["rm", "configs/tiny.yaml", "--data.pairs_path", str(path), "--data.pairs_format", "ab",
                          "--data.tie_policy", "half", "--reward.epochs", "1", "--reward_model.path",
                          str(tiny_llama_dir), f"--run.output_dir={out}"])
    assert rc == 0
    final = json.loads((out / "reward_metrics.json").read_text())["history"][-1]
    assert final["n_pairs"] == 4 == final["n_tie_pairs"]  # every 10th of the user's 40 pairs, held out
    assert not (out / "data").exists()  # the built-in demo data is not what this run uses: never written


def test_too_few_pairs_to_hold_out_says_why_it_uses_the_built_in_ones(tmp_path, capsys, tiny_llama_dir):
    path = tmp_path / "few.jsonl"
    path.write_bytes(_ties(9))
    out = tmp_path / "run"
    rc = main(["rm", "configs/tiny.yaml", "--data.pairs_path", str(path), "--data.pairs_format", "ab",
               "--data.tie_policy", "half", "--reward.epochs", "1", "--reward.train.global_batch_size", "8",
               "--reward.train.micro_batch_size", "8", "--reward_model.path", str(tiny_llama_dir),
               f"--run.output_dir={out}"])
    logged = "".join(capsys.readouterr())  # log lines go through the console (tracking/console.py say)
    assert rc == 0
    assert "too few to hold out" in logged and "set --data.eval_pairs_path" in logged  # the warning says why
    assert json.loads((out / "reward_metrics.json").read_text())["history"][-1]["n_tie_pairs"] == 0
    assert (out / "data" / "eval_pairs.jsonl").is_file()  # the built-in pairs are what it evaluated on


def test_skipped_rows_are_not_saved_when_another_file_is_refused(tmp_path, capsys):
    mixed, bad = tmp_path / "mixed.jsonl", tmp_path / "bad.jsonl"
    mixed.write_bytes(_jsonl(*[{**GOOD, "chosen": f"good {i}"} for i in range(20)], {"prompt": "p"}))
    bad.write_bytes(_jsonl(b'{"prompt": '))
    rc, err = _run(capsys, ["rm", "configs/tiny.yaml", "--data.pairs_path", str(mixed), "--data.on_error", "skip",
                            "--data.eval_pairs_path", str(bad), f"--run.output_dir={tmp_path / 'run'}"])
    assert rc == 3 and "data.eval_pairs_path" in _error_lines(err)[0]
    _nothing_written(tmp_path / "run")  # no rejected_rows.jsonl for the skipped row of the first file


@pytest.mark.parametrize("argv", [
    # an over-long row only the reward model's tokenizer finds: checked before the pipeline's run dir
    ["pipeline", "--data.pairs_path", "{long}", "--data.max_length", "64", "--data.truncation", "error"],
    ["pipeline", "--pipeline.run_sft", "true", "--data.sft_path", "{bad}"],
    # `--resume` with a reward model to train first: no checkpoint is found before that training
    ["ppo", "--ppo.rewards.0.kind", "model", "--resume"],
    ["eval", "--human", "--policy", "{nomodel}"],
], ids=["pipeline over-long pair", "pipeline bad sft file", "ppo --resume with nothing to resume", "eval --human"])
def test_a_late_read_input_is_checked_first(argv, tmp_path, capsys):
    (tmp_path / "long.jsonl").write_bytes(_jsonl({"prompt": "p", "chosen": LONG, "rejected": "b"}))
    (tmp_path / "bad.jsonl").write_bytes(_jsonl(b'{"prompt": '))
    args = [a.format(long=tmp_path / "long.jsonl", bad=tmp_path / "bad.jsonl", nomodel=tmp_path / "nope") for a in argv]
    rc, err = _run(capsys, [*args, "configs/tiny.yaml", f"--run.output_dir={tmp_path / 'run'}"])
    assert rc in (2, 3) and _error_lines(err), err
    _nothing_written(tmp_path / "run")


def test_demo_data_is_written_only_when_a_split_uses_it(tmp_path):
    from rlhf_dist.config import load_config
    from rlhf_dist.data.files import load_prompts, read_splits, resolve_data_files

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(_jsonl({"prompt": "hello"}))
    out = tmp_path / "run"
    files = resolve_data_files(load_config("configs/tiny.yaml", [f"data.prompts_path={prompts}",
                                                                  f"run.output_dir={out}"]))
    cfg = load_config("configs/tiny.yaml")
    assert read_splits(files, {"prompts": lambda p: load_prompts(cfg, p)}) == {"prompts": ["hello"]}
    _nothing_written(out)
    assert files.eval_prompts == out / "data" / "eval_prompts.jsonl" and files.eval_prompts.is_file()
    assert len(list((out / "data").iterdir())) == 8
