"""cluster.<role>.resources: custom Ray resources land in each bundle of that role (summed per colocated bundle),
so a role can be pinned to the nodes started with them; CPU/GPU and non-positive amounts are refused."""

from __future__ import annotations

import pytest

from rlhf_dist.config import ConfigError, load_config
from rlhf_dist.config.topology import placement_layout


def _layout(*overrides: str) -> dict[str, list[dict[str, float]]]:
    cfg = load_config("configs/tiny.yaml", list(overrides))
    return {name: [b.ray_bundle() for b in bundles] for name, bundles in placement_layout(cfg).items()}


def test_each_bundle_of_a_role_reserves_its_custom_resources_and_other_roles_none():
    layout = _layout("cluster.policy.resources={node_a: 0.5}", "cluster.reference.resources={node_b: 1}")
    assert layout["policy"] == [{"CPU": 0.25, "node_a": 0.5}] * 2
    assert layout["reference"] == [{"CPU": 0.25, "node_b": 1.0}]
    assert layout["critic"] == [{"CPU": 0.25}] and layout["rollout"] == [{"CPU": 0.25}]


def test_colocated_bundles_sum_what_their_members_ask():
    layout = _layout("cluster.colocate=true", "cluster.policy.resources={node_a: 0.5}",
                     "cluster.critic.resources={node_a: 1, fast: 2}")
    # bundle 0: policy 0, critic, reference, rollout; bundle 1: policy 1 only
    assert layout["colocated"] == [{"CPU": 1.0, "fast": 2.0, "node_a": 1.5}, {"CPU": 0.25, "node_a": 0.5}]


@pytest.mark.parametrize("value, problem", [("{CPU: 1}", "resource name 'CPU'"),
                                            ("{a: 0}", "resource 'a': amount must be > 0")])
def test_builtin_names_and_empty_amounts_are_refused_naming_the_option(value, problem):
    with pytest.raises(ConfigError, match=rf"cluster.critic.resources: {problem}"):
        load_config("configs/tiny.yaml", [f"cluster.critic.resources={value}"])
