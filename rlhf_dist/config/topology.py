"""Which roles a run has, how many actors each gets, and the placement bundles they reserve.

The ONE place these facts live: the driver (driver/actors.py), the actor placement (workers/group.py),
the planner (cluster/plan.py, cluster/placement.py), the config rules and the stage entry points
all ask here, so a role that a run does not use reserves nothing anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rlhf_dist.algo.registry import ADVANTAGES
from rlhf_dist.rewards import REWARD_SOURCES

if TYPE_CHECKING:
    from rlhf_dist.config.schema import ActorResources, RLHFConfig
    from rlhf_dist.config.schema_parts import TrainConfig

# Creation order of the actor groups (and the order of every per-role table).
ROLES = ("policy", "critic", "reference", "reward", "rollout")
COLOCATED = "colocated"  # name of the one placement group shared by all roles with cluster.colocate


def needs_critic(cfg: RLHFConfig) -> bool:
    """A critic (value model) exists only for an advantage estimator registered with needs_critic (GAE);
    the others use group or batch baselines."""
    return ADVANTAGES.get(cfg.ppo.advantage).needs_critic


def needs_reward_model(cfg: RLHFConfig) -> bool:
    """A reward-model actor exists only when some ppo.rewards source is a trained model."""
    return any(REWARD_SOURCES.get(src.kind).needs_reward_model for src in cfg.ppo.rewards)


def critic_starts_from_reward(cfg: RLHFConfig) -> bool:
    """The critic starts from the trained reward model (critic.init_from 'reward' and there is one), else the policy."""
    return cfg.critic.init_from == "reward" and needs_reward_model(cfg)


def critic_dtype(cfg: RLHFConfig) -> str:
    """critic.dtype, or the dtype of the model the critic starts from."""
    if cfg.critic.dtype is not None:
        return cfg.critic.dtype
    return cfg.reward_model.dtype if critic_starts_from_reward(cfg) else cfg.policy.dtype


def engines_sleep(cfg: RLHFConfig) -> bool:
    """Colocated on CUDA, the vLLM engines give their GPU memory back while the other roles load and
    train (vLLM sleep mode): they are created first, then put to sleep before anything else loads."""
    return cfg.cluster.colocate and cfg.cluster.device == "cuda" and cfg.rollout.backend == "vllm"


def engine_sleep_level(at_load: bool, adapter_sync: bool) -> int:
    """vLLM sleep level of a sleeping engine (engines_sleep): 1 copies the weights to pinned host memory and
    back at wake_up; 2 discards them (no host copy, no copy back) and keeps only the model's buffers.

    2 only where a full weight sync overwrites every weight before the engine generates again, as after
    training in a PPO step (sleep -> train -> wake_up -> sync). Not `at_load` (driver/actors.py build_roles: the
    engines sleep while the other roles load, and step 1 generates with the weights they loaded, before any
    sync), and never with the LoRA adapter sync (backends/sync/transports/lora.py): the base weights are not sent
    again."""
    return 1 if at_load or adapter_sync else 2


def inference_chunk_size(cfg: RLHFConfig) -> int:
    """Rows per forward pass of the reference/policy log-probs and critic values (ppo.inference_chunk_size)."""
    return cfg.ppo.inference_chunk_size or 2 * cfg.ppo.policy_train.micro_batch_size


def active_roles(cfg: RLHFConfig) -> tuple[str, ...]:
    """The roles that get actors in this run, in creation order."""
    optional = {"critic": needs_critic(cfg), "reward": needs_reward_model(cfg)}
    return tuple(role for role in ROLES if optional.get(role, True))


def resources(cfg: RLHFConfig, role: str) -> ActorResources:
    return getattr(cfg.cluster, role)


def actor_count(cfg: RLHFConfig, role: str) -> int:
    """Ranks of a role: one rollout actor per engine (rollout.num_engines), else cluster.<role>.num_actors."""
    return cfg.rollout.num_engines if role == "rollout" else resources(cfg, role).num_actors


@dataclass(frozen=True)
class BundleSpec:
    """One placement-group bundle and the (role, rank) actors scheduled into it."""

    cpu: float
    gpu: float
    actors: tuple[tuple[str, int], ...]
    custom: tuple[tuple[str, float], ...] = ()  # cluster.<role>.resources: custom Ray resources (name, amount)

    def ray_bundle(self) -> dict[str, float]:
        return {"CPU": self.cpu, **({"GPU": self.gpu} if self.gpu else {}), **dict(self.custom)}


def custom_resources(cfg: RLHFConfig, roles: list[str] | tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """The custom resources of these roles' actors, summed by name (one bundle holds them all)."""
    total: dict[str, float] = {}
    for role in roles:
        for name, amount in resources(cfg, role).resources.items():
            total[name] = total.get(name, 0.0) + amount
    return tuple(sorted(total.items()))


