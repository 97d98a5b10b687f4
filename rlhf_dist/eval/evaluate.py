"""Held-out evaluation of a policy against its starting point (`rlhf-dist eval`), in-process.

    result = evaluate_policy(cfg, run_dir / "policy", start_dir, run_dir / "reward_model", judge="sentiment")

One response per held-out prompt from the policy AND from the reference (= starting policy),
both sampled by transformers generate with the same seed and cfg.rollout.sampling. Then:

    reward_mean           trained RM score of the policy's responses (text level, RM's own tokenizer)
    kl                    mean over prompts of sum_t [log pi(y_t) - log ref(y_t)] on the policy's samples
    perplexity_policy     exp(mean NLL per response token) of the policy's responses under the policy
    perplexity_reference  ... under the reference
    win_rate              policy vs start response on the same prompt, by a held-out judge (tie = 0.5)
    rm_accuracy           the RM's accuracy on held-out preference pairs

Where the models run (eval.placement): on Ray actors (driver/evaluation.py ClusterEval: rollout engines,
frozen copies of both policies, reward actors; 'auto' on CUDA), or in this process (LocalEval below).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from rlhf_dist.algo import masked_mean, masked_sum, pairwise_accuracy
from rlhf_dist.backends.rollout.base import RolloutSample
from rlhf_dist.backends.rollout.hf_engine import HFEngine
from rlhf_dist.config import ConfigError, RLHFConfig, with_overrides
from rlhf_dist.config.topology import evaluates_on_cluster
from rlhf_dist.data import collate_pairs, encode_prompt
from rlhf_dist.data.experience import ModelInputs, pack_samples
from rlhf_dist.data.files import load_encoded_pairs, load_prompts, read_splits, resolve_data_files
from rlhf_dist.eval.judges import judge_scores, trained_on_judge
from rlhf_dist.models import load_reward_model, load_tokenizer
from rlhf_dist.models.forward import chunked_response_logprobs
from rlhf_dist.models.objectives import score_pairs
from rlhf_dist.models.reward_scoring import score_texts
from rlhf_dist.tracking import MetricsLogger, read_metrics
from rlhf_dist.utils import write_json

log = logging.getLogger(__name__)
N_EXAMPLES = 5  # generations kept in eval.json for the report


def load_eval_prompts(cfg: RLHFConfig) -> list[str]:
    """The first cfg.eval.num_prompts held-out prompts (data.eval_prompts_path, or the built-in eval split)."""
    files = resolve_data_files(cfg)
    return read_splits(files, {"eval_prompts": lambda path: load_prompts(cfg, path)})["eval_prompts"][
        : cfg.eval.num_prompts]


class LocalEval:
    """Evaluation's models in this process (eval.placement 'driver'): transformers generate for the policy
    and its start, their forwards for log-probs, the reward model for scores. driver/evaluation.py
    ClusterEval is the same interface on Ray actors."""

    def __init__(self, cfg: RLHFConfig, policy_dir: Path, start_dir: Path, reward_dir: Path | None):
        self.cfg, self.device = cfg, torch.device(cfg.cluster.device)
        self.policy = HFEngine(policy_dir, cfg.rollout, cfg.cluster.device, cfg.policy.dtype, cfg.eval.seed)
        self.start = HFEngine(start_dir, cfg.rollout, cfg.cluster.device, cfg.policy.dtype, cfg.eval.seed)
        self.reward_dir = reward_dir
        self._reward = None

    def sample(self, prompt_ids: list[list[int]]) -> tuple[list[RolloutSample], list[RolloutSample]]:
        """One response per prompt from each, seeded by eval.seed (same draws for policy and start)."""
        sampling = with_overrides(self.cfg.rollout.sampling, {"samples_per_prompt": 1}, section="rollout.sampling")
        return tuple([group[0] for group in engine.generate(prompt_ids, sampling, seed=self.cfg.eval.seed)]
                     for engine in (self.policy, self.start))

    def logprobs(self, inputs: ModelInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """([B, R] policy log-probs, [B, R] policy entropy, [B, R] start log-probs)."""
        width, chunk = inputs.response_width, self.cfg.eval.batch_size
        pol_lp, entropy = chunked_response_logprobs(self.policy.model, inputs.sequences, inputs.attention_mask,
                                                    width, chunk, with_entropy=True)
        ref_lp, _ = chunked_response_logprobs(self.start.model, inputs.sequences, inputs.attention_mask, width, chunk)
        return pol_lp, entropy, ref_lp

    def _reward_model(self):
        if self._reward is None:
            model = load_reward_model(self.cfg.reward_model, self.reward_dir, trainable=False)
            self._reward = (model, load_tokenizer(self.reward_dir, self.cfg.reward_model.trust_remote_code))
        return self._reward

    def scores(self, prompts: list[str], responses: list[str]) -> list[float]:
        model, tokenizer = self._reward_model()
        model.to(self.device)
        return score_texts(model, tokenizer, prompts, responses, self.cfg.data.max_length, self.device,
                           self.cfg.eval.batch_size)

    def pair_answers(self, pairs: list, pad_id: int) -> list:
        model, _ = self._reward_model()
        model.cpu()  # collate_pairs builds CPU batches
        size, answers = self.cfg.eval.batch_size, []
        with torch.no_grad():
            for i in range(0, len(pairs), size):
                batch = collate_pairs(pairs[i : i + size], pad_id)
                answers.append((*score_pairs(model, batch), batch["target"]))
        return answers

    def close(self) -> None:
        self.policy.shutdown()
        self.start.shutdown()

    def __enter__(self) -> LocalEval:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_same_tokenizer(policy_tok, reference_dir: Path, prompt: str) -> None:
    ref_tok = load_tokenizer(reference_dir)
    if len(ref_tok) != len(policy_tok) or encode_prompt(ref_tok, prompt) != encode_prompt(policy_tok, prompt):
        raise ConfigError([f"reference {reference_dir} has another tokenizer than the policy: KL and "
                           "perplexity need one shared vocabulary (pass the policy's starting model as --reference)"])


def _reward_metrics(cfg: RLHFConfig, models, reward_dir: Path, prompts: list[str], policy_texts: list[str],
                    start_texts: list[str]) -> dict:
    """RM scores of both response sets, and the RM's held-out pair accuracy."""
    from rlhf_dist.stages.reward import preference_metrics

    policy, start = models.scores(prompts, policy_texts), models.scores(prompts, start_texts)
    tokenizer = load_tokenizer(reward_dir, cfg.reward_model.trust_remote_code)
    files = resolve_data_files(cfg)
    pairs = load_encoded_pairs(cfg, tokenizer, files.eval_pairs, files.eval_pairs_format, "eval pairs")
    acc = preference_metrics(models.pair_answers(pairs, tokenizer.pad_token_id))
    return {"reward_mean": sum(policy) / len(policy), "reward_mean_start": sum(start) / len(start),
            "rm_accuracy": acc["accuracy"], "rm_kendall_tau": acc["kendall_tau"], "rm_eval_pairs": acc["n_pairs"]}


