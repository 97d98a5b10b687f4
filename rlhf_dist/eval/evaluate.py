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

No Ray: evaluation is a few forward passes, run where it is called (cfg.cluster.device).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from rlhf_dist.algo import masked_mean, masked_sum, pairwise_accuracy
from rlhf_dist.backends.rollout.base import RolloutSample
from rlhf_dist.backends.rollout.hf_engine import HFEngine
from rlhf_dist.config import RLHFConfig, with_overrides
from rlhf_dist.data import encode_prompt, load_records
from rlhf_dist.data.experience import pack_samples
from rlhf_dist.eval.judges import judge_scores, trained_on_judge
from rlhf_dist.models import load_reward_model, load_tokenizer
from rlhf_dist.models.forward import chunked_response_logprobs
from rlhf_dist.models.reward_scoring import score_texts
from rlhf_dist.utils import write_json
from rlhf_dist.data.files import load_encoded_pairs, resolve_data_files
from rlhf_dist.tracking import MetricsLogger, read_metrics

log = logging.getLogger(__name__)
N_EXAMPLES = 5  # generations kept in eval.json for the report


def load_eval_prompts(cfg: RLHFConfig) -> list[str]:
    """The first cfg.eval.num_prompts held-out prompts (data.eval_prompts_path, or the built-in eval split)."""
    path = resolve_data_files(cfg).eval_prompts
    loaded = load_records(path, "prompt", on_error=cfg.data.on_error)
    prompts = [r.prompt for r in loaded.records][: cfg.eval.num_prompts]
    if not prompts:
        raise ValueError(f"no held-out prompts in {path}")
    return prompts


def _sample(engine: HFEngine, cfg: RLHFConfig, prompt_ids: list[list[int]]) -> list[RolloutSample]:
    """One response per prompt, seeded by cfg.eval.seed (same draws for policy and start)."""
    sampling = with_overrides(cfg.rollout.sampling, {"samples_per_prompt": 1}, section="rollout.sampling")
    return [group[0] for group in engine.generate(prompt_ids, sampling, seed=cfg.eval.seed)]


def _check_same_tokenizer(policy_tok, reference_dir: Path, prompt: str) -> None:
    ref_tok = load_tokenizer(reference_dir)
    if len(ref_tok) != len(policy_tok) or encode_prompt(ref_tok, prompt) != encode_prompt(policy_tok, prompt):
        raise ValueError(f"reference {reference_dir} has another tokenizer than the policy: KL and "
                         "perplexity need one shared vocabulary")


def _reward_metrics(cfg: RLHFConfig, reward_dir: Path, prompts: list[str], policy_texts: list[str],
                    start_texts: list[str], device: torch.device) -> dict:
    """RM scores of both response sets, and the RM's held-out pair accuracy."""
    from rlhf_dist.stages.reward import evaluate_reward_model

    model = load_reward_model(cfg.reward_model, reward_dir, trainable=False).to(device)
    tokenizer = load_tokenizer(reward_dir, cfg.reward_model.trust_remote_code)
    bs, max_len = cfg.eval.batch_size, cfg.data.max_length
    policy = score_texts(model, tokenizer, prompts, policy_texts, max_len, device, bs)
    start = score_texts(model, tokenizer, prompts, start_texts, max_len, device, bs)
    files = resolve_data_files(cfg)
    pairs = load_encoded_pairs(cfg, tokenizer, files.eval_pairs, files.eval_pairs_format, "eval pairs")
    # evaluate_reward_model collates on the CPU: run it there
    acc = evaluate_reward_model(model.cpu(), pairs, tokenizer.pad_token_id, bs)
    return {"reward_mean": sum(policy) / len(policy), "reward_mean_start": sum(start) / len(start),
            "rm_accuracy": acc["accuracy"], "rm_kendall_tau": acc["kendall_tau"], "rm_eval_pairs": acc["n_pairs"]}


def _policy_metrics(policy: HFEngine, reference: HFEngine, samples: list[RolloutSample], cfg: RLHFConfig) -> dict:
    """KL to the reference, perplexities, entropy and length on the policy's own samples."""
    inputs, _ = pack_samples(samples, policy.pad_id)
    mask, width, chunk = inputs.action_mask, inputs.response_width, cfg.eval.batch_size  # mask [B, R]
    pol_lp, entropy = chunked_response_logprobs(policy.model, inputs.sequences, inputs.attention_mask, width, chunk,
                                                with_entropy=True)
    ref_lp, _ = chunked_response_logprobs(reference.model, inputs.sequences, inputs.attention_mask, width, chunk)
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
    device = torch.device(cfg.cluster.device)
    prompts = prompts if prompts is not None else load_eval_prompts(cfg)
    tokenizer = load_tokenizer(policy_dir)
    _check_same_tokenizer(tokenizer, Path(reference_dir), prompts[0])
    prompt_ids = [encode_prompt(tokenizer, p, cfg.data.max_prompt_length) for p in prompts]
    policy = HFEngine(policy_dir, cfg.rollout, cfg.cluster.device, cfg.policy.dtype, cfg.eval.seed)
    reference = HFEngine(reference_dir, cfg.rollout, cfg.cluster.device, cfg.policy.dtype, cfg.eval.seed)
    try:
        policy_samples, start_samples = _sample(policy, cfg, prompt_ids), _sample(reference, cfg, prompt_ids)
        metrics = _policy_metrics(policy, reference, policy_samples, cfg)
    finally:
        policy.shutdown()
        reference.shutdown()
    decode = lambda samples: [tokenizer.decode(s.response_ids, skip_special_tokens=True) for s in samples]  # noqa: E731
    policy_texts, start_texts = decode(policy_samples), decode(start_samples)
    result = {"n_prompts": len(prompts), **metrics,
              "response_length_start": sum(len(s.response_ids) for s in start_samples) / len(start_samples),
              **_judge_metrics(judge, cfg, prompts, policy_texts, start_texts)}
    if reward_dir is not None:
        result.update(_reward_metrics(cfg, Path(reward_dir), prompts, policy_texts, start_texts, device))
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
