"""Cross-field rules of RLHFConfig. Each raises ValueError naming the fields involved."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf_dist.algo.registry import ADVANTAGES
from rlhf_dist.rewards import REWARD_SOURCES
from rlhf_dist.backends.sync.registry import TRANSPORTS
from rlhf_dist.config.topology import COLOCATED, ROLES, needs_critic, placement_layout, resources, stage_ranks

_EPS = 1e-9  # GPU shares are float sums (5 x 0.2 GPU is one GPU)

if TYPE_CHECKING:
    from rlhf_dist.config.schema import RLHFConfig
    from rlhf_dist.config.schema_parts import TrainConfig


def _check_batches(name: str, train: "TrainConfig", dp_size: int) -> None:
    per_step = train.micro_batch_size * dp_size
    if train.global_batch_size % per_step != 0:
        raise ValueError(
            f"{name}.global_batch_size ({train.global_batch_size}) must be divisible by "
            f"micro_batch_size ({train.micro_batch_size}) x data-parallel size ({dp_size}) = {per_step}"
        )


def _check_engine(name: str, train: "TrainConfig") -> None:
    if train.backend == "torch" and (train.zero_stage != 0 or train.offload_optimizer or train.offload_params):
        raise ValueError(f"{name}.backend 'torch' is single-process: set zero_stage 0 and no offload, or use deepspeed")
    if train.offload_params and train.zero_stage != 3:
        raise ValueError(f"{name}.offload_params needs zero_stage 3 (got {train.zero_stage})")


def _check_devices(cfg: "RLHFConfig") -> None:
    cl = cfg.cluster
    for role in ROLES:
        res = resources(cfg, role)
        if cl.device == "cpu" and res.gpus_per_actor > 0:
            raise ValueError(f"cluster.{role}.gpus_per_actor is {res.gpus_per_actor} but cluster.device is 'cpu'")
        if cl.device == "cuda" and res.gpus_per_actor == 0:
            raise ValueError(f"cluster.{role}.gpus_per_actor must be > 0 when cluster.device is 'cuda'")
        if cl.device == "cuda" and res.gpus_per_actor > 1 and res.gpus_per_actor != int(res.gpus_per_actor):
            raise ValueError(f"cluster.{role}.gpus_per_actor is {res.gpus_per_actor:g}: Ray grants more than one GPU "
                             "in whole GPUs only (use a whole number, or a fraction below 1 to share a GPU)")
    _check_sync(cfg)
    _check_nccl_ranks_apart(cfg)
    if cl.device == "cpu" and cfg.rollout.tensor_parallel_size > 1:
        raise ValueError("rollout.tensor_parallel_size > 1 needs cluster.device 'cuda'")
    need = cfg.rollout.tensor_parallel_size
    if cl.device == "cuda" and cl.rollout.gpus_per_actor < need and (need > 1 or not cl.colocate):
        # Ray sets each rollout actor's CUDA_VISIBLE_DEVICES to the GPUs it reserved (a fraction: one
        # device), so a TP engine's workers past the first would find no device (vLLM fails on cuda:1).
        raise ValueError(
            f"cluster.rollout.gpus_per_actor ({cl.rollout.gpus_per_actor:g}) < rollout.tensor_parallel_size ({need})"
            f"{' with cluster.colocate true' if cl.colocate else ''}: each engine sees only the GPUs its actor "
            "reserves, and a TP engine needs one per shard")


def _check_sync(cfg: "RLHFConfig") -> None:
    """The weight transport's registered properties (backends/sync/registry.py) against the layout."""
    cl, name = cfg.cluster, cfg.rollout.sync_backend
    transport = TRANSPORTS.get(name)
    if cl.device not in transport.devices or (transport.needs_vllm and cfg.rollout.backend != "vllm"):
        needs = f"cluster.device {' or '.join(repr(d) for d in transport.devices)}"
        raise ValueError(f"rollout.sync_backend '{name}' needs {needs}"
                         + (" and rollout.backend 'vllm'" if transport.needs_vllm else ""))
    if transport.colocation == "forbidden":
        _check_own_gpus(cfg, name, transport.why)
    if transport.colocation == "required":
        if not cl.colocate:
            raise ValueError(f"rollout.sync_backend '{name}' needs cluster.colocate true: {transport.why}; use "
                             f"{_other_transports(cfg, 'required', ' or ')} when disaggregated")
        _check_same_gpu_layout(cfg, name)
    if cfg.ppo.max_staleness and cl.colocate and cl.device == "cuda" and cfg.rollout.backend == "vllm":
        raise ValueError(f"ppo.max_staleness {cfg.ppo.max_staleness} with cluster.colocate true on CUDA: colocated "
                         "vLLM engines sleep while the trainers train, so nothing can generate ahead; set "
                         "ppo.max_staleness 0 or give the engines their own GPUs")