def _policy_metrics(models, samples: list[RolloutSample], pad_id: int) -> dict:
    """KL to the reference, perplexities, entropy and length on the policy's own samples."""
    inputs, _ = pack_samples(samples, pad_id)
    mask = inputs.action_mask  # [B, R]
    pol_lp, entropy, ref_lp = models.logprobs(inputs)
    return {
        "kl": float(masked_sum(pol_lp - ref_lp, mask, dim=1).mean()),
        "perplexity_policy": float(torch.exp(masked_mean(-pol_lp, mask))),
        "perplexity_reference": float(torch.exp(masked_mean(-ref_lp, mask))),
        "entropy_policy": float(masked_mean(entropy, mask)),
        "response_length": float(mask.sum(1).mean()),
    }


def _judge_metrics(judge: str, cfg: RLHFConfig, prompts: list[str], policy_texts: list[str],
                   start_texts: list[str]) -> dict:
    policy = judge_scores(judge, prompts, policy_texts)
    start = judge_scores(judge, prompts, start_texts)
    trained_on = [s.function for s in cfg.ppo.rewards if s.kind == "function" and s.function]
    return {
        "judge": judge,
        "judge_score_policy": sum(policy) / len(policy),
        "judge_score_start": sum(start) / len(start),
        "win_rate": pairwise_accuracy(torch.tensor(policy), torch.tensor(start)),  # win 1, tie 0.5
        "judge_is_training_reward": trained_on_judge(judge, trained_on),
    }


