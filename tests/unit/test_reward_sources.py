"""The reward-source registry (rlhf_dist/rewards): the built-ins, toy sources registered in one test file only
(toy_reward_sources.py) and chosen by 'module:function', their properties read by the schema, the rules and the
role layout."""

from __future__ import annotations

import pytest

from rlhf_dist.config import ConfigError, load_config
from rlhf_dist.config.topology import active_roles, needs_reward_model
from rlhf_dist.driver.rewards import RewardError, combine_rewards
from rlhf_dist.rewards import REWARD_SOURCES

TOYS = "tests.unit.toy_reward_sources"  # imported by the config's lookup only, never at collection


def _cfg(tmp_path, rewards: str):
    return load_config("configs/tiny.yaml", [f"run.output_dir={tmp_path}", f"ppo.rewards={rewards}"])


def test_built_ins_are_registered_with_their_properties():
    assert set(REWARD_SOURCES.names()) >= {"model", "function", "http"}
    assert REWARD_SOURCES.names(needs_reward_model=True)[:1] == ("model",)
    assert REWARD_SOURCES.get("http").requires == ("url",)


def test_a_source_from_a_test_file_is_chosen_by_name_and_summed_by_weight(tmp_path):
    cfg = _cfg(tmp_path, f"[{{kind: '{TOYS}:toy_length', weight: 2.0}}, {{kind: '{TOYS}:toy_judged', weight: 0.5}}]")
    assert needs_reward_model(cfg) and "reward" in active_roles(cfg)  # the judged one needs the actors
    scores, means = combine_rewards(cfg.ppo.rewards, ["p", "q"], ["abc", "a"], model_scores=lambda: [1.0, -3.0])
    # 2 * [3, 1] + 0.5 * ([1, -3] + 1) = [6 + 1, 2 - 1]
    assert scores.tolist() == [7.0, 1.0]
    assert means == {"reward/toy_length0": 2.0, "reward/toy_judged1": 0.0}
    only_length = _cfg(tmp_path, f"[{{kind: '{TOYS}:toy_length'}}]")
    assert not needs_reward_model(only_length) and "reward" not in active_roles(only_length)


def test_what_a_source_requires_is_checked_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match=r"ppo.rewards\[0\].url is required for kind 'http'"):
        _cfg(tmp_path, "[{kind: http}]")
    with pytest.raises(ConfigError, match=r"ppo.rewards\[1\].function: must be 'module:callable'"):
        _cfg(tmp_path, "[{kind: model}, {kind: function, function: no_colon}]")
    with pytest.raises(ConfigError, match="unknown reward source 'telepathy'"):
        _cfg(tmp_path, "[{kind: telepathy}]")


def test_a_source_that_returns_garbage_names_the_sample(tmp_path):
    cfg = _cfg(tmp_path, "[{kind: model}]")
    with pytest.raises(RewardError, match="reward model returned nan for sample 1"):
        combine_rewards(cfg.ppo.rewards, ["p", "q"], ["a", "b"], model_scores=lambda: [0.0, float("nan")])
