"""Stage 3: PPO on the distributed engine (`rlhf-dist ppo`).

Policy = cfg.policy.path (base or SFT), reference = a frozen copy of it, critic initialised
from the reward model (or the policy), reward = the configured sources. When a 'model'
reward source is configured but cfg.reward_model.path holds no trained reward model yet,
one is trained first on the configured preference data.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rlhf_dist.config import RLHFConfig
from rlhf_dist.config.topology import critic_starts_from_reward, needs_reward_model
from rlhf_dist.driver.ppo import PPOResult, run_ppo
from rlhf_dist.driver.actors import ModelDirs
from rlhf_dist.models import resolve_model_path
from rlhf_dist.stages.inputs import check_ppo_inputs, reward_model_to_train
from rlhf_dist.storage import localize, push_outputs

log = logging.getLogger(__name__)


def _trained_reward_dir(cfg: RLHFConfig) -> Path:
    if not reward_model_to_train(cfg):
        return Path(cfg.reward_model.path)
    from rlhf_dist.stages.reward import train_reward_model

    log.info("no trained reward model at %s: training one first (rlhf-dist rm)", cfg.reward_model.path)
    return train_reward_model(cfg).model_dir


def resolve_model_dirs(cfg: RLHFConfig, policy_dir: Path | None = None, reward_dir: Path | None = None) -> ModelDirs:
    policy = policy_dir or resolve_model_path(cfg.policy.path, seed=cfg.run.seed, option="policy.path")
    reward = reward_dir or (_trained_reward_dir(cfg) if needs_reward_model(cfg) else None)
    critic_init = reward if (critic_starts_from_reward(cfg) and reward is not None) else policy
    return ModelDirs(policy=Path(policy), reward=Path(reward) if reward else None, critic_init=Path(critic_init))


def run_ppo_stage(cfg: RLHFConfig, policy_dir: Path | None = None, reward_dir: Path | None = None,
                  stop_after: int | None = None) -> PPOResult:
    cfg = localize(cfg)  # run.output_dir a storage URI: written to a staging dir, mirrored to the URI
    check_ppo_inputs(cfg, policy_dir, reward_dir)  # models, prompts (and an RM's data): before any write
    result = run_ppo(cfg, resolve_model_dirs(cfg, policy_dir, reward_dir), stop_after=stop_after)
    push_outputs(result.run_dir)  # metrics, exported policy (its _COMPLETE marker last)
    return result
