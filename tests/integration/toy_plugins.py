"""Plugins registered by tests/integration/test_registries.py, and only by it: kept out of the test module so that
collecting the suite does not register them (the unit tests list the registries' built-ins). The config names them
as 'tests.integration.toy_plugins:<name>', which imports this module in the driver and in every Ray actor.
Kept light at import: the actors import it."""

from __future__ import annotations

from rlhf_dist.algo.registry import ADVANTAGES, POLICY_LOSSES, AdvantageInputs, PolicyLossInputs
from rlhf_dist.backends.sync.registry import TRANSPORTS
from rlhf_dist.backends.sync.transports.object_store import ObjectStoreSync
from rlhf_dist.rewards import REWARD_SOURCES, RewardCall

CALLS: list[tuple[int, int]] = []  # (B, R) of each toy estimator call in this process
SENT: list[int] = []  # bucket indices the toy transport sent, in this process
SCORED: list[int] = []  # how many samples each toy reward source call scored, in this process


@ADVANTAGES.register("toy_sign", group=True)
def toy_sign_advantage(x: AdvantageInputs):
    """A_i = sign(R_i - mean_G R) on every token of sample i."""
    rewards = x.sequence_rewards.view(-1, x.group_size)
    sign = (rewards - rewards.mean(dim=1, keepdim=True)).sign().reshape(-1)
    CALLS.append(tuple(x.mask.shape))
    adv = sign.unsqueeze(1) * x.mask
    return adv, adv


@POLICY_LOSSES.register("toy_marked_ppo")
def toy_marked_ppo_loss(x: PolicyLossInputs):
    """PPO's loss plus a stat that proves it ran in the actor."""
    loss, stats = POLICY_LOSSES.get("ppo").fn(x)
    return loss, {**stats, "toy_marker": loss.new_tensor(1.0)}


@TRANSPORTS.register("toy_counted_store")
class ToyCountedStore(ObjectStoreSync):
    """The object-store path, counting the buckets it sends."""

    def send(self, index: int):
        SENT.append(index)
        return super().send(index)


@REWARD_SOURCES.register("toy_vowels")
def toy_vowel_count(src, call: RewardCall) -> list[float]:
    """The number of vowels in the response."""
    SCORED.append(len(call.responses))
    return [float(sum(ch in "aeiou" for ch in response)) for response in call.responses]
