"""Per-actor memory estimates for each role, from model facts and the config. Pure arithmetic.

Formulas (bytes; b = bytes per parameter of the role's dtype, P = parameters, T = trainable):

- training states (ZeRO paper, Rajbhandari et al. 2020): mixed precision Adam holds b*P params,
  b*T grads and 12*T optimizer bytes (fp32 master copy + Adam m + v): 16 bytes/param in bf16.
  fp32 training holds 4 + 4 + 8 = 16 too. ZeRO-1 divides optimizer states by the data-parallel
  size, ZeRO-2 also gradients, ZeRO-3 also parameters. Offload moves optimizer states (+ fp32
  grads) or parameters to host memory.
- activations per decoder layer and token at 16 bits, flash/SDPA attention (no s^2 term;
  Korthikanti et al. 2022 counted 34*h for a GELU MLP): norms 4h, attention 6h + 4*kv_dim,
  gated MLP 2h + 8i. Gradient checkpointing keeps only each layer's input (2h) plus one layer.
- logits: [B, L, V] in the model dtype and [B, R, V] fp32 log-softmax; twice when training.
- entropy (the policy's training measures it every micro-batch: models/forward.py response_logprobs
  with_entropy, algo entropy_from_logits): fp32 [B, R, V] log_softmax, its clamp, exp and the product
  live at once (3 of them saved for backward): 4 x B x R x V x 4 bytes on top of the logits.
- weight sync (backends/sync/), bounded: the weights travel in buckets of whole layers
  (rollout.sync_bucket_mb, or one layer / the embedding when that is bigger). Under ZeRO-3 every
  policy rank gathers one bucket at a time (an all-gather: each receives it), only rank 0 keeps and
  sends it, then frees it. Device: one bucket on every ZeRO-3 rank, one more on rank 0 (the next
  bucket gathers while the previous one is sent; below ZeRO-3, its flat send buffer). Host: the
  object store holds rollout.sync_buckets_in_flight buckets put by rank 0; NCCL and CUDA IPC
  make no host copy. Each engine receives one bucket at a time.
- every trainer loads the full model on the host first (from_pretrained). The reward actor and
  the reference with ppo.reference_zero_stage 0 hold a full replica on one device; with 3 the
  reference group shards it (ZeRO-3 inference): params / ranks plus one gathered unit in forward,
  and loading partitions tensor by tensor (about one checkpoint file on the host at a time).
- vLLM (CUDA) takes gpu_memory_utilization x device memory: weights / TP, a profile-run
  activation peak, CUDA graphs unless eager, its CUDA context and TP group's NCCL buffers (vLLM counts
  what is in use when it profiles), the rest is KV cache. A weight-sync NCCL group joins later: on top.
- vLLM sleep (colocated on CUDA, config/topology.py engine_sleep_level): level 1 copies the weights (and
  CUDA graphs) to pinned host memory, which stays in torch's pinned-memory cache after wake_up; level 2
  discards the weights. The first sleep, while the other roles load, is level 1 (a host copy during
  load, freed at the first wake_up where later sleeps are level 2); the LoRA adapter sync keeps level 1
  (a host copy for the whole run).
- outside PyTorch's allocator, per process and device: the CUDA context (CUDA_CONTEXT) and, per NCCL
  communicator it is a member of, NCCL's buffers (NCCL_BUFFERS); inside it, fragmentation (ALLOCATOR_SLACK).

What stays allocated, the rule plan.py sums by:
- device memory (CUDA): PyTorch's caching allocator keeps each process's high-water mark, so every
  actor holds its own PEAK for the whole run, and a GPU's load is the SUM of the peaks of the actors on
  it. vLLM holds its fixed fraction. Colocated with sleeping engines the trainers empty their caches
  after training and inference (workers/trainers.py): the sum is then an upper bound.
- host memory (and the device RAM on CPU): large tensors are freed back to the OS (glibc mmap), so
  host transients count only during their phase (load, sync), summed over the actors in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf_dist.cluster.facts import ModelFacts
from rlhf_dist.config.schema_parts import LoRAConfig, RolloutConfig, TrainConfig

GIB = 1024**3
MIB = 1024**2
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
CUDA_CONTEXT = 0.5 * GIB  # per process per device: CUDA context and loaded kernels (outside the allocator)
ALLOCATOR_SLACK = 0.5 * GIB  # a trainer's caching allocator: reserved beyond live tensors (fragmentation)
# Per NCCL communicator a process is a member of (outside the allocator): NCCL_BUFFSIZE 4 MiB per
# channel and peer for the simple protocol, plus LL/LL128 buffers, over up to 32 channels on NVLink.
NCCL_BUFFERS = 0.5 * GIB
ENTROPY_FP32_COPIES = 4  # fp32 [B, R, V] tensors alive at once in entropy_from_logits (module docstring)
# host RSS of one actor with torch+transformers(+deepspeed); CPU: the tiny preset's trainers and reference measured
# 0.52-0.59 GiB peak RSS each (memory/<role>/peak_gib; their models are < 1 MiB), so this is the runtime alone
PROCESS_HOST = {"cpu": 0.55 * GIB, "cuda": 2.0 * GIB}
VLLM_BATCHED_TOKENS = 8192  # vLLM's profile run: max_num_batched_tokens
VLLM_MAX_SEQS = 256  # vLLM default max_num_seqs: logits of one decode step
VLLM_CUDA_GRAPHS = 1.0 * GIB  # captured graphs when enforce_eager is false


@dataclass
class Memory:
    """What one actor of a role needs: resident bytes plus transient bytes by phase."""

    role: str
    params: float = 0.0
    grads: float = 0.0
    optimizer: float = 0.0
    vllm_weights: float = 0.0
    kv_cache: float = 0.0
    context: float = 0.0  # CUDA context + allocator slack; vLLM: its overheads inside its fraction
    nccl: float = 0.0  # NCCL communicators' buffers (outside the allocator, and outside vLLM's fraction)
    activations: dict[str, float] = field(default_factory=dict)  # phase -> device bytes (inference, train)
    sync: float = 0.0  # device bytes held during the weight sync, every rank
    sync_rank0: float = 0.0  # more device bytes during the sync on rank 0 only (the sender)
    host: float = 0.0  # resident host bytes: offloaded states, the process itself
    host_transient: dict[str, float] = field(default_factory=dict)  # phase -> host bytes (load, sync)
    host_sync_rank0: float = 0.0  # host bytes during the sync on rank 0 only (object-store buckets)
    kv_tokens: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def resident(self) -> float:
        return (self.params + self.grads + self.optimizer + self.vllm_weights + self.kv_cache + self.context
                + self.nccl)

    def transient(self, rank: int = 0) -> dict[str, float]:
        """Device bytes beyond `resident` by phase, for one rank (rank 0 sends the weights)."""
        out = dict(self.activations)
        sync = self.sync + (self.sync_rank0 if rank == 0 else 0.0)
        if sync:
            out["sync"] = out.get("sync", 0.0) + sync
        return out

    def host_phases(self, rank: int = 0) -> dict[str, float]:
        """Host bytes beyond `host` by phase, for one rank."""
        out = dict(self.host_transient)
        if rank == 0 and self.host_sync_rank0:
            out["sync"] = out.get("sync", 0.0) + self.host_sync_rank0
        return out

    def rank_peak(self, rank: int) -> float:
        """What one rank's allocator keeps: resident plus its worst phase."""
        return self.resident + max(self.transient(rank).values(), default=0.0)

    @property
    def peak(self) -> float:
        """The worst rank's peak (rank 0)."""
        return self.rank_peak(0)


