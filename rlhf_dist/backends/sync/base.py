"""The weight-sync interface the driver calls, the bucket loop every transport shares, and the builder.

The transports themselves are one file each in transports/, registered in registry.py.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from rlhf_dist.backends.sync.buckets import Bucket, TensorMeta

if TYPE_CHECKING:  # the config schema imports the transports (registry.py): no config import at run time
    from rlhf_dist.config import RLHFConfig
    from rlhf_dist.config.schema_parts import RolloutConfig

log = logging.getLogger(__name__)
T = TypeVar("T", covariant=True)


class Waitable(Protocol[T]):
    def result(self, timeout_s: float | None = None) -> T: ...


# What a transport may ask the groups: their methods are the workers' declared ones (workers/dispatch.py);
# tests/unit/test_dispatch.py checks that these protocols match the groups' derived signatures.
class PolicySide(Protocol):
    """What a transport may ask the policy group (workers/role_groups.PolicyGroup, from PolicyWorker)."""

    num_actors: int

    def weight_sync_plan(self, bucket_mb: int) -> Waitable[list[Bucket]]: ...
    def weight_bucket(self, index: int) -> tuple[Any, Waitable[None]]: ...
    def broadcast_weight_bucket(self, index: int) -> Waitable[None]: ...
    def share_weight_bucket(self, index: int) -> Waitable[list]: ...
    def release_weight_bucket(self) -> Waitable[None]: ...
    def weight_broadcast_rendezvous(self) -> Waitable[tuple[str, int]]: ...
    def init_weight_broadcast(self, host: str, port: int, world_size: int) -> Waitable[None]: ...


class EngineSide(Protocol):
    """What a transport may ask the rollout group (workers/role_groups.RolloutGroup, from RolloutWorker)."""

    num_actors: int

    def update_weights(self, bucket: Any) -> Waitable[None]: ...
    def receive_weights(self, meta: list[TensorMeta]) -> Waitable[None]: ...
    def receive_shared_weights(self, shared: list) -> Waitable[None]: ...
    def init_weight_broadcast(self, host: str, port: int, world_size: int) -> Waitable[None]: ...


class WeightSync:
    """Send the policy's current weights to every engine, bucket by bucket; returns the bytes sent."""

    window = 1  # buckets in flight at once

    def __init__(self, cfg: RolloutConfig, policy: PolicySide, rollout: EngineSide):
        self.cfg, self.policy, self.rollout = cfg, policy, rollout
        self.plan: list[Bucket] | None = None

    def setup(self) -> None:
        """One-time work before the first sync (e.g. an NCCL group); a collective where it says so."""

    def send(self, index: int) -> list[Waitable]:
        """Start bucket `index` on both sides; the calls that must finish before it counts as sent."""
        raise NotImplementedError

    def sync(self) -> int:
        if self.plan is None:
            self.setup()
            plan = self.policy.weight_sync_plan(self.cfg.sync_bucket_mb)
            self.plan = plan.result(timeout_s=self.cfg.sync_timeout_s)
        in_flight: list[tuple[int, list[Waitable]]] = []
        for index in range(len(self.plan)):
            in_flight.append((index, self.send(index)))
            if len(in_flight) == self.window:
                self._await(*in_flight.pop(0))
        for pending in in_flight:
            self._await(*pending)
        return sum(bucket.nbytes for bucket in self.plan)

    def _await(self, index: int, calls: list[Waitable]) -> None:
        try:
            for call in calls:
                call.result(timeout_s=self.cfg.sync_timeout_s)
        except Exception as err:  # WorkerError from the groups: name the bucket, keep the type
            err.args = (f"weight sync bucket {index + 1}/{len(self.plan or [])} failed: {err}",)
            raise


def build_weight_sync(cfg: RLHFConfig, policy: PolicySide, rollout: EngineSide) -> WeightSync:
    """The LoRA adapter sync where it applies (rollout.lora_sync), else the transport rollout.sync_backend
    names (registry.py; config/checks.py rejects what its properties rule out)."""
    from rlhf_dist.backends.sync.registry import TRANSPORTS
    from rlhf_dist.backends.sync.transports.lora import ADAPTER_SYNC, wants_adapter_sync

    name = ADAPTER_SYNC if wants_adapter_sync(cfg) else cfg.rollout.sync_backend
    return TRANSPORTS.get(name).fn(cfg.rollout, policy, rollout)