def _other_transports(cfg: RLHFConfig, colocation: str, joiner: str, same: bool = False) -> str:
    """The transports this device and engine allow whose colocation is (same) / is not `colocation`, quoted."""
    names = [t.name for t in TRANSPORTS if t.name in TRANSPORTS.choices() and cfg.cluster.device in t.devices
             and (cfg.rollout.backend == "vllm" or not t.needs_vllm) and (t.colocation == colocation) == same]
    return joiner.join(f"'{n}'" for n in names) or "'object_store'"


def _check_own_gpus(cfg: RLHFConfig, name: str, why: str) -> None:
    """A transport that needs every engine on GPUs of its own (colocation 'forbidden')."""
    cl = cfg.cluster
    same_gpu = _other_transports(cfg, "required", " or ", same=True)
    if cl.colocate:
        raise ValueError(f"rollout.sync_backend '{name}' with cluster.colocate true: policy rank 0 and an engine's "
                         f"worker share a GPU, and {why}; use sync_backend {same_gpu}")
    if cl.rollout.gpus_per_actor < 1:
        raise ValueError(f"rollout.sync_backend '{name}' with cluster.rollout.gpus_per_actor "
                         f"{cl.rollout.gpus_per_actor:g}: Ray may put an engine worker beside policy rank 0 (or "
                         f"another engine) on one GPU, and {why}; give each engine whole GPUs, or colocate and use "
                         f"{same_gpu}")


def _check_same_gpu_layout(cfg: RLHFConfig, name: str) -> None:
    """A transport whose engine workers take weights from the policy rank on their own GPU (colocation
    'required', e.g. CUDA IPC: each rank shares the whole gathered bucket), else the first sync fails
    ("no policy rank shares this worker's GPU")."""
    engines, ranks, tp = cfg.rollout.num_engines, cfg.cluster.policy.num_actors, cfg.rollout.tensor_parallel_size
    if engines > ranks:
        raise ValueError(f"rollout.sync_backend '{name}' with rollout.num_engines {engines} > cluster.policy."
                         f"num_actors {ranks}: colocated bundle i holds engine i and policy rank i, so engines "
                         f"{ranks}..{engines - 1} sit on GPUs with no policy rank and get no weights at the first "
                         "sync; use at most as many engines as policy ranks, or sync_backend 'object_store'")
    if tp > 1:
        raise ValueError(f"rollout.sync_backend '{name}' with rollout.tensor_parallel_size {tp} and "
                         f"cluster.colocate true: an engine's {tp} workers run on {tp} GPUs but its bundle holds one "
                         "policy rank, and a worker takes weights only from a rank on its own GPU, so the others "
                         "get no weights at the first sync; use tensor_parallel_size 1 or sync_backend 'object_store'")
    for i, bundle in enumerate(placement_layout(cfg)[COLOCATED][:engines]):
        if bundle.gpu > 1 + _EPS:  # a bundle of more than one GPU: Ray picks each actor's GPU inside it
            raise ValueError(f"rollout.sync_backend '{name}' with cluster.colocate true: bundle {i} "
                             f"({', '.join(r for r, _ in bundle.actors)}) reserves {bundle.gpu:g} GPUs, so Ray may "
                             f"put engine {i} and policy rank {i} on different GPUs, and a worker takes weights "
                             "only from the policy rank on its own GPU; lower cluster.<role>.gpus_per_actor until "
                             "each bundle sums to at most 1")


def _nccl_roles(cfg: RLHFConfig) -> list[str]:
    """Roles whose ranks form one NCCL group on CUDA (workers/role_groups.py): the trainers, the ZeRO-3 reference."""
    return ["policy"] + ["critic"] * needs_critic(cfg) + ["reference"] * (cfg.ppo.reference_zero_stage == 3)


