"""Start Ray, place and initialise every role, and the per-phase calls the PPO loop makes."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import ray
import torch

from rlhf_dist.config import RLHFConfig
from rlhf_dist.driver.experience import RolloutBatch, pack_samples, shard
from rlhf_dist.workers.group import ActorGroup, Placement, WorkerError, create_placements, remove_placements
from rlhf_dist.workers.inference import ReferenceWorker, RewardWorker, RolloutWorker
from rlhf_dist.workers.trainers import CriticWorker, PolicyWorker

log = logging.getLogger(__name__)

# Environment every actor gets: in-process vLLM engines (fast start, tensors pass directly).
WORKER_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false", "VLLM_LOGGING_LEVEL": "ERROR",
              "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}


def start_ray(cfg: RLHFConfig) -> bool:
    """Connect to cfg.cluster.address, or start a private local cluster. Returns True if we started it."""
    if ray.is_initialized():
        return False
    env = {"env_vars": {**WORKER_ENV, **{k: v for k, v in os.environ.items() if k.startswith("RLHF_DIST_")}}}
    if cfg.cluster.address:
        ray.init(address=cfg.cluster.address, runtime_env=env, log_to_driver=True)
        return False
    ray.init(address="local", num_cpus=cfg.cluster.local_num_cpus or os.cpu_count(), include_dashboard=False,
             runtime_env=env, log_to_driver=True)
    return True


@dataclass
class ModelDirs:
    policy: Path  # initial policy (also the reference)
    reward: Path | None  # trained reward model (scalar-head dir), when a 'model' reward source is used
    critic_init: Path  # what the critic starts from


@dataclass
class Roles:
    policy: ActorGroup
    reference: ActorGroup
    rollout: ActorGroup
    critic: ActorGroup | None  # only for GAE
    reward: ActorGroup | None  # only with a 'model' reward source
    placements: dict[str, Placement]
    nccl_ready: bool = False  # the NCCL weight-sync group exists (rollout.sync_backend nccl)

    def trainers(self) -> dict:
        return {"policy": self.policy, "critic": self.critic}

    def shutdown(self) -> None:
        for group in (self.policy, self.reference, self.rollout, self.critic, self.reward):
            if group is not None:
                group.kill()
        remove_placements(self.placements)


def build_roles(cfg: RLHFConfig, dirs: ModelDirs, total_updates: int) -> Roles:
    """Create all actor groups, then load every model in parallel. On failure nothing is left behind."""
    placements = create_placements(cfg)
    groups: list[ActorGroup] = []
    try:
        return _build_groups(cfg, dirs, total_updates, placements, groups)
    except BaseException:
        for group in groups:
            group.kill()
        remove_placements(placements)
        raise


def _build_groups(cfg: RLHFConfig, dirs: ModelDirs, total_updates: int, placements: dict[str, Placement],
                  groups: list[ActorGroup]) -> Roles:
    cl = cfg.cluster
    needs_rm = any(src.kind == "model" for src in cfg.ppo.rewards)
    if needs_rm and dirs.reward is None:
        raise ValueError("ppo.rewards has a 'model' source but no trained reward model was given")

    def group(role: str, worker_cls: type, n: int, distributed: bool) -> ActorGroup:
        groups.append(ActorGroup(role, worker_cls, cfg, placements[role], n, distributed))
        return groups[-1]

    policy = group("policy", PolicyWorker, cl.policy.num_actors, True)
    reference = group("reference", ReferenceWorker, cl.reference.num_actors, False)
    rollout = group("rollout", RolloutWorker, cfg.rollout.num_engines, False)
    critic = group("critic", CriticWorker, cl.critic.num_actors, True) if cfg.ppo.advantage == "gae" else None
    reward = group("reward", RewardWorker, cl.reward.num_actors, False) if needs_rm else None
    futures = [
        (policy, policy.submit("init_model", str(dirs.policy), total_updates)),
        (reference, reference.submit("init_model", str(dirs.policy))),
        (rollout, rollout.submit("init_model", str(dirs.policy))),
    ]
    if critic is not None:
        futures.append((critic, critic.submit("init_model", str(dirs.critic_init), total_updates)))
    if reward is not None:
        futures.append((reward, reward.submit("init_model", str(dirs.reward))))
    for g, refs in futures:
        g.collect(refs, "init_model")
    return Roles(policy, reference, rollout, critic, reward, placements)


def generate(roles: Roles, prompt_ids: list[list[int]], prompt_texts: list[str], tokenizer, seed: int) -> RolloutBatch:
    """Spread prompts over the engines (contiguous chunks), keep order; samples of a prompt adjacent."""
    engines = roles.rollout
    chunks = [c.tolist() for c in torch.tensor_split(torch.arange(len(prompt_ids)), engines.num_actors)]
    futures = [actor.generate.remote([prompt_ids[i] for i in idx], seed * 1_009 + rank)
               for rank, (actor, idx) in enumerate(zip(engines.actors, chunks))]
    per_prompt = [s for part in engines.collect(futures, "generate") for s in part]
    samples, prompts = [], []
    for text, group in zip(prompt_texts, per_prompt):
        samples += group
        prompts += [text] * len(group)
    sequences, attention, action, logprobs = pack_samples(samples, tokenizer.pad_token_id)
    responses = [tokenizer.decode(s.response_ids, skip_special_tokens=True) for s in samples]
    return RolloutBatch(sequences, attention, action, logprobs, prompts, responses)


def _sharded_concat(group: ActorGroup, method: str, inputs: dict[str, torch.Tensor]) -> list:
    return group.submit_sharded(method, shard(inputs, group.num_actors))


def start_inference(roles: Roles, batch: RolloutBatch,
                    recompute_old_logprobs: bool) -> dict[str, tuple[ActorGroup, list]]:
    """Launch policy/reference log-probs and critic values concurrently; collect with finish_inference.

    Without recompute_old_logprobs (ppo.old_logprobs 'rollout') the engine's log-probs serve as the old ones."""
    inputs = batch.model_inputs()
    jobs = {"ref_logprobs": (roles.reference, _sharded_concat(roles.reference, "logprobs", inputs))}
    if recompute_old_logprobs:
        jobs["old_logprobs"] = (roles.policy, _sharded_concat(roles.policy, "logprobs", inputs))
    if roles.critic is not None:
        jobs["values"] = (roles.critic, _sharded_concat(roles.critic, "values", inputs))
    return jobs