def evaluate_policy(cfg: RLHFConfig, policy_dir: str | Path, reference_dir: str | Path,
                    reward_dir: str | Path | None, judge: str, prompts: list[str] | None = None) -> dict:
    """Evaluate `policy_dir` against the starting policy `reference_dir` on held-out prompts.

    Logs the result to <run>/metrics.jsonl (phase "eval", at the run's last PPO step) and writes
    <run>/eval.json (the metrics plus a few example generations). Returns the metrics.
    """
    started = time.perf_counter()
    prompts = prompts if prompts is not None else load_eval_prompts(cfg)
    tokenizer = load_tokenizer(policy_dir)
    _check_same_tokenizer(tokenizer, Path(reference_dir), prompts[0])
    prompt_ids = [encode_prompt(tokenizer, p, cfg.data.max_prompt_length) for p in prompts]
    reward = Path(reward_dir) if reward_dir is not None else None
    if evaluates_on_cluster(cfg):
        from rlhf_dist.driver.evaluation import ClusterEval

        models = ClusterEval(cfg, Path(policy_dir), Path(reference_dir), reward)
    else:
        models = LocalEval(cfg, Path(policy_dir), Path(reference_dir), reward)
    with models:
        policy_samples, start_samples = models.sample(prompt_ids)
        metrics = _policy_metrics(models, policy_samples, tokenizer.pad_token_id)
        policy_texts, start_texts = ([tokenizer.decode(s.response_ids, skip_special_tokens=True) for s in samples]
                                     for samples in (policy_samples, start_samples))
        result = {"n_prompts": len(prompts), **metrics,
                  "response_length_start": sum(len(s.response_ids) for s in start_samples) / len(start_samples),
                  **_judge_metrics(judge, cfg, prompts, policy_texts, start_texts)}
        if reward is not None:
            result.update(_reward_metrics(cfg, models, reward, prompts, policy_texts, start_texts))
    result["time/eval"] = time.perf_counter() - started
    _save(cfg, result, prompts, policy_texts, start_texts,
          {"policy": str(policy_dir), "reference": str(reference_dir), "reward_model": str(reward_dir)})
    return result


def _save(cfg: RLHFConfig, result: dict, prompts: list[str], policy_texts: list[str], start_texts: list[str],
          dirs: dict[str, str]) -> None:
    """metrics.jsonl (phase "eval") and eval.json under the run dir."""
    run_dir = Path(cfg.run.output_dir)
    metrics_file = run_dir / "metrics.jsonl"
    ppo = read_metrics(metrics_file, "ppo")
    step = ppo[-1]["step"] if ppo else 0  # eval belongs to the policy after the last PPO step
    with MetricsLogger(run_dir, cfg.tracking) as tracker:
        tracker.log(result, step=step, phase="eval")
    examples = [{"prompt": p, "policy": a, "start": b}
                for p, a, b in zip(prompts[:N_EXAMPLES], policy_texts, start_texts)]
    write_json(run_dir / "eval.json", {**result, "step": step, "models": dirs, "examples": examples})
    log.info("eval: %s", {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()})
