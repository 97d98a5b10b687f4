"""Held-out judges: the registry, 'module:callable' rules, and eval.judge validation."""

from __future__ import annotations

import pytest

from rlhf_dist.config import ConfigError, load_config
from rlhf_dist.eval.judges import JUDGES, judge_scores, judge_spec, trained_on_judge


def test_registered_judges_are_rules_and_score_each_sample():
    assert set(JUDGES) == {"sentiment", "length", "lowercase", "vowel"}
    assert judge_scores("sentiment", ["p", "p"], ["I loved it, great and fun", "awful"]) == pytest.approx([0.75, -0.5])
    assert judge_scores("length", ["p"], ["x" * 50]) == [0.5]
    assert judge_spec("tests.integration.rewards:explode") == "tests.integration.rewards:explode"


def test_unknown_judge_is_a_config_error_naming_the_known_ones():
    assert load_config(None, ["eval.judge=lowercase"]).eval.judge == "lowercase"
    with pytest.raises(ConfigError, match="unknown judge 'sentimnet' \\(known: sentiment, length"):
        load_config(None, ["eval.judge=sentimnet"])
    with pytest.raises(ValueError, match="unknown judge"):
        judge_spec("no_colon_here")


def test_a_judge_that_is_also_the_ppo_reward_is_flagged():
    assert trained_on_judge("lowercase", ["rlhf_dist.eval.rules:lowercase_fraction_reward"])
    assert not trained_on_judge("sentiment", ["rlhf_dist.eval.rules:lowercase_fraction_reward"])


def test_rule_names_are_one_list_shared_by_judges_rewards_and_annotators():
    import typing

    from rlhf_dist.config.schema_feedback import SimulatedAnnotatorsConfig
    from rlhf_dist.data.text_rules import TEXT_RULES
    from rlhf_dist.eval import rules
    from rlhf_dist.feedback.simulated import SimulatedAnnotator

    assert set(JUDGES) == set(TEXT_RULES)
    assert set(typing.get_args(SimulatedAnnotatorsConfig.model_fields["rule"].annotation)) == set(TEXT_RULES)
    texts = ["Great, lovely day!", "AAA bad"]
    for name in TEXT_RULES:  # the judge's batch function and the annotator score the same thing
        module, fn = judge_spec(name).split(":")
        assert getattr(rules, fn)(["p", "p"], texts) == [TEXT_RULES[name](t) for t in texts]
        preferred = SimulatedAnnotator(name).judge("p", *texts)[0]
        a, b = TEXT_RULES[name](texts[0]), TEXT_RULES[name](texts[1])
        assert preferred == (2 if a == b else 0 if a > b else 1)