def finish_inference(jobs: dict[str, tuple[ActorGroup, list]], batch: RolloutBatch) -> dict[str, torch.Tensor]:
    out = {name: torch.cat(group.collect(refs, name)) for name, (group, refs) in jobs.items()}
    out.setdefault("old_logprobs", batch.rollout_logprobs)
    out.setdefault("values", torch.zeros_like(batch.action_mask))
    return out


def model_scores(roles: Roles, prompts: list[str], responses: list[str]) -> list[float]:
    group = roles.reward
    chunks = [c.tolist() for c in torch.tensor_split(torch.arange(len(prompts)), group.num_actors)]
    futures = [actor.score.remote([prompts[i] for i in idx], [responses[i] for i in idx])
               for actor, idx in zip(group.actors, chunks)]
    return [x for part in group.collect(futures, "score") for x in part]


def train(roles: Roles, experience: dict[str, torch.Tensor], step: int) -> tuple[dict[str, float], dict[str, float]]:
    """Policy and critic updates run concurrently; returns (stats, seconds per role: its slowest rank's own time)."""
    jobs = {"policy": (roles.policy, roles.policy.submit_sharded("train_ppo", shard(experience, roles.policy.num_actors), step=step))}
    if roles.critic is not None:
        jobs["critic"] = (roles.critic, roles.critic.submit_sharded("train_ppo", shard(experience, roles.critic.num_actors), step=step))
    stats, seconds = {}, {}
    for role, (group, refs) in jobs.items():
        per_rank = group.collect(refs, "train_ppo")
        seconds[f"{role}_train"] = max(r.pop("seconds") for r in per_rank)
        for key in per_rank[0]:
            values = [r[key] for r in per_rank if key in r]
            stats[key] = sum(values) if key == "skipped_updates" else sum(values) / len(values)
    return stats, seconds


