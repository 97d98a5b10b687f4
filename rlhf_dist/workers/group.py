"""Actor groups: N ranks of one role placed on Ray, called together, failing loudly.

    group = ActorGroup("policy", PolicyWorker, cfg, placement)
    group.call("init_model", model_dir)              # same args on every rank
    group.call_sharded("train_ppo", shards, step=3)  # one shard per rank

A remote call that raises, or an actor that dies or stops answering within
cluster.dead_actor_timeout_s, raises WorkerError naming the role and rank.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rlhf_dist.config import RLHFConfig

log = logging.getLogger(__name__)
ROLES = ("policy", "critic", "reference", "reward", "rollout")


class WorkerError(RuntimeError):
    """A role's actor failed, died or hung."""


@dataclass
class Placement:
    """Which placement group and bundles a role uses."""

    group: PlacementGroup
    first_bundle: int = 0


def create_placements(cfg: RLHFConfig, timeout_s: float = 120.0) -> dict[str, Placement]:
    """One placement group per role (disaggregated) or one shared by all roles (colocated)."""
    cl = cfg.cluster
    resources = {role: getattr(cl, role) for role in ROLES}
    counts = {role: res.num_actors for role, res in resources.items()}
    counts["rollout"] = cfg.rollout.num_engines
    if cl.colocate:
        # Rank i of every role shares bundle i; a bundle holds the sum of what they reserve.
        n = max(counts.values())
        bundles = []
        for i in range(n):
            cpu = sum(resources[r].cpus_per_actor for r in ROLES if i < counts[r])
            gpu = sum(resources[r].gpus_per_actor for r in ROLES if i < counts[r])
            bundles.append({"CPU": cpu, **({"GPU": gpu} if gpu else {})})
        pg = placement_group(bundles, strategy="PACK")
        _wait_ready(pg, "colocated", timeout_s)
        return {role: Placement(pg) for role in ROLES}
    out = {}
    for role in ROLES:
        res = resources[role]
        bundle = {"CPU": res.cpus_per_actor, **({"GPU": res.gpus_per_actor} if res.gpus_per_actor else {})}
        pg = placement_group([dict(bundle) for _ in range(counts[role])], strategy="PACK")
        out[role] = Placement(pg)
        try:
            _wait_ready(pg, role, timeout_s)
        except WorkerError:
            remove_placements(out)  # give back what was reserved before failing
            raise
    return out


def _wait_ready(pg: PlacementGroup, what: str, timeout_s: float = 120.0) -> None:
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        raise WorkerError(
            f"placement group for {what} could not be scheduled in {timeout_s:.0f}s: the cluster lacks the "
            f"resources asked for ({pg.bundle_specs}); run `rlhf-dist plan` or lower cluster.*.cpus/gpus_per_actor"
        )


def remove_placements(placements: dict[str, Placement]) -> None:
    for pg in {id(p.group): p.group for p in placements.values()}.values():
        remove_placement_group(pg)


class ActorGroup:
    """`num_actors` Ray actors of `worker_cls`, rank i in bundle first_bundle + i."""

    def __init__(self, role: str, worker_cls: type, cfg: RLHFConfig, placement: Placement, num_actors: int,
                 distributed: bool = True):
        self.role, self.cfg, self.num_actors = role, cfg, num_actors
        self.timeout_s = cfg.cluster.dead_actor_timeout_s
        res = getattr(cfg.cluster, role)
        remote_cls = ray.remote(num_cpus=res.cpus_per_actor, num_gpus=res.gpus_per_actor)(worker_cls)
        cfg_dict = cfg.model_dump(mode="json")

        def make(rank: int):
            strategy = PlacementGroupSchedulingStrategy(
                placement.group, placement_group_bundle_index=placement.first_bundle + rank
            )
            return remote_cls.options(scheduling_strategy=strategy).remote(cfg_dict, role, rank, num_actors)

        self.actors = [make(rank) for rank in range(num_actors)]
        if distributed:
            # Rank 0 picks the rendezvous on its own node; all ranks then join together.
            addr, port = self._get([self.actors[0].rendezvous.remote()], "rendezvous")[0]
            self.call("init_distributed", addr, port)

    def _get(self, refs: list, method: str, timeout_s: float | None = None) -> list[Any]:
        """ray.get with a deadline; errors name role, rank and method."""
        timeout_s = timeout_s or self.timeout_s
        out = []
        for rank, ref in enumerate(refs):
            try:
                out.append(ray.get(ref, timeout=timeout_s))
            except GetTimeoutError:
                raise WorkerError(f"{self.role} rank {rank}: '{method}' gave no answer in {timeout_s:.0f}s "
                                  "(hung or dead actor; see cluster.dead_actor_timeout_s)") from None
            except RayActorError as err:
                raise WorkerError(f"{self.role} rank {rank} died during '{method}': {err}") from None
            except RayTaskError as err:
                raise WorkerError(f"{self.role} rank {rank} failed in '{method}': {err.cause!r}") from err
        return out

    def submit(self, method: str, *args, **kwargs) -> list:
        """Start `method` on every rank; returns the futures (collect with `collect`)."""
        return [getattr(actor, method).remote(*args, **kwargs) for actor in self.actors]

    def submit_sharded(self, method: str, shards: list, **kwargs) -> list:
        if len(shards) != self.num_actors:
            raise ValueError(f"{self.role}: {len(shards)} shards for {self.num_actors} ranks")
        return [getattr(actor, method).remote(shard, **kwargs) for actor, shard in zip(self.actors, shards)]

    def collect(self, futures: list, method: str, timeout_s: float | None = None) -> list[Any]:
        return self._get(futures, method, timeout_s)

    def call(self, method: str, *args, **kwargs) -> list[Any]:
        return self.collect(self.submit(method, *args, **kwargs), method)

    def call_sharded(self, method: str, shards: list, **kwargs) -> list[Any]:
        return self.collect(self.submit_sharded(method, shards, **kwargs), method)

    def kill(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
