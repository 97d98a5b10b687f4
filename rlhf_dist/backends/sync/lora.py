"""Moved to backends/sync/transports/lora.py. Kept only for bench/weight_sync.py, which imports it from here;
delete this file when bench imports from the transport's module."""

from rlhf_dist.backends.sync.transports.lora import VLLM_MAX_LORA_RANK, sync_lora_adapter, wants_adapter_sync

__all__ = ["VLLM_MAX_LORA_RANK", "sync_lora_adapter", "wants_adapter_sync"]