def lora_params(facts: ModelFacts, lora: LoRAConfig) -> int:
    """Trainable LoRA parameters: r * (in + out) for every adapted linear of every layer."""
    shapes = facts.linear_shapes()
    names = shapes if lora.target_modules == "all-linear" else [n for n in lora.target_modules if n in shapes]
    return facts.layers * sum(lora.r * (shapes[n][0] + shapes[n][1]) for n in names)


def layer_activation_bytes(facts: ModelFacts, tokens: int, dtype_bytes: int) -> float:
    """Saved activations of one decoder layer for `tokens` tokens (see the module docstring)."""
    mlp = 2 * facts.hidden + (8 if facts.gated_mlp else 4) * facts.intermediate
    per_token_16bit = 4 * facts.hidden + 6 * facts.hidden + 4 * facts.kv_dim + mlp
    return tokens * per_token_16bit * dtype_bytes / 2


def logits_bytes(facts: ModelFacts, batch: int, seq: int, response: int, dtype_bytes: int, train: bool) -> float:
    once = batch * seq * facts.vocab * dtype_bytes + batch * response * facts.vocab * 4
    return 2 * once if train else once


def entropy_bytes(facts: ModelFacts, batch: int, response: int) -> float:
    """The entropy's fp32 [B, R, V] temporaries in the policy's training step (module docstring)."""
    return ENTROPY_FP32_COPIES * batch * response * facts.vocab * 4


