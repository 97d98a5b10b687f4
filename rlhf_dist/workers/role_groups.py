"""One group per role: the calls the driver may make, derived from the worker's declarations.

Each group has a method for every worker method declared with @dispatch (workers/dispatch.py), with the
worker's name, parameters and docstring; it starts the call on the ranks the declaration names and
returns a `Pending[...]` whose `.result()` waits (with the group's deadline) and joins the answers.
Batches are split over ranks and the answers joined in rank order, so callers see one batch in, one out:

    policy.logprobs(inputs).result()              # ModelInputs [B, ...] -> log-probs [B, R]
    policy.train_ppo(experience, step).result()   # Experience [B, ...] -> TrainStats per rank

A method written out here is a call that a declaration cannot express; each says why.
tests/unit/test_dispatch.py checks that every group exposes exactly its worker's declared methods.
"""

from __future__ import annotations

from typing import Any

from rlhf_dist.config import RLHFConfig
from rlhf_dist.workers.dispatch import expose_declared
from rlhf_dist.workers.group import ActorGroup, Pending, Placement
from rlhf_dist.workers.inference import ReferenceWorker, RewardWorker, RolloutWorker
from rlhf_dist.workers.trainers import CriticWorker, PolicyWorker


class RoleGroup(ActorGroup):
    """An ActorGroup whose role, worker class and process-group need are fixed by the subclass; a subclass
    that sets `worker` gets a method per declared method of it."""

    role_name: str
    worker: type
    distributed: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "worker" in cls.__dict__:
            expose_declared(cls, cls.worker)

    def __init__(self, cfg: RLHFConfig, placement: Placement, num_actors: int):
        super().__init__(self.role_name, self.worker, cfg, placement, num_actors, distributed=self.distributed)


class TrainerGroup(RoleGroup):
    """A data-parallel DeepSpeed (or torch) group: policy or critic (and the supervised stages)."""

    distributed = True


class PolicyGroup(TrainerGroup):
    role_name, worker = "policy", PolicyWorker

    def weight_bucket(self, index: int) -> tuple[Any, Pending[None]]:
        """Object store: every rank gathers bucket `index` (a collective under ZeRO-3). Returns the ref to
        rank 0's answer ([ref to the bucket]; engines fetch it from the store) and the call on all ranks.

        Written out: the engines get rank 0's ObjectRef while the call still runs (they wait on it in Ray,
        not in the driver), which a gathered result cannot give."""
        pending = self.invoke("weight_bucket", index)
        return pending.refs[0], pending


class CriticGroup(TrainerGroup):
    role_name, worker = "critic", CriticWorker


class ReferenceGroup(RoleGroup):
    role_name, worker = "reference", ReferenceWorker

    def __init__(self, cfg: RLHFConfig, placement: Placement, num_actors: int):
        # ppo.reference_zero_stage 3: the ranks shard the weights, so they join one process group
        self.distributed = cfg.ppo.reference_zero_stage == 3
        super().__init__(cfg, placement, num_actors)


class RewardGroup(RoleGroup):
    role_name, worker = "reward", RewardWorker


class RolloutGroup(RoleGroup):
    """One rollout engine (vLLM or HF generate) per actor."""

    role_name, worker = "rollout", RolloutWorker
