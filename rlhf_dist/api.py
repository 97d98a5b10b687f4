"""The seed-compatible Python API.

    from rlhf_dist import RLHFPipeline
    pipe = RLHFPipeline("configs/tiny.yaml")
    pipe.stage1_collect_feedback("Review the cafe.", "Lovely place!", "Awful.", preference=0, confidence=0.9)
    pipe.stage2_train_reward_model(num_epochs=2, batch_size=8)
    pipe.stage3_train_policy_with_ppo(num_epochs=4, batch_size=8)
    pipe.get_training_status()  # feedback_statistics, reward_model_metrics, ppo_metrics

Feedback is stored durably in the feedback service's database (feedback.db_url, default a SQLite
file <run>/feedback.sqlite; PostgreSQL for teams), the same one `rlhf-dist feedback serve` uses;
PPO runs on the distributed engine (Ray actors, vLLM, DeepSpeed).
"""

from __future__ import annotations

import math
from pathlib import Path

from rlhf_dist.config import RLHFConfig, load_config
from rlhf_dist.stages.pipeline import derive, feedback_store


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


class RLHFPipeline:
    def __init__(self, config: RLHFConfig | str | Path | None = None, overrides: list[str] | None = None):
        self.cfg = config if isinstance(config, RLHFConfig) else load_config(config, overrides)
        self.run_dir = Path(self.cfg.run.output_dir)
        self.store = feedback_store(self.cfg)
        self.reward_model_dir: Path | None = None
        self.policy_dir: Path | None = None
        self.reward_model_metrics: dict = {}
        self.ppo_metrics: dict = {}

    def stage1_collect_feedback(self, prompt: str, response_a: str, response_b: str, preference: int,
                                confidence: float = 1.0, reasoning: str = "") -> int:
        """Store one A/B judgement (preference 0 = A, 1 = B, 2 = tie); returns its id."""
        return self.store.add(prompt, response_a, response_b, preference, confidence, reasoning)

    def stage2_train_reward_model(self, num_epochs: int | None = None, batch_size: int | None = None) -> dict:
        """Bradley-Terry RM on all stored feedback; returns the held-out metrics of the last epoch."""
        from rlhf_dist.stages.reward import train_reward_model

        if len(self.store) == 0:
            raise ValueError("no feedback collected yet: call stage1_collect_feedback first")
        feedback_file = self.store.export_jsonl(self.run_dir / "feedback_ab.jsonl")
        train = self.cfg.reward.train
        batch = batch_size or train.global_batch_size
        cfg = derive(self.cfg, self.run_dir, data__pairs_path=str(feedback_file), data__pairs_format="ab",
                     reward__epochs=num_epochs or self.cfg.reward.epochs,
                     reward__train__global_batch_size=batch,
                     reward__train__micro_batch_size=_largest_divisor_at_most(batch, train.micro_batch_size))
        result = train_reward_model(cfg)
        self.reward_model_dir = result.model_dir
        self.reward_model_metrics = {"history": result.history, **result.final_metrics}
        return self.reward_model_metrics

    def stage3_train_policy_with_ppo(self, num_epochs: int | None = None, batch_size: int | None = None) -> dict:
        """PPO iterations (num_epochs) with batch_size prompts each, against the stage-2 reward model."""
        from rlhf_dist.stages.ppo import run_ppo_stage

        ppo = self.cfg.ppo
        prompts = batch_size or ppo.rollout_batch_size
        n_samples = prompts * self.cfg.rollout.sampling.samples_per_prompt
        updates = {"ppo__steps": num_epochs or ppo.steps, "ppo__rollout_batch_size": prompts}
        for role, dp in (("policy_train", self.cfg.cluster.policy.num_actors),
                         ("critic_train", self.cfg.cluster.critic.num_actors)):
            micro = _largest_divisor_at_most(max(1, n_samples // dp), getattr(ppo, role).micro_batch_size)
            updates[f"ppo__{role}__global_batch_size"] = n_samples if n_samples % (micro * dp) == 0 else math.lcm(micro * dp, n_samples)
            updates[f"ppo__{role}__micro_batch_size"] = micro
        if self.reward_model_dir is None and any(s.kind == "model" for s in ppo.rewards):
            raise ValueError("no reward model yet: call stage2_train_reward_model first")
        cfg = derive(self.cfg, self.run_dir, **updates)
        result = run_ppo_stage(cfg, policy_dir=self.policy_dir, reward_dir=self.reward_model_dir)
        self.policy_dir = result.policy_dir
        last = result.history[-1] if result.history else {}
        self.ppo_metrics = {"steps": len(result.history), "final": last, "history": result.history,
                            "policy_dir": str(result.policy_dir)}
        return self.ppo_metrics

    def get_training_status(self) -> dict:
        return {
            "feedback_statistics": self.store.statistics(),
            "reward_model_metrics": self.reward_model_metrics,
            "ppo_metrics": self.ppo_metrics,
        }
