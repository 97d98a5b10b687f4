"""Driver-side state that a checkpoint must carry so a resumed run continues exactly."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

import numpy as np
import torch


class PromptSampler:
    """Seeded epochs over prompt indices; the position (epoch, index) is the data state."""

    def __init__(self, n_prompts: int, seed: int, epoch: int = 0, index: int = 0):
        if n_prompts == 0:
            raise ValueError("no prompts to train on")
        self.n, self.seed, self.epoch, self.index = n_prompts, seed, epoch, index

    def _order(self) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 65_537 + self.epoch)
        return torch.randperm(self.n, generator=gen).tolist()

    def next(self, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            order = self._order()
            take = order[self.index : self.index + k - len(out)]
            out += take
            self.index += len(take)
            if self.index >= self.n:
                self.epoch, self.index = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}


def rng_state() -> dict:
    """Python, numpy and torch RNG states as JSON-able values."""
    np_state = np.random.get_state()
    return {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state().tolist(),
    }


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


@dataclass
class DriverState:
    step: int = 0  # PPO steps completed
    data: dict = field(default_factory=lambda: {"epoch": 0, "index": 0})
    kl_controller: dict = field(default_factory=dict)
    reward_norm: dict = field(default_factory=dict)
    skipped_updates: int = 0
    rng: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)
