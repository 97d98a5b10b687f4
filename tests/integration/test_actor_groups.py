"""Actor groups on a real local Ray cluster: placement, failures named by role and rank."""

from __future__ import annotations

import pytest
import ray

from rlhf_dist.config import load_config
from rlhf_dist.workers.group import WorkerError, create_placements, remove_placements
from rlhf_dist.workers.role_groups import ReferenceGroup

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]


@pytest.fixture
def reference_group():
    cfg = load_config("configs/tiny.yaml", ["cluster.reference.num_actors=2", "cluster.dead_actor_timeout_s=20"])
    placements = create_placements(cfg)
    group = ReferenceGroup(cfg, placements["reference"], 2)
    yield group
    group.kill()
    remove_placements(placements)


def test_group_calls_every_rank(reference_group):
    answers = reference_group.ping()  # each rank says where it runs: its node and its own process
    assert [a.split(" on ")[0] for a in answers] == ["rank 0", "rank 1"]
    import ray

    node = ray.util.get_node_ip_address()  # one node here: the driver's
    assert all(a.split(" on ")[1].startswith(f"{node} (pid ") for a in answers)
    assert len({a.split("(pid ")[1] for a in answers}) == 2


def test_remote_exception_names_role_rank_and_method(reference_group):
    # both ranks fail; the first one to answer is reported, with its log file
    with pytest.raises(WorkerError, match=r"reference rank [01] failed in 'init_model'.*logs/reference-[01]\.log"):
        reference_group.init_model("/nonexistent/model").result()


def test_dead_actor_is_reported_not_hung(reference_group):
    ray.kill(reference_group.actors[1], no_restart=True)
    with pytest.raises(WorkerError, match=r"reference rank 1 died during 'ping'"):
        reference_group.ping()


def test_unschedulable_placement_fails_with_a_clear_message():
    cfg = load_config("configs/tiny.yaml", ["cluster.policy.cpus_per_actor=64", "cluster.placement_timeout_s=3"])
    with pytest.raises(WorkerError, match="could not be scheduled"):
        create_placements(cfg)


def test_session_cluster_gives_workers_the_products_runtime_env():
    """conftest's cluster comes from the product's starter: actors see what `rlhf-dist ppo` gives them."""
    import os

    from rlhf_dist.driver.actors import WORKER_ENV, worker_runtime_env

    @ray.remote(num_cpus=0)
    def seen(keys: list[str]) -> dict:
        return {k: os.environ.get(k) for k in keys}

    expected = worker_runtime_env()["env_vars"]
    assert WORKER_ENV.items() <= expected.items() and "VLLM_LOGGING_LEVEL" in expected  # the quieting too
    assert ray.get(seen.remote(list(expected))) == expected