def activation_bytes(facts: ModelFacts, batch: int, seq: int, dtype_bytes: int, checkpointing: bool) -> float:
    """Training activations of the decoder stack for one micro-batch (logits not included)."""
    layer = layer_activation_bytes(facts, batch * seq, dtype_bytes)
    if checkpointing:
        return facts.layers * batch * seq * facts.hidden * dtype_bytes + layer
    return facts.layers * layer


@dataclass(frozen=True)
class Shape:
    """Sequence shape of one PPO step: total length and response length."""

    seq: int
    response: int


CHECKPOINT_FILE = 5.0 * GIB  # a Hugging Face checkpoint shard (max_shard_size 5GB): what zero.Init loading holds


def largest_unit(facts: ModelFacts, dtype_bytes: int) -> float:
    """Bytes of the biggest piece gathered whole: one decoder layer, or the embedding / LM head."""
    layer = sum(i * o for i, o in facts.linear_shapes().values()) + 2 * facts.hidden
    return dtype_bytes * max(layer, facts.vocab * facts.hidden)


@dataclass(frozen=True)
class SyncPlan:
    """How the policy's weights reach the engines (rollout.sync_*): transport and one bucket's bytes."""

    backend: str  # object_store | nccl | cuda_ipc
    bucket: float  # rollout.sync_bucket_mb, or the largest whole unit when that is bigger
    in_flight: int  # object store: buckets held in the store at once


def sync_plan(facts: ModelFacts, cfg: RolloutConfig, dtype: str) -> SyncPlan:
    bucket = max(cfg.sync_bucket_mb * MIB, largest_unit(facts, DTYPE_BYTES[dtype]))
    return SyncPlan(cfg.sync_backend, bucket, cfg.sync_buckets_in_flight)


def _sync_memory(mem: Memory, sync: SyncPlan, stage: int, device: str) -> None:
    """The bounded weight sync of a policy rank (module docstring)."""
    mem.sync = sync.bucket if stage == 3 else 0.0  # every rank receives the gathered bucket
    if device == "cuda" or stage == 3:  # the next bucket while one is sent, or the flat send buffer
        mem.sync_rank0 = sync.bucket
    if sync.backend == "object_store":
        mem.host_sync_rank0 = sync.in_flight * sync.bucket