def _check_nccl_ranks_apart(cfg: RLHFConfig) -> None:
    """NCCL refuses two ranks of one group on one GPU ("Duplicate GPU detected"), and Ray packs GPU
    fractions that fit together onto one GPU: two ranks' bundles must not fit on one device together."""
    if cfg.cluster.device != "cuda":
        return
    layout = placement_layout(cfg)
    for role in _nccl_roles(cfg):
        if resources(cfg, role).num_actors < 2:
            continue
        if cfg.cluster.colocate:
            shares = sorted(b.gpu for b in layout[COLOCATED] if any(r == role for r, _ in b.actors))
            what = f"cluster.colocate true: two bundles holding {role} ranks reserve {shares[0]:g} + {shares[1]:g} GPU"
        else:
            shares = [resources(cfg, role).gpus_per_actor] * 2
            what = f"cluster.{role}.gpus_per_actor {shares[0]:g} with {resources(cfg, role).num_actors} ranks"
        if shares[0] + shares[1] <= 1 + _EPS:
            raise ValueError(f"{what}: two {role} ranks fit on one GPU and Ray packs them there, but their NCCL "
                             "group refuses two ranks on one device; give each rank's bundle more than half a GPU")


def _check_ppo(cfg: "RLHFConfig") -> None:
    ppo, sampling = cfg.ppo, cfg.rollout.sampling
    n_samples = ppo.rollout_batch_size * sampling.samples_per_prompt
    for name, train, dp in (
        ("ppo.policy_train", ppo.policy_train, cfg.cluster.policy.num_actors),
        ("ppo.critic_train", ppo.critic_train, cfg.cluster.critic.num_actors),
    ):
        _check_batches(name, train, dp)
        _check_engine(name, train)
        if n_samples % train.global_batch_size != 0:
            raise ValueError(
                f"rollout batch ({ppo.rollout_batch_size} prompts x {sampling.samples_per_prompt} samples = "
                f"{n_samples}) must be a multiple of {name}.global_batch_size ({train.global_batch_size})"
            )
    # Group estimators (registered group=True) compare the samples of one prompt (rows k*G .. k*G + G - 1).
    group = ADVANTAGES.get(ppo.advantage).group
    if group and sampling.samples_per_prompt < 2:
        raise ValueError(
            f"ppo.advantage '{ppo.advantage}' compares samples of one prompt: "
            "set rollout.sampling.samples_per_prompt >= 2"
        )
    if ppo.dynamic_sampling and not group:
        raise ValueError(f"ppo.dynamic_sampling drops groups with zero group advantage, which needs a group "
                         f"estimator: ppo.advantage is '{ppo.advantage}', use one of "
                         f"{', '.join(ADVANTAGES.names(group=True))}")
    _check_ppo_variants(cfg)
    if ppo.kl.controller == "adaptive" and ppo.kl.target is None:
        raise ValueError("ppo.kl.controller 'adaptive' needs ppo.kl.target")
    for i, src in enumerate(ppo.rewards):  # what each source needs (rewards/registry.py: requires, check)
        source = REWARD_SOURCES.get(src.kind)
        for name in source.requires:
            if not getattr(src, name):
                raise ValueError(f"ppo.rewards[{i}].{name} is required for kind '{src.kind}'")
        if source.check is not None and (problem := source.check(src)):
            raise ValueError(f"ppo.rewards[{i}].{source.requires[0] if source.requires else 'kind'}: {problem}")
    if cfg.data.max_prompt_length >= cfg.data.max_length:
        raise ValueError(
            f"data.max_prompt_length ({cfg.data.max_prompt_length}) must be < data.max_length ({cfg.data.max_length})"
        )


