"""The weight-sync interface the driver calls, and the bucket loop every transport shares."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from rlhf_dist.backends.sync.buckets import Bucket, TensorMeta
from rlhf_dist.config import RLHFConfig
from rlhf_dist.config.schema_parts import RolloutConfig

log = logging.getLogger(__name__)


class Waitable(Protocol):
    def result(self, timeout_s: float | None = None) -> Any: ...


class PolicySide(Protocol):
    """What a transport may ask the policy group (workers/role_groups.PolicyGroup)."""

    num_actors: int

    def weight_sync_plan(self, bucket_mb: int) -> list[Bucket]: ...
    def weight_bucket(self, index: int) -> tuple[Any, Waitable]: ...
    def broadcast_weight_bucket(self, index: int) -> Waitable: ...
    def share_weight_bucket(self, index: int) -> Waitable: ...
    def release_weight_bucket(self) -> Waitable: ...
    def weight_broadcast_rendezvous(self) -> tuple[str, int]: ...
    def init_weight_broadcast(self, host: str, port: int, world_size: int) -> Waitable: ...


class EngineSide(Protocol):
    """What a transport may ask the rollout group (workers/role_groups.RolloutGroup)."""

    num_actors: int

    def update_weights(self, bucket_ref: Any) -> Waitable: ...
    def receive_weights(self, meta: list[TensorMeta]) -> Waitable: ...
    def receive_shared_weights(self, shared: list) -> Waitable: ...
    def init_weight_broadcast(self, host: str, port: int, tensor_parallel: int, world_size: int) -> Waitable: ...


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
            self.plan = self.policy.weight_sync_plan(self.cfg.sync_bucket_mb)
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


class ObjectStoreSync(WeightSync):
    """Rank 0's bucket goes into Ray's object store once; every engine fetches it from there.

    rollout.sync_buckets_in_flight buckets at once: rank 0 gathers and puts bucket i+1 while the
    engines load bucket i (the policy ranks run their bucket calls in order, one at a time)."""

    def __init__(self, cfg: RolloutConfig, policy: PolicySide, rollout: EngineSide):
        super().__init__(cfg, policy, rollout)
        self.window = cfg.sync_buckets_in_flight

    def send(self, index: int) -> list[Waitable]:
        bucket_ref, gathered = self.policy.weight_bucket(index)
        return [gathered, self.rollout.update_weights(bucket_ref)]


class AdapterSync(WeightSync):
    """A LoRA policy whose engines take adapters: only the adapter travels, a new version each sync."""

    def __init__(self, cfg: RolloutConfig, policy: Any, rollout: Any):
        super().__init__(cfg, policy, rollout)
        self.version = 0

    def sync(self) -> int:
        from rlhf_dist.backends.sync.lora import sync_lora_adapter

        self.version += 1
        return sync_lora_adapter(self.policy, self.rollout, self.version, self.cfg.sync_timeout_s)


def build_weight_sync(cfg: RLHFConfig, policy: PolicySide, rollout: EngineSide) -> WeightSync:
    """The LoRA adapter sync where it applies (rollout.lora_sync), else the transport rollout.sync_backend
    names (config/rules.py rejects combinations that cannot work)."""
    from rlhf_dist.backends.sync.lora import wants_adapter_sync

    if wants_adapter_sync(cfg):
        return AdapterSync(cfg.rollout, policy, rollout)
    if cfg.rollout.sync_backend == "nccl":
        from rlhf_dist.backends.sync.nccl import NcclSync

        return NcclSync(cfg.rollout, policy, rollout)
    if cfg.rollout.sync_backend == "cuda_ipc":
        from rlhf_dist.backends.sync.cuda_ipc import CudaIpcSync

        return CudaIpcSync(cfg.rollout, policy, rollout)
    return ObjectStoreSync(cfg.rollout, policy, rollout)