def trainer_memory(role: str, facts: ModelFacts, params: int, train: TrainConfig, dtype: str, dp: int,
                   lora: LoRAConfig, shape: Shape, checkpointing: bool, lm_head: bool, device: str,
                   inference_chunk: int | None = None, sync: SyncPlan | None = None, entropy: bool = False,
                   nccl_groups: int = 0) -> Memory:
    """A DeepSpeed (or torch) data-parallel rank of the policy or the critic.

    inference_chunk: rows per no-grad log-prob/value pass (ppo.inference_chunk_size; None: 2 micro-batches).
    sync: the policy's weight sync to the engines (None: this role sends no weights).
    entropy: the training step computes the entropy over the vocabulary (the policy).
    nccl_groups: NCCL communicators this rank is a member of (CUDA)."""
    b = DTYPE_BYTES[dtype]
    trainable = lora_params(facts, lora) if lora.enabled else params
    optimizer = (12 if b < 4 else 8) * trainable
    grads = b * trainable
    stage = train.zero_stage if train.backend == "deepspeed" else 0
    shard_params = b * params / (dp if stage == 3 else 1)
    optimizer /= dp if stage >= 1 else 1
    grads /= dp if stage >= 2 else 1
    mem = Memory(role, params=shard_params, grads=grads, optimizer=optimizer, context=_context(device),
                 nccl=nccl_groups * NCCL_BUFFERS, host=PROCESS_HOST[device])
    if train.offload_optimizer:
        mem.host += optimizer + 4 * trainable / dp  # fp32 gradient partition lives with the optimizer
        mem.optimizer = 0.0
    live = 0.0
    if stage == 3:  # gathered layers beyond this rank's shard, bounded by stage3_max_live_parameters
        live = b * min(params * (1 - 1 / dp), train.zero3_max_live_parameters)
        if train.offload_params:
            mem.host += shard_params
            mem.params = 0.0
    chunk = inference_chunk or 2 * train.micro_batch_size
    infer = layer_activation_bytes(facts, chunk * shape.seq, b)
    train_act = activation_bytes(facts, train.micro_batch_size, shape.seq, b, checkpointing)
    if lm_head:
        infer += logits_bytes(facts, chunk, shape.seq, shape.response, b, train=False)
        train_act += logits_bytes(facts, train.micro_batch_size, shape.seq, shape.response, b, train=True)
    if entropy:
        train_act += entropy_bytes(facts, train.micro_batch_size, shape.response)
    mem.activations = {"inference": infer + live, "train": train_act + live}
    # from_pretrained builds the full model on the host first; offloaded states only exist after that
    mem.host_transient = {"load": max(0.0, b * params - (mem.host - PROCESS_HOST[device]))}
    if sync is not None:
        _sync_memory(mem, sync, stage, device)
    if lora.enabled:
        mem.notes.append(f"LoRA r={lora.r}: {trainable / 1e6:.1f}M trainable parameters")
    return mem


def _context(device: str) -> float:
    """A trainer's or frozen model's overhead beyond its tensors on one GPU: CUDA context + allocator slack."""
    return CUDA_CONTEXT + ALLOCATOR_SLACK if device == "cuda" else 0.0


def inference_memory(role: str, facts: ModelFacts, params: int, dtype: str, batch: int, shape: Shape,
                     lm_head: bool, device: str, shards: int = 0, nccl_groups: int = 0) -> Memory:
    """A frozen reference or reward actor: one full replica on one device (shards 0), or one rank of
    a ZeRO-3 inference group of `shards` ranks (1/shards of the weights, one unit gathered at a time)."""
    b = DTYPE_BYTES[dtype]
    act = layer_activation_bytes(facts, batch * shape.seq, b)
    if lm_head:
        act += logits_bytes(facts, batch, shape.seq, shape.response, b, train=False)
    weights, load = b * params, b * params
    if shards:
        weights = b * params / shards
        act += largest_unit(facts, b)
        load = weights + min(CHECKPOINT_FILE, b * params)
    mem = Memory(role, params=weights, context=_context(device), nccl=nccl_groups * NCCL_BUFFERS,
                 activations={"inference": act}, host=PROCESS_HOST[device], host_transient={"load": load})
    if shards:
        mem.notes.append(f"ZeRO-3 inference over {shards} rank{'s' if shards > 1 else ''}: "
                         f"1/{shards} of the weights per rank, one layer gathered at a time")
    return mem


def _sleep_host_copy(mem: Memory, sleep: tuple[int, int], weights: float, graphs: float) -> None:
    """Pinned host memory of a sleeping engine (module docstring): the weights at level 1, CUDA graphs always."""
    at_load, later = sleep
    if later == 1:  # every sleep copies the weights; the same cached pinned blocks serve each one
        mem.host += weights + graphs
        mem.notes.append(f"sleep level 1 (adapter sync keeps the base weights): {weights / GIB:.1f} GiB of "
                         "pinned host memory per engine for the whole run")
        return
    if graphs:
        mem.host_transient["train"] = graphs  # freed at each wake_up
    if at_load == 1:
        mem.host_transient["load"] = weights + graphs
        mem.notes.append(f"sleep level 1 while the others load ({weights / GIB:.1f} GiB pinned host memory per "
                         "engine, freed at the first wake_up), level 2 after each training phase")


