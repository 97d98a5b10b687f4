"""CLI shape: every command that takes a config accepts it as CONFIG or -c/--config, and says so in --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_dist.cli import _load, build_parser, main
from rlhf_dist.config.cli_args import claim_config, join_dotted_overrides

TINY = "configs/tiny.yaml"
REPO = Path(__file__).resolve().parents[2]
# Every subcommand that reads a config, with the other arguments it needs to parse.
COMMANDS = {
    "config show": ["config", "show"],
    "config validate": ["config", "validate"],
    "sft": ["sft"], "rm": ["rm"], "ppo": ["ppo"], "dpo": ["dpo"], "pipeline": ["pipeline"], "demo": ["demo"],
    "eval": ["eval"], "report": ["report"],
    "experiment kl-sweep": ["experiment", "kl-sweep"],
    "experiment active-selection": ["experiment", "active-selection"],
    "plan": ["plan"], "submit": ["submit"],
    "feedback serve": ["feedback", "serve"],
    "feedback import": ["feedback", "import", "pairs.jsonl", "--campaign", "r1"],
    "feedback generate": ["feedback", "generate", "--policy", "p", "--prompts", "q.jsonl", "--campaign", "r1"],
    "feedback annotator add": ["feedback", "annotator", "add", "alice"],
    "feedback annotator list": ["feedback", "annotator", "list"],
    "feedback annotator disable": ["feedback", "annotator", "disable", "alice"],
    "feedback annotator rotate": ["feedback", "annotator", "rotate", "alice"],
    "feedback export": ["feedback", "export", "votes.jsonl", "--campaign", "r1"],
    "feedback stats": ["feedback", "stats"],
}
NO_CONFIG = {"status", "logs", "stop", "pull"}  # talk to a cluster by job id only; pull reads a run dir or URI
FORMS = {
    "positional first": lambda cmd: cmd + [TINY, "--ppo.steps", "3"],
    "positional last": lambda cmd: cmd + ["--ppo.steps", "3", TINY],
    "-c": lambda cmd: cmd + ["-c", TINY, "--ppo.steps", "3"],
    "--config=": lambda cmd: cmd + ["--ppo.steps=3", f"--config={TINY}"],
    "both, same file": lambda cmd: cmd + [TINY, "--config", f"./{TINY}", "--ppo.steps", "3"],
}


def parse(argv: list[str]):
    parser, _ = build_parser()
    args, extra = parser.parse_known_args(join_dotted_overrides(argv))
    return args, claim_config(parser, args, extra)  # what main() does


def test_every_config_command_is_covered():
    parser, handlers = build_parser()
    assert set(handlers) - NO_CONFIG == {c.split()[0] for c in COMMANDS}


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_config_positional_or_option_parse_the_same(command, form):
    args, extra = parse(FORMS[form](COMMANDS[command]))
    assert Path(args.config).resolve() == Path(TINY).resolve()
    cfg = _load(args, extra)
    assert cfg.run.name == "tiny" and cfg.ppo.steps == 3  # the file and the override, whatever the order


def test_no_config_means_defaults_and_overrides_still_apply():
    args, extra = parse(["ppo", "--ppo.steps", "4"])
    assert args.config is None and _load(args, extra).ppo.steps == 4


@pytest.mark.parametrize("command", ["ppo", "plan", "feedback stats", "config validate"])
def test_two_different_configs_is_one_error_line(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(COMMANDS[command] + [TINY, "-c", "configs/llama8b-1node-8gpu.yaml"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rlhf-dist: config given twice: 'configs/tiny.yaml' and 'configs/llama8b-1node-8gpu.yaml' "
                   "(pass one, as CONFIG or as -c/--config)"]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_names_main_options_defaults_and_reference(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(COMMANDS[command][:len(command.split())] + ["--help"])  # the words of the (sub)command
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "[CONFIG]" in out and "-c CONFIG, --config CONFIG" in out
    assert "without a config:" in out and "docs/config-reference.md" in out and "rlhf-dist config schema" in out


def test_stage_help_lists_options_with_their_defaults(capsys, monkeypatch, tmp_path):
    for argv, expected in ((["ppo", "--help"], ["--ppo.kl.coef", "[0.05]", "the schema defaults", "[runs/rlhf]"]),
                           (["demo", "--help"], ["presets/demo.yaml", "[builtin:smollm2-135m-instruct]",
                                                 "[runs/demo]", "[12]"])):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        assert all(text in out for text in expected), (argv, out)
    for command in ("pipeline", "demo"):  # issue #26: running again resumes; --fresh starts clean
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--fresh" in capsys.readouterr().out
    # --fresh cannot move a storage URI's files: one line, exit 2, nothing written (not even a staging dir)
    monkeypatch.setenv("RLHF_DIST_STAGING", str(tmp_path))
    assert main(["pipeline", "configs/tiny.yaml", "--fresh", "--run.output_dir", "s3://bucket/never"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "rlhf-dist: invalid config: --fresh: run.output_dir s3://bucket/never is a storage URI, whose files --fresh "
        "does not move: give a new run.output_dir instead"]
    assert list(tmp_path.iterdir()) == []


def test_override_value_is_not_taken_for_config():
    assert join_dotted_overrides(["plan", "--ppo.steps", "2", "c.yaml", "--cluster", "nodes=1", "--a.b=1"]) == [
        "plan", "--ppo.steps=2", "c.yaml", "--cluster", "nodes=1", "--a.b=1"]


def test_cli_process_positional_and_conflict():
    """Two real processes: the entry point end to end (CLI start costs seconds, so only these)."""
    run = [sys.executable, "-m", "rlhf_dist.cli"]
    ok = subprocess.run(run + ["config", "show", TINY, "--ppo.kl.coef", "0.3"], cwd=REPO, capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "coef: 0.3" in ok.stdout and "name: tiny" in ok.stdout
    bad = subprocess.run(run + ["rm", TINY, "--config", "configs/llama8b-1node-8gpu.yaml"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


@pytest.mark.parametrize("argv", [
    ["ppo", "-c", "configs/tiny.yaml", "--ppo.rewards", "[{kind: model}]", "--ppo.steps", "2"],
    ["ppo", "--ppo.rewards", "[{kind: model}]", "configs/tiny.yaml", "--ppo.steps=2"],
    ["ppo", "configs/tiny.yaml", "--ppo.rewards=[{kind: model}]", "--ppo.steps", "2"],
])
def test_override_values_with_spaces_stay_overrides(argv):
    """argparse takes '--key=a b' (a space in it) for a positional: it must not become the CONFIG."""
    from rlhf_dist.cli import build_parser
    from rlhf_dist.config.cli_args import claim_config, join_dotted_overrides, split_overrides

    parser, _ = build_parser()
    args, extra = parser.parse_known_args(join_dotted_overrides(argv))
    extra = claim_config(parser, args, extra)
    assert args.config == "configs/tiny.yaml"
    assert sorted(split_overrides(extra)) == ["ppo.rewards=[{kind: model}]", "ppo.steps=2"]


def test_global_options_work_after_the_command_too(capsys):
    from rlhf_dist.cli import build_parser, main

    with pytest.raises(SystemExit) as stop:
        main(["rm", "-c", "configs/tiny.yaml", "--log-level", "LOUD"])
    assert stop.value.code == 2
    assert "--log-level 'LOUD' is not a log level" in capsys.readouterr().err
    parser, _ = build_parser()
    before, _ = parser.parse_known_args(["--debug", "ppo"])  # main() parses the same way
    after, _ = parser.parse_known_args(["ppo", "--debug", "--log-level", "WARNING"])
    plain, _ = parser.parse_known_args(["ppo"])
    assert before.debug and after.debug and after.log_level == "WARNING"
    assert not plain.debug and plain.log_level == "INFO" and not plain.verbose