# Object-store sync: policy rank 0 serialises bucket i+1 into the store while the engines load bucket i
# (at most this many buckets exist in the store at once).
OBJECT_STORE_BUCKETS_IN_FLIGHT = 2


def sync_weights(roles: Roles, cfg: RLHFConfig) -> int:
    """Policy rank 0 -> every rollout engine, bucket by bucket (buckets end at layer boundaries).

    The gather is a collective on all policy ranks (ZeRO-3 gathers once per sync, LoRA is merged).
    object_store: each bucket is put once and fetched by every engine, never through the driver;
    two buckets are in flight, so putting one overlaps loading the previous one.
    nccl (CUDA): rank 0 broadcasts each bucket GPU-to-GPU into the vLLM workers, one at a time.
    A bucket slower than rollout.sync_timeout_s fails the step. Returns the bytes sent.
    """
    bucket_bytes = roles.policy.call("prepare_weight_sync", cfg.rollout.sync_bucket_mb)[0]
    if cfg.rollout.sync_backend == "nccl":
        if not roles.nccl_ready:
            _init_nccl_sync(roles, cfg)
        window, send = 1, _broadcast_bucket
    else:
        window, send = OBJECT_STORE_BUCKETS_IN_FLIGHT, _put_bucket
    in_flight: list[tuple[int, list, list]] = []  # (bucket index, sender refs, engine refs)
    for i in range(len(bucket_bytes)):
        in_flight.append((i, *send(roles, i)))
        if len(in_flight) == window:
            _await_bucket(roles, cfg, *in_flight.pop(0), len(bucket_bytes))
    for pending in in_flight:
        _await_bucket(roles, cfg, *pending, len(bucket_bytes))
    roles.policy.call("finish_weight_sync")
    return sum(bucket_bytes)


def _put_bucket(roles: Roles, index: int) -> tuple[list, list]:
    bucket_ref = roles.policy.actors[0].weight_bucket.remote(index)
    return [], [actor.update_weights.remote(bucket_ref) for actor in roles.rollout.actors]


def _broadcast_bucket(roles: Roles, index: int) -> tuple[list, list]:
    rank0 = roles.policy.actors[0]
    meta = roles.policy.collect([rank0.weight_bucket_meta.remote(index)], "weight_bucket_meta")[0]
    futures = [actor.receive_weights.remote(meta) for actor in roles.rollout.actors]
    return [rank0.broadcast_weight_bucket.remote(index)], futures


def _await_bucket(roles: Roles, cfg: RLHFConfig, index: int, sender: list, futures: list, total: int) -> None:
    timeout = cfg.rollout.sync_timeout_s
    try:
        roles.policy.collect(sender, "broadcast_weight_bucket", timeout_s=timeout)
        roles.rollout.collect(futures, "update_weights", timeout_s=timeout)
    except WorkerError as err:
        raise WorkerError(f"weight sync bucket {index + 1}/{total} failed: {err}") from None


def _init_nccl_sync(roles: Roles, cfg: RLHFConfig) -> None:
    """One NCCL group: policy rank 0 is rank 0; engine e's TP workers follow. All join at once."""
    tp = cfg.rollout.tensor_parallel_size
    world = 1 + tp * roles.rollout.num_actors
    rank0 = roles.policy.actors[0]
    host, port = roles.policy.collect([rank0.weight_broadcast_rendezvous.remote()], "rendezvous")[0]
    joins = [actor.init_weight_broadcast.remote(host, port, 1 + e * tp, world)
             for e, actor in enumerate(roles.rollout.actors)]
    roles.policy.collect([rank0.init_weight_broadcast.remote(host, port, world)], "init_weight_broadcast")
    roles.rollout.collect(joins, "init_weight_broadcast")
    roles.nccl_ready = True