def kv_bytes_per_token(facts: ModelFacts, dtype: str, tp: int) -> float:
    """K and V of every layer for one token on one device (KV heads split over TP, replicated if fewer)."""
    kv_heads = max(1, -(-facts.kv_heads // tp))
    return 2 * facts.layers * kv_heads * facts.head_dim * DTYPE_BYTES[dtype]


def rollout_memory(facts: ModelFacts, params: int, cfg: RolloutConfig, dtype: str, device: str,
                   device_bytes: float, shape: Shape, sleep: tuple[int, int] | None = None) -> Memory:
    """One vLLM engine, per device it spans (TP shards on CUDA; all of it on CPU); host: the whole engine.

    sleep: (level of the first sleep while the others load, level of every later one) where the engines
    sleep (config/topology.py engine_sleep_level), None where they stay awake."""
    b, tp = DTYPE_BYTES[dtype], cfg.tensor_parallel_size if device == "cuda" else 1
    weights = b * params / tp
    bucket = sync_plan(facts, cfg, dtype).bucket  # every TP worker receives the whole bucket
    mem = Memory("rollout", vllm_weights=weights, host=PROCESS_HOST[device], sync=bucket)
    if cfg.sync_backend == "object_store":
        mem.host_transient["sync"] = bucket
    if device == "cpu":
        mem.kv_cache = cfg.kv_cache_gib * GIB
    else:
        reserve = cfg.gpu_memory_utilization * device_bytes
        act = VLLM_BATCHED_TOKENS * (2 * facts.hidden + 2 * facts.intermediate / tp) * b
        act += VLLM_MAX_SEQS * facts.vocab * 4
        graphs = 0.0 if cfg.enforce_eager else VLLM_CUDA_GRAPHS
        tp_group = NCCL_BUFFERS if tp > 1 else 0.0
        mem.context = act + graphs + CUDA_CONTEXT + tp_group  # inside the fraction: vLLM counts all of it
        mem.kv_cache = reserve - weights - mem.context
        mem.nccl = NCCL_BUFFERS if cfg.sync_backend == "nccl" else 0.0  # joins after vLLM sized its KV cache
        if sleep is not None:
            _sleep_host_copy(mem, sleep, b * params, graphs * tp)
    mem.kv_tokens = max(0, int(mem.kv_cache // kv_bytes_per_token(facts, dtype, tp)))
    if mem.kv_tokens:
        mem.notes.append(f"KV cache holds {mem.kv_tokens:,} tokens = {mem.kv_tokens // shape.seq:,} full sequences")
    return mem


EVAL_GENERATE_ROWS = 32  # backends/rollout/hf_engine.py ROWS_PER_CHUNK: rows per generate() call


def driver_eval_bytes(policy: ModelFacts, policy_params: int, dtype: str, eval_batch: int, shape: Shape,
                      reward: tuple[ModelFacts, int, str] | None = None) -> float:
    """GPU bytes of the evaluation in the driver process (eval/evaluate.py, `rlhf-dist eval` and the pipeline,
    after PPO): the trained and the starting policy, two full replicas, sample in chunks of 32 rows (KV cache)
    and score log-probs with entropy in chunks of eval.batch_size; then, both freed, the reward model
    (facts, parameters, dtype) scores. Its CUDA context and allocator slack on top."""
    b = DTYPE_BYTES[dtype]
    generate = EVAL_GENERATE_ROWS * shape.seq * kv_bytes_per_token(policy, dtype, 1)  # the KV cache at the end
    generate += layer_activation_bytes(policy, EVAL_GENERATE_ROWS * (shape.seq - shape.response), b)  # prefill
    score = layer_activation_bytes(policy, eval_batch * shape.seq, b)
    score += logits_bytes(policy, eval_batch, shape.seq, shape.response, b, train=False)
    score += entropy_bytes(policy, eval_batch, shape.response)
    peak = 2 * b * policy_params + max(generate, score)
    if reward is not None:
        facts, params, rm_dtype = reward
        rm_b = DTYPE_BYTES[rm_dtype]
        peak = max(peak, rm_b * params + layer_activation_bytes(facts, eval_batch * shape.seq, rm_b))
    return peak + _context("cuda")