def _check_ppo_variants(cfg: "RLHFConfig") -> None:
    """Asymmetric clip, importance-weight level and overlong shaping: bounds that only make sense together."""
    ppo, cap = cfg.ppo, cfg.rollout.sampling.max_new_tokens
    low, high = ppo.clip_bounds()
    if high < low:
        raise ValueError(f"ppo.clip_eps_high ({high}) must be >= the low bound ppo.clip_eps_low ({low}; unset, "
                         "both are ppo.clip_eps)")
    if ppo.tis_level != "token" and (ppo.tis_cap is None or ppo.old_logprobs != "recompute"):
        cap_text = "null" if ppo.tis_cap is None else ppo.tis_cap
        raise ValueError(f"ppo.tis_level '{ppo.tis_level}' weights the loss by truncated importance sampling, which "
                         f"is off here (ppo.tis_cap {cap_text}, ppo.old_logprobs '{ppo.old_logprobs}'): set "
                         "ppo.tis_cap and ppo.old_logprobs 'recompute', or remove ppo.tis_level")
    for i, src in enumerate(ppo.rewards):
        if src.kind == "overlong" and src.buffer_tokens is not None and src.buffer_tokens > cap:
            raise ValueError(f"ppo.rewards[{i}].buffer_tokens ({src.buffer_tokens}) must be <= the response cap "
                             f"rollout.sampling.max_new_tokens ({cap})")


def _check_data(cfg: "RLHFConfig") -> None:
    d, pipe = cfg.data, cfg.pipeline
    # A/B options act on A/B rows only: the configured files in format 'ab', or the A/B feedback the
    # pipeline collects itself (policy samples in round 1, every round after it).
    collects_ab = pipe.first_round_preferences == "policy_samples" or pipe.rounds > 1 or pipe.method == "online_dpo"
    if d.pairs_format != "ab" and not collects_ab:
        used = [f"data.tie_policy '{d.tie_policy}'" if d.tie_policy != "drop" else "",
                f"data.min_confidence {d.min_confidence}" if d.min_confidence > 0 else "",
                "data.confidence_as_weight true" if d.confidence_as_weight else "",
                "data.confidence_as_target true" if d.confidence_as_target else ""]
        used = [u for u in used if u]
        if used:
            raise ValueError(
                f"{', '.join(used)} applies to A/B feedback only, but data.pairs_format is '{d.pairs_format}' "
                "(rows without ties or confidences): set data.pairs_format 'ab' or remove the option")
    if d.rating_min_gap > 0 and d.pairs_format != "rating":
        raise ValueError(f"data.rating_min_gap {d.rating_min_gap} applies to data.pairs_format 'rating' only, "
                         f"not '{d.pairs_format}': set the format or remove the option")


def _check_dpo(cfg: "RLHFConfig") -> None:
    dpo = cfg.dpo
    if dpo.loss == "robust" and dpo.label_smoothing == 0:
        raise ValueError("dpo.loss 'robust' needs dpo.label_smoothing > 0 (the assumed rate of flipped labels, < 0.5); "
                         "with 0 it is plain DPO: use dpo.loss 'sigmoid'")
    if cfg.pipeline.method == "online_dpo" and cfg.feedback.source == "store":
        raise ValueError("pipeline.method 'online_dpo' labels new samples of the current policy every round; "
                         "feedback.source 'store' adds no new labels: use simulated, service or service-simulated")


def _check_feedback(cfg: "RLHFConfig") -> None:
    fb = cfg.feedback
    # every vote on a pair comes from a different annotator: with fewer, a round would wait forever
    needed = max(fb.overlap, fb.adaptive_overlap.max_votes or 0)
    if fb.source == "service-simulated" and fb.simulated.count < needed:
        raise ValueError(f"feedback.simulated.count ({fb.simulated.count}) is below the {needed} different "
                         "annotators a pair may need (feedback.overlap, feedback.adaptive_overlap.max_votes): "
                         "the round would wait forever")


def check_cross_field(cfg: "RLHFConfig") -> None:
    """Raise ValueError on the first rule the config breaks."""
    # SFT and reward-model training run on their role's group (cluster.policy / cluster.reward ranks), or in
    # the launching process for backend torch (one rank).
    _check_batches("sft.train", cfg.sft.train, stage_ranks(cfg, "sft", cfg.sft.train))
    _check_engine("sft.train", cfg.sft.train)
    _check_batches("reward.train", cfg.reward.train, stage_ranks(cfg, "rm", cfg.reward.train))
    _check_engine("reward.train", cfg.reward.train)
    _check_batches("dpo.train", cfg.dpo.train, stage_ranks(cfg, "dpo", cfg.dpo.train))
    _check_engine("dpo.train", cfg.dpo.train)
    _check_dpo(cfg)
    _check_devices(cfg)
    _check_ppo(cfg)
    _check_data(cfg)
    _check_feedback(cfg)
