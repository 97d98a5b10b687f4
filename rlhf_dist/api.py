"""The seed-compatible Python API.

    from rlhf_dist import RLHFPipeline
    pipe = RLHFPipeline("configs/tiny.yaml")
    pipe.stage1_collect_feedback("Review the cafe.", "Lovely place!", "Awful.", preference=0, confidence=0.9)
    pipe.stage2_train_reward_model(num_epochs=2, batch_size=8)
    pipe.stage3_train_policy_with_ppo(num_epochs=4, batch_size=8)
    # or, without a reward model (pipeline.method dpo; online DPO: pairs from the policy -> votes -> DPO, repeated):
    pipe.stage3_train_policy_with_dpo(num_epochs=2, batch_size=8)
    pipe.get_training_status()  # feedback_statistics, reward_model_metrics, ppo_metrics, human_evaluation
    url = pipe.start_feedback_service()          # people vote in a browser, into the same store
    pipe.generate_feedback_pairs("round-2")      # pairs from the current policy for them to judge

Feedback is stored durably in the feedback service's database (feedback.db_url, default a SQLite
file <run>/feedback.sqlite; PostgreSQL for teams), the same one `rlhf-dist feedback serve` uses;
PPO runs on the distributed engine (Ray actors, vLLM, DeepSpeed). run.output_dir may be a storage URI
(s3://bucket/runs/x): the pipeline works in the run's local staging dir and each stage mirrors its outputs there.
"""

from __future__ import annotations

import math
from pathlib import Path

from rlhf_dist.config import RLHFConfig, load_config, with_overrides
from rlhf_dist.config.topology import needs_reward_model, stage_ranks
from rlhf_dist.stages.pipeline import feedback_store
from rlhf_dist.storage import localize


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