def placement_layout(cfg: RLHFConfig) -> dict[str, list[BundleSpec]]:
    """Placement groups by name -> bundles, for the active roles only.

    Disaggregated: one group per role, one bundle per rank. Colocated (cluster.colocate): one group
    where bundle i holds rank i of every role, reserving the sum of what they ask for.
    """
    roles = active_roles(cfg)
    counts = {role: actor_count(cfg, role) for role in roles}
    if cfg.cluster.colocate:
        bundles = []
        for i in range(max(counts.values())):
            members = [r for r in roles if i < counts[r]]
            bundles.append(BundleSpec(sum(resources(cfg, r).cpus_per_actor for r in members),
                                      sum(resources(cfg, r).gpus_per_actor for r in members),
                                      tuple((r, i) for r in members), custom_resources(cfg, members)))
        return {COLOCATED: bundles}
    return {role: [BundleSpec(resources(cfg, role).cpus_per_actor, resources(cfg, role).gpus_per_actor, ((role, i),),
                              custom_resources(cfg, (role,)))
                   for i in range(counts[role])]
            for role in roles}


# The role whose resources (cluster.<role>) each training stage's ranks use.
STAGE_ROLES = {"sft": "policy", "rm": "reward", "dpo": "policy"}


def trains_in_driver(cfg: RLHFConfig, train: TrainConfig) -> bool:
    """SFT / reward-model training in the driver process itself: only what the config asks for as one
    process on the CPU (backend 'torch', cluster.device 'cpu'). Everything else trains on the role's Ray
    group (driver/supervised.py), so a GPU run is the CPU run with another device string."""
    return train.backend == "torch" and cfg.cluster.device == "cpu"


def evaluates_on_cluster(cfg: RLHFConfig) -> bool:
    """Evaluation on Ray actors (driver/evaluation.py), or in the driver (eval.placement; 'auto': CUDA only)."""
    return cfg.eval.placement == "cluster" or (cfg.eval.placement == "auto" and cfg.cluster.device == "cuda")


def stage_ranks(cfg: RLHFConfig, stage: str, train: TrainConfig) -> int:
    """Data-parallel ranks of a training stage: its role's num_actors; one for backend 'torch'."""
    return 1 if train.backend == "torch" else resources(cfg, STAGE_ROLES[stage]).num_actors


def stage_overrides(cfg: RLHFConfig, stage: str, train: TrainConfig) -> dict[str, float | int]:
    """How a training stage's group differs from its role's PPO resources: the stage has the cluster to
    itself, so on CUDA each rank gets one whole GPU (NCCL refuses two ranks on one device, and PPO's
    fractional shares assume other roles beside it); backend 'torch' trains on one rank."""
    role, ranks = STAGE_ROLES[stage], stage_ranks(cfg, stage, train)
    gpus = 1.0 if cfg.cluster.device == "cuda" else resources(cfg, role).gpus_per_actor
    return {f"cluster.{role}.num_actors": ranks, f"cluster.{role}.gpus_per_actor": gpus}
