"""The bad-input sweep, config half (issue #13): each config mistake a user makes gives one clear message
naming the file:line or the override and the bad value, exit code 2, and no traceback. In-process
(`rlhf_dist.cli.main`, `config validate`) so the sweep takes seconds. Data and command mistakes:
test_bad_inputs.py.
"""

from __future__ import annotations

import pytest


from tests.unit.test_bad_inputs import _error_lines, _run

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
    "confidence_as_target with the pair format": (None, ["--data.confidence_as_target", "true"],
                                                   ["data.confidence_as_target true applies to A/B"]),
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
