"""Methods mixed into every vLLM worker (`worker_extension_cls`), called via `LLM.collective_rpc`.

Imported by vLLM inside its workers only; `rlhf_dist.backends.rollout` never imports it.
Method names carry an `rlhf_` prefix: vLLM refuses extension attributes that clash with
the worker's own (the worker already has `update_weights`, `reload_weights`, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

# vLLM warns once per untouched layer on every partial reload ("Failed to load weights",
# "weights were not loaded"); with bucketed syncs that is expected, so those loggers are muted.
_NOISY_LOGGERS = (
    "vllm.model_executor.model_loader.reload.layerwise",
    "vllm.model_executor.model_loader.reload.inplace",
)


@contextmanager
def _quiet_partial_reload() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class WeightUpdateExtension:
    """Worker-side half of VLLMEngine.update_weights (`self` is the vLLM worker)."""

    def rlhf_packed_modules(self) -> dict[str, list[str]]:
        """The model's fused-module map, e.g. {'qkv_proj': ['q_proj', 'k_proj', 'v_proj'], ...}."""
        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        return {k: list(v) for k, v in getattr(model, "packed_modules_mapping", {}).items()}

    def rlhf_peak_memory(self) -> int:
        """This worker's peak CUDA reservation since the last call (then reset): its memory/rollout figure."""
        peak = torch.cuda.max_memory_reserved()
        torch.cuda.reset_peak_memory_stats()
        return int(peak)

    def rlhf_free_host_cache(self) -> None:
        """Free the pinned host blocks cached by torch (a level-1 sleep's weight copy lands there at wake_up).
        torch's CPU builds have no host cache: nothing to free."""
        free = getattr(torch._C, "_host_emptyCache", None)
        if free is not None and torch.cuda.is_available():
            free()

    def rlhf_load_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> int:
        """Load HF-format tensors in place; returns how many were given.

        Goes through the worker's `reload_weights` (checkpoint format -> vLLM's fused and,
        on CPU, repacked kernel layout): `model.load_weights` alone fails on CPU because the
        linear weights were repacked. Each TP rank takes its own shard.
        """
        with _quiet_partial_reload():
            self.reload_weights(weights_iterator=named_tensors, is_checkpoint_format=True)  # type: ignore[attr-defined]
        self._rlhf_refresh_tied([name for name, _ in named_tensors])
        return len(named_tensors)

    def _rlhf_refresh_tied(self, hf_names: list[str]) -> None:
        """Re-pack modules that share a reloaded weight (a tied lm_head).

        Why: on CPU every linear keeps a prepacked copy of its weight (oneDNN / sgl kernels).
        A tied lm_head gets no tensors of its own in a reload, so its copy would keep the
        OLD embedding and logits would silently come from stale weights. (No-op on CUDA.)
        """
        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        mapper = getattr(model, "hf_to_vllm_mapper", None)
        loaded = {((mapper.map_name(n) if mapper else n) or n).rpartition(".")[0] for n in hf_names}
        sharing: dict[int, list[str]] = {}
        modules = dict(model.named_modules())
        for name, module in modules.items():
            weight = module._parameters.get("weight")
            if weight is not None:
                sharing.setdefault(id(weight), []).append(name)
        for names in sharing.values():
            if len(names) < 2 or not loaded.intersection(names):
                continue
            for name in names:
                method = getattr(modules[name], "quant_method", None)
                if name not in loaded and method is not None:
                    method.process_weights_after_loading(modules[name])

    # ---- NCCL weight sync (CUDA): see rlhf_dist/backends/sync/transports/nccl.py ----
    def rlhf_nccl_init(self, host: str, port: int, rank_offset: int, world_size: int) -> int:
        """Join the policy -> engines broadcast group as rank rank_offset + this worker's TP rank."""
        from vllm.distributed import get_tensor_model_parallel_rank

        from rlhf_dist.backends.rollout.pynccl import create_communicator

        rank = rank_offset + get_tensor_model_parallel_rank()
        self._rlhf_nccl = create_communicator(host, port, rank, world_size, self.device)  # type: ignore[attr-defined]
        return rank

    def rlhf_nccl_receive(self, meta: list) -> int:
        """Receive one bucket (whole layers) from policy rank 0 and load it in place."""
        from rlhf_dist.backends.sync.transports.nccl import receive_bucket

        bucket = receive_bucket(self._rlhf_nccl, meta, self.device)  # type: ignore[attr-defined]
        return self.rlhf_load_weights(bucket)

    # ---- CUDA IPC weight sync (colocated): see rlhf_dist/backends/sync/transports/cuda_ipc.py ----
    def rlhf_ipc_receive(self, shared: list) -> int:
        """Open the bucket the policy rank on this worker's GPU shared, load it (a device-to-device copy),
        and drop the handles before the policy releases the bucket."""
        from rlhf_dist.backends.sync.transports.cuda_ipc import open_shared

        bucket = open_shared(shared, self.device)  # type: ignore[attr-defined]
        if not bucket:
            raise RuntimeError(f"CUDA IPC weight sync: no policy rank shares this worker's GPU ({self.device}); "
                               "cuda_ipc needs every vLLM worker colocated with a policy rank")
        loaded = self.rlhf_load_weights(bucket)
        del bucket
        torch.cuda.synchronize()
        return loaded
