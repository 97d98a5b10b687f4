"""Actor groups: N ranks of one role placed on Ray, called together, failing loudly.

    group = ActorGroup("policy", PolicyWorker, cfg, placement, num_actors)
    group.invoke("init_model", model_dir, 10).result()      # as PolicyWorker.init_model declares (every rank)
    group.invoke("logprobs", inputs).result()               # shard i on rank i, answers concatenated

A worker method declares how its call is spread over the ranks and how the answers are joined
(workers/dispatch.py); the role groups (workers/role_groups.py) get a method per declaration, so the
driver calls `policy.logprobs(inputs)` and never names a remote method by a string.

A remote call that raises, or an actor that dies or stops answering within
cluster.dead_actor_timeout_s, raises WorkerError naming the role and rank.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import ray
from ray.exceptions import RayActorError, RayTaskError
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rlhf_dist.config import RLHFConfig
from rlhf_dist.config.topology import (
    COLOCATED, BundleSpec, active_roles, actor_count, custom_resources, placement_layout, resources,
)
from rlhf_dist.workers.dispatch import declaration

log = logging.getLogger(__name__)
T = TypeVar("T")


class WorkerError(RuntimeError):
    """A role's actor failed, died or hung. `role`: the group it was noticed in (None: no one group)."""

    def __init__(self, message: str, role: str | None = None):
        super().__init__(message)
        self.role = role


@dataclass
class Placement:
    """Which placement group and bundles a role uses."""

    group: PlacementGroup
    first_bundle: int = 0


def create_placements(cfg: RLHFConfig) -> dict[str, Placement]:
    """One placement group per active role (disaggregated) or one shared by all roles (colocated).

    The bundles come from config/topology.py placement_layout, the same function `rlhf-dist plan` lays out."""
    layout = placement_layout(cfg)
    groups: dict[str, PlacementGroup] = {}
    try:
        for name, specs in layout.items():
            groups[name] = placement_group([spec.ray_bundle() for spec in specs], strategy="PACK")
            _wait_ready(groups[name], name, cfg.cluster.placement_timeout_s)
    except BaseException:
        for pg in groups.values():  # give back what was reserved before failing
            remove_placement_group(pg)
        raise
    if COLOCATED in groups:
        return {role: Placement(groups[COLOCATED]) for role in active_roles(cfg)}
    return {role: Placement(pg) for role, pg in groups.items()}


def create_role_placement(cfg: RLHFConfig, role: str) -> Placement:
    """One placement group for one role alone (a training stage's or evaluation's group): a bundle per rank."""
    res = resources(cfg, role)
    bundle = BundleSpec(res.cpus_per_actor, res.gpus_per_actor, (), custom_resources(cfg, (role,))).ray_bundle()
    group = placement_group([bundle] * actor_count(cfg, role), strategy="PACK")
    try:
        _wait_ready(group, role, cfg.cluster.placement_timeout_s)
    except BaseException:
        remove_placement_group(group)
        raise
    return Placement(group)


def _wait_ready(pg: PlacementGroup, what: str, timeout_s: float) -> None:
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        raise WorkerError(
            f"placement group for {what} could not be scheduled in {timeout_s:.0f}s: the cluster lacks the "
            f"resources asked for ({pg.bundle_specs}); run `rlhf-dist plan`, lower cluster.*.cpus/gpus_per_actor "
            "or raise cluster.placement_timeout_s"
        )


def placements_restored(placements: dict[str, Placement], roles: Iterable[str], timeout_s: float) -> list[str]:
    """Wait until these roles' placement groups are whole again; the roles still waiting after timeout_s.

    When a node is lost, Ray re-reserves its bundles elsewhere (state RESCHEDULING until it can: spare
    capacity, the node back, or a replacement joining); actors created meanwhile would wait without bound."""
    deadline = time.monotonic() + timeout_s
    while True:
        waiting = [role for role in roles if placement_group_table(placements[role].group).get("state") != "CREATED"]
        if not waiting or time.monotonic() >= deadline:
            return waiting
        time.sleep(1.0)


def remove_placements(placements: dict[str, Placement]) -> None:
    for pg in {id(p.group): p.group for p in placements.values()}.values():
        remove_placement_group(pg)


