"""Rollouts generated ahead of training (ppo.max_staleness): the asynchronous half of the PPO loop.

With max_staleness k > 0 the driver keeps the generations of the next k steps in flight while the
current step scores, infers and trains. An engine actor runs its calls in order, so a generation
submitted before a weight sync uses the weights of before it, and the sync's buckets queue behind
it: no request in flight is lost or sees half-updated weights. Each rollout records the policy
version (updates applied) of the weights that generated it:

    step s trains policy version s-1; a rollout for step s submitted at the start of step s-k used
    version s-k-1 (the sync at the end of step s-k-1 preceded it) -> staleness = (s-1) - version <= k.

Checkpoint steps (checkpoint.every_steps) are drain points: nothing is submitted past one before it
is written, so a run restored from a checkpoint (a restart, --resume) makes exactly the rollouts the
uninterrupted run made. A preemption checkpoint in between is not a drain point: the rollouts in
flight are dropped and, on resume, made again with the checkpoint's newer weights (same prompts,
same seeds, staleness 0 for them).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from rlhf_dist.config import RLHFConfig
from rlhf_dist.data.experience import RolloutBatch
from rlhf_dist.driver.actors import Roles, finish_generation, start_generation
from rlhf_dist.driver.state import PromptSampler
from rlhf_dist.workers.group import Pending


def generation_seed(cfg: RLHFConfig, step: int) -> int:
    return cfg.run.seed * 100_003 + step


@dataclass
class Rollout:
    """A generation for one step, started on the engines."""

    step: int
    picked: list[int]  # prompt indices
    version: int  # policy version (updates applied) of the weights that generate it
    data_after: dict  # the prompt sampler's state right after this step's prompts (what a checkpoint stores)
    pending: Pending[list]


class RolloutQueue:
    """Generations submitted in step order, at most ppo.max_staleness steps ahead of training."""

    def __init__(self, cfg: RLHFConfig, roles: Roles, sampler: PromptSampler, prompts: tuple, last_step: int):
        self.cfg, self.roles, self.sampler, self.last_step = cfg, roles, sampler, last_step
        self.prompt_texts, self.prompt_ids, self.tokenizer = prompts
        self.in_flight: deque[Rollout] = deque()
        self.next_step: int | None = None
        self.data_after = sampler.state_dict()  # the sampler's state after the last step taken

    def _may_submit(self, target: int, step: int) -> bool:
        """During `step`, a rollout for `target` may start unless a checkpoint step lies in [step, target)."""
        every = self.cfg.checkpoint.every_steps
        return target == step or not (every and any(c % every == 0 for c in range(step, target)))

    def fill(self, step: int, version: int) -> None:
        """Before training `step` (policy at `version`): start every generation up to step + max_staleness
        (never past the last step, never past a checkpoint not yet written)."""
        if self.next_step is None:
            self.next_step = step
        horizon = min(step + self.cfg.ppo.max_staleness, self.last_step)
        while self.next_step <= horizon and self._may_submit(self.next_step, step):
            picked = self.sampler.next(self.cfg.ppo.rollout_batch_size)
            ids = [self.prompt_ids[i] for i in picked]
            pending = start_generation(self.roles, ids, generation_seed(self.cfg, self.next_step))
            self.in_flight.append(Rollout(self.next_step, picked, version, self.sampler.state_dict(), pending))
            self.next_step += 1

    def take(self, step: int) -> tuple[RolloutBatch, int]:
        """Step `step`'s rollout (waits for it) and the policy version that generated it."""
        rollout = self.in_flight.popleft()
        if rollout.step != step:
            raise RuntimeError(f"rollout queue out of order: step {step} asked, step {rollout.step} next")
        batch = finish_generation(rollout.pending, [self.prompt_texts[i] for i in rollout.picked], self.tokenizer)
        self.data_after = rollout.data_after
        return batch, rollout.version

    def extra(self, step: int, round_: int) -> RolloutBatch:
        """Dynamic sampling's round `round_` (>= 1) of `step`: fresh prompts, generated now on the current
        weights. Its prompts come from a stream of their own, a function of (run.seed, step, round), so the
        main prompt order and what a checkpoint stores do not depend on how many rounds a step needed."""
        extra_sampler = PromptSampler(len(self.prompt_ids), self.cfg.run.seed * 1_000_003 + step * 1_009 + round_)
        picked = extra_sampler.next(self.cfg.ppo.rollout_batch_size)
        pending = start_generation(self.roles, [self.prompt_ids[i] for i in picked],
                                   generation_seed(self.cfg, step) * 31 + round_)
        return finish_generation(pending, [self.prompt_texts[i] for i in picked], self.tokenizer)
