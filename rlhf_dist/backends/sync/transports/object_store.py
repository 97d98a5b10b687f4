"""Object-store transport (any device, any layout): the default, and the only one on CPU."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf_dist.backends.sync.base import EngineSide, PolicySide, Waitable, WeightSync
from rlhf_dist.backends.sync.registry import TRANSPORTS

if TYPE_CHECKING:
    from rlhf_dist.config.schema_parts import RolloutConfig


@TRANSPORTS.register("object_store")
class ObjectStoreSync(WeightSync):
    """Policy rank 0 puts each bucket into Ray's object store once and every engine fetches it from there,
    never through the driver.

    rollout.sync_buckets_in_flight buckets at once: rank 0 gathers and puts bucket i+1 while the
    engines load bucket i (the policy ranks run their bucket calls in order, one at a time)."""

    def __init__(self, cfg: RolloutConfig, policy: PolicySide, rollout: EngineSide):
        super().__init__(cfg, policy, rollout)
        self.window = cfg.sync_buckets_in_flight

    def send(self, index: int) -> list[Waitable]:
        bucket_ref, gathered = self.policy.weight_bucket(index)
        return [gathered, self.rollout.update_weights(bucket_ref)]