class Pending(Generic[T]):
    """A call started on some ranks of a group; `result()` waits (with the group's deadline) and gathers."""

    def __init__(self, group: ActorGroup, refs: list, what: str, gather: Callable[[list], T]):
        self.group, self.refs, self.what, self.gather = group, refs, what, gather

    def result(self, timeout_s: float | None = None) -> T:
        return self.gather(self.group.collect(self.refs, self.what, timeout_s))


class ActorGroup:
    """`num_actors` Ray actors of `worker_cls`, rank i in bundle first_bundle + i."""

    def __init__(self, role: str, worker_cls: type, cfg: RLHFConfig, placement: Placement, num_actors: int,
                 distributed: bool = True):
        self.role, self.cfg, self.num_actors, self.worker_cls = role, cfg, num_actors, worker_cls
        self.log_name = worker_cls.log_name or role  # <run>/logs/<log_name>-<rank>.log (workers/base.py)
        self.timeout_s = cfg.cluster.dead_actor_timeout_s
        res = resources(cfg, role)
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
            addr, port = self.on_rank0("rendezvous", lambda a: a.rendezvous.remote()).result()
            self.each("init_distributed", lambda a: a.init_distributed.remote(addr, port)).result()

    def collect(self, refs: list, method: str, timeout_s: float | None = None) -> list[Any]:
        """The answers of every rank (refs[i] is rank i's call), within one deadline for all.

        Fails as soon as ANY rank fails or dies, even while others still run (a rank waiting in a
        collective for a dead peer would otherwise hold the driver until the deadline). Errors
        name role, rank and method."""
        timeout_s = timeout_s or self.timeout_s
        deadline = time.monotonic() + timeout_s
        rank_of = {ref: rank for rank, ref in enumerate(refs)}
        pending, out = list(refs), [None] * len(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not done:
                rank = rank_of[pending[0]]
                raise WorkerError(f"{self.role} rank {rank}: '{method}' gave no answer in {timeout_s:.0f}s "
                                  "(hung or dead actor; see cluster.dead_actor_timeout_s)", self.role)
            rank = rank_of[done[0]]
            log_file = f"(log: {Path(self.cfg.run.output_dir) / 'logs' / f'{self.log_name}-{rank}.log'})"
            try:
                out[rank] = ray.get(done[0])
            except RayActorError as err:
                raise WorkerError(f"{self.role} rank {rank} died during '{method}': {err} {log_file}",
                                  self.role) from None
            except RayTaskError as err:
                raise WorkerError(f"{self.role} rank {rank} failed in '{method}': {err.cause!r} {log_file}",
                                  self.role) from err
        return out

    def each(self, what: str, call: Callable[[Any], Any], gather: Callable[[list], T] = list) -> Pending[T]:
        """Start `call(actor)` on every rank (e.g. `lambda a: a.init_model.remote(path)`)."""
        return Pending(self, [call(actor) for actor in self.actors], what, gather)

    def invoke(self, method: str, *args: Any, **kwargs: Any) -> Pending[Any]:
        """Start the worker's declared `method` (workers/dispatch.py) on the ranks its declaration names, each
        with its part of the arguments; `.result()` joins the answers as declared. Errors name the method."""
        decl = declaration(self.worker_cls, method)
        per_rank = decl.per_rank(self.num_actors, args, kwargs)
        if decl.put_once and len(per_rank) > 1:  # one copy in the object store that every rank reads
            per_rank = [{name: ray.put(value) for name, value in per_rank[0].items()}] * len(per_rank)
        refs = [getattr(actor, method).remote(**kw) for actor, kw in zip(self.actors, per_rank)]
        return Pending(self, refs, method, decl.join)

    def on_rank0(self, what: str, call: Callable[[Any], Any]) -> Pending[Any]:
        """Start `call(rank 0's actor)`; the result is rank 0's answer."""
        return Pending(self, [call(self.actors[0])], what, lambda answers: answers[0])

    def ping(self) -> list[str]:
        return self.each("ping", lambda a: a.ping.remote()).result()

    def kill(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
