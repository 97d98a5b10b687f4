"""Start Ray, place and initialise every role, and the per-phase calls the PPO loop makes."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import ray
import torch

from rlhf_dist.backends.sync import WeightSync, build_weight_sync
from rlhf_dist.config import RLHFConfig
from rlhf_dist.config.topology import ROLES, active_roles, actor_count, engines_sleep, needs_reward_model
from rlhf_dist.data.experience import Experience, InferenceOutputs, RolloutBatch, pack_samples
from rlhf_dist.tracking.quiet import QUIET_ENV, is_verbose
from rlhf_dist.utils import Preempted
from rlhf_dist.workers.group import (
    ActorGroup, Pending, Placement, WorkerError, create_placements, placements_restored, remove_placements,
)
from rlhf_dist.workers.role_groups import (
    CriticGroup, PolicyGroup, ReferenceGroup, RewardGroup, RolloutGroup, TrainerGroup,
)

log = logging.getLogger(__name__)

# Environment every actor gets: in-process vLLM engines (fast start, tensors pass directly).
# Library quieting (tracking/quiet.py QUIET_ENV) is read at import, before an actor's own redirection runs.
WORKER_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def join_address(configured: str | None, environ: dict[str, str]) -> str | None:
    """The Ray cluster to join, or None for a private local one.

    cluster.address wins. Without it, a driver started by Ray Jobs joins the job's cluster: the job
    supervisor sets RAY_JOB_CONFIG_JSON_ENV_VAR and RAY_ADDRESS (Ray's documented way for an entrypoint's
    `ray.init()` to find it); a nested private cluster there would fight the job's runtime_env. A RAY_ADDRESS
    that is a dashboard URL (http://, set for `ray job submit`) is not a cluster to join.
    """
    if configured:
        return configured
    address = environ.get("RAY_ADDRESS", "").strip()
    if environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        return address or "auto"
    if address and (address.startswith("ray://") or "://" not in address):
        return address
    return None


def worker_runtime_env(extra_env: dict[str, str] | None = None, setup_hook: str | None = None) -> dict:
    """The runtime_env every actor gets, wherever Ray is started (start_ray, tests/integration/conftest.py,
    bench/common.py): WORKER_ENV, the library quieting unless --verbose, every RLHF_DIST_* variable of this
    process; extra_env on top (the benchmarks' settings), and a worker_process_setup_hook when given."""
    env_vars = {**WORKER_ENV, **({} if is_verbose() else QUIET_ENV),
                **{k: v for k, v in os.environ.items() if k.startswith("RLHF_DIST_")}, **(extra_env or {})}
    return {"env_vars": env_vars, **({"worker_process_setup_hook": setup_hook} if setup_hook else {})}


def _ray_quiet() -> dict:
    """Ray's own INFO/WARNING lines only with --verbose."""
    return {} if is_verbose() else {"logging_level": logging.ERROR}


def start_private_ray(num_cpus: int | None = None, temp_dir: str | None = None, log_to_driver: bool = True,
                      extra_env: dict[str, str] | None = None, setup_hook: str | None = None) -> None:
    """Start a private local Ray cluster (never joins one already on the machine) with worker_runtime_env.

    The product (start_ray), the integration tests' session cluster and the benchmarks all start it here.
    temp_dir: Ray's session dir (keep it short: socket paths must stay under ~107 characters)."""
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
             runtime_env=worker_runtime_env(extra_env, setup_hook), log_to_driver=log_to_driver,
             **({"_temp_dir": temp_dir} if temp_dir else {}), **_ray_quiet())


def start_ray(cfg: RLHFConfig) -> bool:
    """Connect to cfg.cluster.address, or start a private local cluster. Returns True if we started it."""
    if ray.is_initialized():
        return False
    # Actors write to <run>/logs/<role>-<rank>.log (workers/base.py); log_to_driver stays on so a crash
    # before that redirection still shows.
    if not is_verbose():
        log.info("worker logs: %s/<role>-<rank>.log (--verbose shows them here)", Path(cfg.run.output_dir) / "logs")
    address = join_address(cfg.cluster.address, dict(os.environ))
    if address:
        if not cfg.cluster.address:
            log.info("joining the Ray cluster at %s (RAY_ADDRESS / inside a Ray job)", address)
        from rlhf_dist.driver.join import check_join

        check_join(address)  # unreachable, or a token-auth head this shell has no token for: one line, exit 2
        ray.init(address=address, runtime_env=worker_runtime_env(), log_to_driver=True, **_ray_quiet())
        return False
    start_private_ray(cfg.cluster.local_num_cpus)
    return True


@dataclass
class ModelDirs:
    policy: Path  # initial policy (also the reference)
    reward: Path | None  # trained reward model (scalar-head dir), when a 'model' reward source is used
    critic_init: Path  # what the critic starts from


@dataclass
class Roles:
    policy: PolicyGroup
    reference: ReferenceGroup
    rollout: RolloutGroup
    critic: CriticGroup | None  # only for GAE (config/topology.py needs_critic)
    reward: RewardGroup | None  # only with a 'model' reward source (config/topology.py needs_reward_model)
    placements: dict[str, Placement]
    weight_sync: WeightSync  # policy -> engines (backends/sync: object store, NCCL, CUDA IPC or LoRA adapter)

    def active(self) -> dict[str, ActorGroup]:
        """The groups this run has, by role name (config/topology.py ROLES order)."""
        return {role: group for role in ROLES if (group := getattr(self, role)) is not None}

    def trainers(self) -> dict[str, TrainerGroup]:
        return {"policy": self.policy, **({"critic": self.critic} if self.critic is not None else {})}

    def shutdown(self) -> None:
        for group in self.active().values():
            group.kill()
        remove_placements(self.placements)

    def kill(self, roles: frozenset[str]) -> None:
        """Kill these roles' actors (their placements stay, for the groups that replace them)."""
        for role in roles:
            if (group := getattr(self, role)) is not None:
                group.kill()


_GROUPS = {"policy": PolicyGroup, "reference": ReferenceGroup, "rollout": RolloutGroup, "critic": CriticGroup,
           "reward": RewardGroup}


def build_roles(cfg: RLHFConfig, dirs: ModelDirs, total_updates: int, keep: Roles | None = None,
                rebuild: frozenset[str] = frozenset()) -> Roles:
    """Create the actor groups of the roles this run uses, then load every model in parallel.

    With `keep` (a restart, see roles_to_rebuild): only the roles in `rebuild` get new groups, in their old
    placements; the others keep their actors and loaded models. On failure nothing new is left behind."""
    if needs_reward_model(cfg) and dirs.reward is None:
        raise ValueError("ppo.rewards has a 'model' source but no trained reward model was given")
    placements = keep.placements if keep is not None else create_placements(cfg)
    kept = {} if keep is None else {role: group for role, group in keep.active().items() if role not in rebuild}
    made: dict[str, ActorGroup] = {}
    try:
        for role in active_roles(cfg):
            if role not in kept:
                made[role] = _GROUPS[role](cfg, placements[role], actor_count(cfg, role))
        groups = {**kept, **made}
        _load_models(cfg, dirs, total_updates, made)
        _log_placement(made)
        weight_sync = (keep.weight_sync if keep is not None and not {"policy", "rollout"} & made.keys()
                       else build_weight_sync(cfg, groups["policy"], groups["rollout"]))
        return Roles(groups["policy"], groups["reference"], groups["rollout"], groups.get("critic"),
                     groups.get("reward"), placements, weight_sync)
    except BaseException:
        for group in made.values():
            group.kill()
        if keep is None:
            remove_placements(placements)
        raise


def _load_models(cfg: RLHFConfig, dirs: ModelDirs, total_updates: int, groups: dict[str, ActorGroup]) -> None:
    """init_model on every group given, concurrently (the engines first and alone when they sleep)."""
    sources = {"policy": (dirs.policy, total_updates), "reference": (dirs.policy,), "rollout": (dirs.policy,),
               "critic": (dirs.critic_init, total_updates), "reward": (dirs.reward,)}
    loading = []
    if "rollout" in groups and engines_sleep(cfg):
        # vLLM charges every change of free GPU memory during its start to itself: the engines start
        # alone on their GPUs, then sleep (give their memory back) while the other models load.
        groups["rollout"].init_model(dirs.policy).result()
        groups["rollout"].sleep(at_load=True).result()  # no sync before step 1's generation: keep the weights
    for role, group in groups.items():
        if not (role == "rollout" and engines_sleep(cfg)):
            loading.append(group.init_model(*sources[role]))
    for pending in loading:
        pending.result()
    if "rollout" in groups and engines_sleep(cfg):
        groups["rollout"].wake_up().result()  # everything is loaded: the engines take their memory back


def _log_placement(groups: dict[str, ActorGroup]) -> None:
    """Which node and process each new actor landed on (multi-node runs: the placement is visible in the log)."""
    asked = {role: group.each("ping", lambda a: a.ping.remote()) for role, group in groups.items()}
    for role, pending in asked.items():
        log.info("%s: %s", role, "; ".join(pending.result()))


def replace_failed_roles(cfg: RLHFConfig, roles: Roles, err: WorkerError, dirs: ModelDirs, total_updates: int,
                         checkpoint: Path | None) -> Roles:
    """After a role failure (err): kill what must be replaced (roles_to_rebuild), wait for Ray to reserve its
    placement again (a lost node's share: fault_tolerance.node_wait_s), then build those roles anew.

    checkpoint: the newest complete checkpoint, None without one. Capacity that does not come back in
    time ends the run as a preemption would (Preempted: exit 75, the checkpoint untouched, --resume auto)."""
    rebuild = roles_to_rebuild(cfg, roles, err, have_checkpoint=checkpoint is not None)
    log.warning("%s; new actors for: %s", err, ", ".join(sorted(rebuild)))
    roles.kill(rebuild)
    waiting = placements_restored(roles.placements, rebuild, cfg.fault_tolerance.node_wait_s)
    if waiting:
        saved = f"checkpoint {checkpoint} is intact" if checkpoint is not None else "no checkpoint yet"
        raise Preempted(f"after '{err}', the cluster could not place {', '.join(waiting)} again within "
                        f"fault_tolerance.node_wait_s={cfg.fault_tolerance.node_wait_s:.0f}s (a lost node and no "
                        f"spare capacity); {saved}: continue with --resume auto once the nodes are back")
    return build_roles(cfg, dirs, total_updates, keep=roles, rebuild=rebuild)


def roles_to_rebuild(cfg: RLHFConfig, roles: Roles, err: WorkerError, have_checkpoint: bool) -> frozenset[str]:
    """After a role failure, the roles that need new actors: the one that failed, any other that does not
    answer a ping within cluster.dead_actor_timeout_s (a lost node takes several), the policy and the
    engines together (the weight sync joins them), and every role when there is no checkpoint to restore
    the survivors to or the engines sleep between phases (they must start alone on their GPUs)."""
    everything = frozenset(roles.active())
    if not have_checkpoint or engines_sleep(cfg) or err.role not in everything:
        return everything
    pings = {role: group.each("ping", lambda a: a.ping.remote()) for role, group in roles.active().items()
             if role != err.role}
    failed = {err.role}
    for role, pending in pings.items():
        try:
            pending.result()
        except WorkerError:
            failed.add(role)
    if failed & {"policy", "rollout"}:
        failed |= {"policy", "rollout"}
    return frozenset(failed)


def start_generation(roles: Roles, prompt_ids: list[list[int]], seed: int) -> Pending[list]:
    """Spread prompts over the engines (contiguous chunks); returns at once, `.result()` waits."""
    return roles.rollout.generate(prompt_ids, seed)


def finish_generation(pending: Pending[list], prompt_texts: list[str], tokenizer) -> RolloutBatch:
    """The samples in prompt order (samples of a prompt adjacent), packed into one batch."""
    per_prompt = pending.result()
    samples, prompts = [], []
    for text, group in zip(prompt_texts, per_prompt):
        samples += group
        prompts += [text] * len(group)
    inputs, logprobs = pack_samples(samples, tokenizer.pad_token_id)
    responses = [tokenizer.decode(s.response_ids, skip_special_tokens=True) for s in samples]
    return RolloutBatch(inputs, logprobs, prompts, responses)


def generate(roles: Roles, prompt_ids: list[list[int]], prompt_texts: list[str], tokenizer, seed: int) -> RolloutBatch:
    return finish_generation(start_generation(roles, prompt_ids, seed), prompt_texts, tokenizer)


@dataclass
class InferenceJobs:
    """The inference phase, started (see start_inference)."""

    ref_logprobs: Pending[torch.Tensor]
    old_logprobs: Pending[torch.Tensor] | None  # None: the engine's log-probs are the old ones
    values: Pending[torch.Tensor] | None  # None without a critic


def start_inference(roles: Roles, batch: RolloutBatch, recompute_old_logprobs: bool) -> InferenceJobs:
    """Launch reference/policy log-probs and critic values concurrently; collect with finish_inference.

    Without recompute_old_logprobs (ppo.old_logprobs 'rollout') the engine's log-probs serve as the old ones."""
    return InferenceJobs(
        ref_logprobs=roles.reference.logprobs(batch.inputs),
        old_logprobs=roles.policy.logprobs(batch.inputs) if recompute_old_logprobs else None,
        values=roles.critic.values(batch.inputs) if roles.critic is not None else None,
    )


def finish_inference(jobs: InferenceJobs, batch: RolloutBatch) -> InferenceOutputs:
    ref_logprobs = jobs.ref_logprobs.result()  # [B, R]
    old_logprobs = jobs.old_logprobs.result() if jobs.old_logprobs is not None else batch.rollout_logprobs
    values = jobs.values.result() if jobs.values is not None else torch.zeros_like(batch.inputs.action_mask)
    return InferenceOutputs(old_logprobs, ref_logprobs, values)


def model_scores(roles: Roles, prompts: list[str], responses: list[str]) -> list[float]:
    return roles.reward.score(prompts, responses).result()


def memory_peaks(roles: Roles) -> dict[str, float]:
    """memory/<role>/peak_gib: every role's peak memory since the previous call, its highest rank's
    (workers/base.py RoleWorker.peak_memory: the CUDA allocator's reservation, or the peak RSS on CPU)."""
    asked = {role: group.peak_memory() for role, group in roles.active().items()}
    return {f"memory/{role}/peak_gib": max(pending.result()) / 2**30 for role, pending in asked.items()}


def update_policy_and_critic(roles: Roles, experience: Experience,
                             step: int) -> tuple[dict[str, float], dict[str, float]]:
    """Policy and critic updates run concurrently; returns (stats, seconds per role: its slowest rank's own time).

    Stats keep their role prefix (policy/..., critic/...) and are averaged over ranks. Skipped updates are
    per group, not summed over ranks: DeepSpeed skips a step on every rank at once."""
    running = {role: group.train_ppo(experience, step) for role, group in roles.trainers().items()}
    stats, seconds = {}, {}
    for role, pending in running.items():
        per_rank = pending.result()
        seconds[f"{role}_train"] = max(r.seconds for r in per_rank)
        for key in per_rank[0].stats:
            values = [r.stats[key] for r in per_rank if key in r.stats]
            stats[key] = sum(values) / len(values)
        stats[f"{role}/skipped_updates"] = float(max(r.skipped_updates for r in per_rank))
    stats["train/skipped_updates"] = sum(stats[f"{role}/skipped_updates"] for role in running)
    return stats, seconds
