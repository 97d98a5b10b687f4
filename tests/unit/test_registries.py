"""The registries of advantage estimators, policy losses and KL estimators (algo/registry.py): every
built-in registers with its properties, the schema / checks / topology / experience read them, and a piece
registered from a test (no other module touched) is a valid config choice that the driver code runs."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch.testing import assert_close

from rlhf_dist.algo import RunningMeanStd, kl_estimate, ppo_policy_loss, resolve_loss_aggregation
from rlhf_dist.algo.registry import (
    ADVANTAGES,
    KL_ESTIMATORS,
    POLICY_LOSSES,
    AdvantageEstimator,
    AdvantageInputs,
    KLEstimator,
    PolicyLoss,
    Registry,
)
from rlhf_dist.backends.rollout import RolloutSample
from rlhf_dist.config import ConfigError, KLConfig, PPOConfig, load_config
from rlhf_dist.config.reference import markdown_reference
from rlhf_dist.config.topology import active_roles
from rlhf_dist.data.experience import InferenceOutputs, RolloutBatch, pack_samples
from rlhf_dist.driver.experience import make_experience

REGISTRIES = [(ADVANTAGES, AdvantageEstimator, "advantage"), (POLICY_LOSSES, PolicyLoss, "policy_loss"),
              (KL_ESTIMATORS, KLEstimator, "estimator")]


@pytest.fixture
def scratch(monkeypatch):
    """Entries registered inside a test vanish after it (the registries are process-wide)."""
    for registry, _, _ in REGISTRIES:
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "_aliases", dict(registry._aliases))


def test_builtins_are_registered_with_their_properties():
    props = {e.name: (e.needs_critic, e.group, e.loss_aggregation) for e in ADVANTAGES}
    assert props == {"gae": (True, False, None), "grpo": (False, True, None), "rloo": (False, True, None),
                     "dr_grpo": (False, True, "seq_mean_token_sum_norm"), "reinforce_pp": (False, False, None)}
    assert {e.name: e.loss_aggregation for e in POLICY_LOSSES} == {"ppo": None, "gspo": "seq_mean_token_mean"}
    assert set(KL_ESTIMATORS.names()) == {"k1", "k2", "k3"}
    for registry, entry_type, _ in REGISTRIES:
        for entry in registry:
            assert isinstance(entry, entry_type) and callable(entry.fn)
            assert len(entry.description) > 10, f"{registry.kind} '{entry.name}' needs a docstring"
    assert ADVANTAGES.names(group=True) == ("dr_grpo", "grpo", "rloo")
    assert ADVANTAGES.names(needs_critic=True) == ("gae",)


def test_the_schema_and_its_reference_list_every_registered_name():
    fields = {"advantage": PPOConfig.model_fields["advantage"], "policy_loss": PPOConfig.model_fields["policy_loss"],
              "estimator": KLConfig.model_fields["estimator"]}
    reference = markdown_reference()
    for registry, _, field in REGISTRIES:
        assert fields[field].annotation is str  # a str validated against the registry, not a Literal
        row = next(line for line in reference.splitlines() if line.startswith(f"| `{registry.option}` "))
        for name in registry.names():
            assert f"'{name}'" in fields[field].description and f"'{name}'" in row
    assert "'dr_grpo' (group, loss_aggregation 'seq_mean_token_sum_norm')" in reference
    assert "'gae' (needs_critic)" in reference


@pytest.mark.parametrize("override, message", [
    ("ppo.advantage=gea", ("ppo.advantage: unknown advantage estimator 'gea' (known: dr_grpo, gae, grpo, "
                           "reinforce_pp, rloo, or a registered 'module:function')")),
    ("ppo.policy_loss=cispo", "ppo.policy_loss: unknown policy loss 'cispo' (known: gspo, ppo,"),
    ("ppo.kl.estimator=k4", "ppo.kl.estimator: unknown KL estimator 'k4' (known: k1, k2, k3,"),
    ("ppo.advantage=no_such_module:fn", "advantage estimator 'no_such_module:fn' cannot be loaded: No module"),
    ("ppo.advantage=rlhf_dist.algo.advantages:gae", ("'rlhf_dist.algo.advantages:gae' is not registered: "
                                                     "decorate it with @ADVANTAGES.register")),
])
def test_unknown_names_are_one_line_naming_the_known_ones(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_names_and_properties_load_without_torch():
    code = ("import sys; from rlhf_dist.config import load_config; from rlhf_dist.config.topology import needs_critic; "
            "cfg = load_config(None, ['ppo.advantage=grpo', 'rollout.sampling.samples_per_prompt=2']); "
            "from rlhf_dist.algo.registry import ADVANTAGES, KL_ESTIMATORS, POLICY_LOSSES; "
            "assert not needs_critic(cfg) and len(ADVANTAGES.names()) >= 5 and POLICY_LOSSES.names() "
            "and KL_ESTIMATORS.names(); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registration_rules():
    reg = Registry("thing", "x.thing", "THINGS", AdvantageEstimator)

    @reg.register("a", group=True)
    def a(x):
        """A thing."""

    reg.register("a", group=True)(a)  # the same function again (its module imported twice): fine
    with pytest.raises(ValueError, match="'a' is already registered by .*test_registration_rules.<locals>.a"):
        reg.register("a")(lambda x: x)
    with pytest.raises(TypeError, match="unknown properties \\['critic'\\]"):
        reg.register("b", critic=True)
    with pytest.raises(ValueError, match="loss_aggregation 'sum' is not one of token_mean"):
        reg.register("b", loss_aggregation="sum")
    assert reg.get("a").group and reg.describe() == "'a' (group) A thing"
    assert reg.check("a") == "a"


def _toy_scores(x: AdvantageInputs):
    adv = x.sequence_rewards.unsqueeze(1) * x.mask  # the sequence reward on every valid token
    return adv, adv + 1.0


def test_a_test_registered_estimator_drives_topology_checks_and_experience(scratch):
    ADVANTAGES.register("toy", group=True, needs_critic=True, loss_aggregation="seq_mean_token_mean")(_toy_scores)
    with pytest.raises(ConfigError, match="ppo.advantage 'toy' compares samples of one prompt"):
        load_config(None, ["ppo.advantage=toy"])
    cfg = load_config(None, ["ppo.advantage=toy", "rollout.sampling.samples_per_prompt=2", "ppo.dynamic_sampling=true"])
    assert "critic" in active_roles(cfg)  # needs_critic -> a critic actor
    assert resolve_loss_aggregation(None, "toy", "gspo") == "seq_mean_token_mean"
    # make_experience hands the estimator R_i = score_i - kl_coef * sum_t k1_it: rows of 2, 1, 1, 2 tokens with k1 0.5
    inputs, lp = pack_samples([RolloutSample([5], [6] * n, [0.0] * n, "stop") for n in (2, 1, 1, 2)], 0)
    batch = RolloutBatch(inputs, lp, ["a", "a", "b", "b"], ["w", "x", "y", "z"])
    old = torch.full_like(inputs.action_mask, -1.0)
    inference = InferenceOutputs(old, old - 0.5, torch.zeros_like(old))
    exp, _ = make_experience(cfg.ppo.model_copy(update={"reward_clip": None}), batch, inference,
                             torch.tensor([1.0, 2.0, 3.0, 4.0]), 0.1, RunningMeanStd(), 2)
    expected = torch.tensor([1.0 - 0.1, 2.0 - 0.05, 3.0 - 0.05, 4.0 - 0.1])
    assert_close(exp.advantages[:, 0], expected)
    assert_close(exp.returns[:, 0], expected + 1.0)


def test_a_test_registered_kl_estimator_and_policy_loss_run(scratch):
    KL_ESTIMATORS.register("abs")(lambda log_ratio: log_ratio.abs())
    assert load_config(None, ["ppo.kl.estimator=abs"]).ppo.kl.estimator == "abs"
    assert kl_estimate(torch.tensor([[-1.0, 0.5]]), torch.tensor([[0.0, 1.0]]), "abs").tolist() == [[1.0, 0.5]]

    def half_ppo(x):
        loss, stats = POLICY_LOSSES.get("ppo").fn(x)
        return 0.5 * loss, {**stats, "halved": torch.tensor(1.0)}

    POLICY_LOSSES.register("half_ppo", loss_aggregation="seq_mean_token_mean")(half_ppo)
    assert load_config(None, ["ppo.policy_loss=half_ppo"]).ppo.policy_loss == "half_ppo"
    adv, mask = torch.tensor([[1.0, -2.0]]), torch.ones(1, 2)
    full, _ = ppo_policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), adv, mask, 0.2)
    half, stats = ppo_policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), adv, mask, 0.2, variant="half_ppo")
    assert math.isclose(float(full), 0.5) and math.isclose(float(half), 0.25) and stats["halved"] == 1.0
    assert resolve_loss_aggregation(None, "grpo", "half_ppo") == "seq_mean_token_mean"


def _inputs(seq_rewards: list[float], token_rewards: list[list[float]], values: list[list[float]] | None = None,
            whiten: bool = False) -> AdvantageInputs:
    rewards = torch.tensor(token_rewards)
    return AdvantageInputs(torch.tensor(seq_rewards), rewards, torch.tensor(seq_rewards),
                           torch.tensor(values) if values else torch.zeros_like(rewards), torch.ones_like(rewards),
                           2, 1.0, 1.0, whiten)


@pytest.mark.parametrize("name, inputs, advantages, returns", [
    # GAE with gamma = lam = 1: A_t = sum of rewards to go - V_t; returns = A + V
    ("gae", _inputs([0, 0], [[0.0, 1.0], [0.0, 2.0]], [[0.5, 0.5], [1.0, 0.0]]),
     [[0.5, 0.5], [1.0, 2.0]], [[1.0, 1.0], [2.0, 2.0]]),
    ("grpo", _inputs([1.0, 3.0], [[0.0, 0.0]] * 2), [[-1 / (2**0.5 + 1e-6)] * 2, [1 / (2**0.5 + 1e-6)] * 2], None),
    ("dr_grpo", _inputs([1.0, 3.0], [[0.0, 0.0]] * 2), [[-1.0, -1.0], [1.0, 1.0]], None),
    ("rloo", _inputs([1.0, 4.0], [[0.0, 0.0]] * 2), [[-3.0, -3.0], [3.0, 3.0]], None),
    # return-to-go [[1, 1], [3, 3]] whitened over the 4 tokens: mean 2, unbiased var 4/3 -> +-sqrt(3)/2
    ("reinforce_pp", _inputs([0, 0], [[0.0, 1.0], [0.0, 3.0]]), [[-3**0.5 / 2] * 2, [3**0.5 / 2] * 2], None),
])
def test_each_builtin_estimator_by_hand(name, inputs, advantages, returns):
    adv, ret = ADVANTAGES.get(name).fn(inputs)
    assert_close(adv, torch.tensor(advantages), atol=1e-4, rtol=0)
    assert_close(ret, torch.tensor(returns) if returns else adv, atol=1e-4, rtol=0)
