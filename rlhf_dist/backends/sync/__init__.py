"""Weight sync, policy -> rollout engines: one interface, registered transports, one bucket at a time.

    sync = build_weight_sync(cfg, policy_group, rollout_group)   # once, after the roles exist
    bytes_sent = sync.sync()                                            # after every policy update

Every transport walks the same bucket plan (buckets.py: whole layers, at most rollout.sync_bucket_mb
sent per bucket) and handles ONE bucket at a time on the policy side: under ZeRO-3 all policy ranks
gather bucket i together, only rank 0 keeps what it sends, and the gathered weights are released
before bucket i+1 is gathered. The extra memory of a sync is therefore about one or two buckets, not
the model (tests/integration/test_weight_sync_memory.py measures it on 2-rank ZeRO-3).

The transports, one file each in transports/ with both of their ends, registered with their properties
(registry.py; the config's choices and rules read them):
- object_store (any device): rank 0 returns each bucket as numpy arrays; Ray puts it in the object
  store once and every engine fetches it from there, never through the driver.
- nccl (CUDA): rank 0 broadcasts each bucket GPU-to-GPU into every vLLM worker.
- cuda_ipc (CUDA, colocated): each policy rank shares its gathered bucket with the vLLM worker on its
  own GPU through CUDA IPC handles; no copy leaves the device.
- lora_adapter (rollout.lora_sync): with a LoRA policy and an engine that takes adapters, only the adapter
  is sent.
weight_buckets.py is the engines' end every merged sync shares (validation, whole fused vLLM layers).

No Ray here (backends/ sits below workers/): the transports call the typed role groups they are
given, whose methods start remote calls and return Pending results.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # at run time __getattr__ imports them: the config schema imports registry.py through this
    # package, which must stay light
    from rlhf_dist.backends.sync.base import WeightSync, build_weight_sync
    from rlhf_dist.backends.sync.buckets import Bucket, TensorMeta, plan_buckets
    from rlhf_dist.backends.sync.registry import TRANSPORTS

_HOME_OF = {"WeightSync": "base", "build_weight_sync": "base", "Bucket": "buckets", "TensorMeta": "buckets",
            "plan_buckets": "buckets", "TRANSPORTS": "registry"}

__all__ = ["TRANSPORTS", "Bucket", "TensorMeta", "WeightSync", "build_weight_sync", "plan_buckets"]


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module 'rlhf_dist.backends.sync' has no attribute {name!r}")
    return getattr(import_module(f"rlhf_dist.backends.sync.{_HOME_OF[name]}"), name)