class RLHFPipeline:
    def __init__(self, config: RLHFConfig | str | Path | None = None, overrides: list[str] | None = None):
        cfg = config if isinstance(config, RLHFConfig) else load_config(config, overrides)
        self.cfg = localize(cfg)  # a storage URI: local staging dir, marked so that each stage mirrors to it
        self.run_dir = Path(self.cfg.run.output_dir)
        self.store = feedback_store(self.cfg)
        self.reward_model_dir: Path | None = None
        self.policy_dir: Path | None = None
        self.reward_model_metrics: dict = {}
        self.ppo_metrics: dict = {}
        self.dpo_metrics: dict = {}
        self.human_evaluation: dict | None = None  # human_evaluation_report(), next to the seed's > 70% target
        self._service = None  # a FeedbackServerProcess from start_feedback_service()

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
        micro = _largest_divisor_at_most(batch, train.micro_batch_size)
        cfg = with_overrides(self.cfg, {"run.output_dir": str(self.run_dir), "data.pairs_path": str(feedback_file),
                                        "data.pairs_format": "ab",
                                        "reward.epochs": num_epochs or self.cfg.reward.epochs,
                                        "reward.train.global_batch_size": batch,
                                        "reward.train.micro_batch_size": micro})
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
        updates = {"run.output_dir": str(self.run_dir), "ppo.steps": num_epochs or ppo.steps,
                   "ppo.rollout_batch_size": prompts}
        for role, dp in (("policy_train", self.cfg.cluster.policy.num_actors),
                         ("critic_train", self.cfg.cluster.critic.num_actors)):
            micro = _largest_divisor_at_most(max(1, n_samples // dp), getattr(ppo, role).micro_batch_size)
            updates[f"ppo.{role}.global_batch_size"] = (n_samples if n_samples % (micro * dp) == 0
                                                        else math.lcm(micro * dp, n_samples))
            updates[f"ppo.{role}.micro_batch_size"] = micro
        if self.reward_model_dir is None and needs_reward_model(self.cfg):
            raise ValueError("no reward model yet: call stage2_train_reward_model first")
        cfg = with_overrides(self.cfg, updates)
        result = run_ppo_stage(cfg, policy_dir=self.policy_dir, reward_dir=self.reward_model_dir)
        self.policy_dir = result.policy_dir
        last = result.history[-1] if result.history else {}
        self.ppo_metrics = {"steps": len(result.history), "final": last, "history": result.history,
                            "policy_dir": str(result.policy_dir)}
        return self.ppo_metrics

    def stage3_train_policy_with_dpo(self, num_epochs: int | None = None, batch_size: int | None = None) -> dict:
        """DPO (dpo.*) of the current policy on all stored feedback, no reward model: the seed's stage 3 the
        other way (pipeline.method dpo). Online DPO repeats generate_feedback_pairs -> votes -> this. Writes
        <run>/dpo (its metrics, checkpoints, reference cache, policy); returns the held-out figures per epoch."""
        from rlhf_dist.stages.dpo import run_dpo_stage

        if len(self.store) == 0:
            raise ValueError("no feedback collected yet: call stage1_collect_feedback first")
        feedback_file = self.store.export_jsonl(self.run_dir / "feedback_ab.jsonl")
        train, ranks = self.cfg.dpo.train, stage_ranks(self.cfg, "dpo", self.cfg.dpo.train)
        batch = batch_size or train.global_batch_size
        micro = _largest_divisor_at_most(max(1, batch // ranks), train.micro_batch_size)
        batch = batch if batch % (micro * ranks) == 0 else math.lcm(micro * ranks, batch)
        cfg = with_overrides(self.cfg, {"run.output_dir": str(self.run_dir / "dpo"),
                                        "policy.path": str(self.policy_dir or self.cfg.policy.path),
                                        "data.pairs_path": str(feedback_file), "data.pairs_format": "ab",
                                        "data.eval_pairs_path": None, "dpo.epochs": num_epochs or self.cfg.dpo.epochs,
                                        "dpo.train.global_batch_size": batch, "dpo.train.micro_batch_size": micro})
        result = run_dpo_stage(cfg)
        self.policy_dir = result.policy_dir
        self.dpo_metrics = {"history": result.history, "final": result.history[-1] if result.history else {},
                            "policy_dir": str(result.policy_dir)}
        return self.dpo_metrics

    def start_feedback_service(self, log_dir: str | Path | None = None) -> str:
        """Serve the feedback database on a free loopback port (people vote in a browser); returns the URL.

        The service writes the same database as stage1_collect_feedback; stop it with stop_feedback_service().
        """
        import secrets

        from rlhf_dist.feedback.server_process import FeedbackServerProcess

        if self._service is None:
            self._service = FeedbackServerProcess(
                self.store.url, Path(log_dir or self.run_dir), admin_token=secrets.token_urlsafe(32),
                lease_seconds=self.cfg.feedback.lease_seconds).start()
        return self._service.url

    def stop_feedback_service(self) -> None:
        if self._service is not None:
            self._service.stop()
            self._service = None

    def generate_feedback_pairs(self, campaign: str, prompts: list[str] | None = None) -> int:
        """Two samples per prompt from the current policy (after stage 3, else the configured one) into a
        campaign people then judge; prompts default to pipeline.pairs_per_round training prompts."""
        from rlhf_dist.feedback.admin import add_pairs
        from rlhf_dist.driver.sampling import pair_sampler
        from rlhf_dist.feedback.generate import sample_pairs
        from rlhf_dist.models import resolve_model_path
        from rlhf_dist.stages.pipeline import round_prompts

        policy = self.policy_dir or resolve_model_path(self.cfg.policy.path, seed=self.cfg.run.seed)
        pairs = sample_pairs(self.cfg, policy, prompts or round_prompts(self.cfg), seed=self.cfg.run.seed,
                             sampler=pair_sampler(self.cfg))
        return add_pairs(self.store.sessions, campaign, pairs, overlap=self.cfg.feedback.overlap,
                         max_votes=self.cfg.feedback.adaptive_overlap.max_votes)

    def human_evaluation_report(self, campaign: str) -> dict:
        """Win rate (ties half), bootstrap 95% CI and votes of an evaluation campaign; kept in the status."""
        from rlhf_dist.eval.human import human_eval_report

        self.human_evaluation = human_eval_report(self.store.sessions, campaign, seed=self.cfg.eval.seed)
        return self.human_evaluation

    def get_training_status(self) -> dict:
        return {
            "feedback_statistics": self.store.statistics(),
            "reward_model_metrics": self.reward_model_metrics,
            "ppo_metrics": self.ppo_metrics,
            "dpo_metrics": self.dpo_metrics,
            "human_evaluation": self.human_evaluation,
        }
