"""`rlhf-dist plan`: placement, data-parallel sizes and per-device memory, without starting anything.

    plan = make_plan(cfg, parse_hardware("nodes=1,gpus_per_node=8,gpu_mem_gib=79", cfg))
    print(render_plan(plan)); sys.exit(0 if plan.fits else 1)

Pure: no Ray, no weights. Model sizes come from config.json (local dirs), the config's
`arch` facts, or the built-in models' own configs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf_dist.backends.sync.transports.lora import wants_adapter_sync
from rlhf_dist.cluster.facts import FactsError, ModelFacts, model_facts
from rlhf_dist.cluster.memory import (
    GIB, Memory, Shape, driver_eval_bytes, inference_memory, rollout_memory, sync_plan, trainer_memory,
)
from rlhf_dist.cluster.placement import Bundle, Hardware, PlanError, actor_devices, make_groups, place
from rlhf_dist.config.topology import (
    ROLES, active_roles, actor_count, critic_dtype, critic_starts_from_reward, engine_sleep_level, engines_sleep,
    evaluates_on_cluster,
    inference_chunk_size, resources,
)
from rlhf_dist.config import RLHFConfig

NODE_BASE_HOST = 1.5 * GIB  # Ray's daemons (GCS, raylet, dashboard) and the driver, per node


@dataclass
class RoleInfo:
    """One role: its model, actor count and what it computes per step."""

    role: str
    actors: int
    gpus: float
    cpus: float
    model: str  # "8.03B params (source)"
    parallel: str  # data-parallel / engine description


@dataclass
class DeviceLoad:
    """One GPU (CUDA) or one node's RAM (CPU) and what the actors on it need at peak."""

    name: str  # "node0 gpu3" / "node0 ram"
    members: list[tuple[str, int]]
    resident: float
    phase: str  # the phase of the peak
    peak: float
    capacity: float


@dataclass
class Plan:
    cfg: RLHFConfig
    hardware: Hardware
    roles: list[RoleInfo]
    groups: dict[str, list[Bundle]]
    memory: dict[str, Memory]
    devices: list[DeviceLoad] = field(default_factory=list)
    hosts: list[DeviceLoad] = field(default_factory=list)  # CUDA only: host RAM per node
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems


def _role_facts(cfg: RLHFConfig, active: set[str]) -> dict[str, ModelFacts]:
    policy = model_facts(cfg.policy, "policy.path")
    reward = model_facts(cfg.reward_model, "reward_model.path") if "reward" in active else None
    critic = reward if (critic_starts_from_reward(cfg) and reward is not None) else policy
    out = {"policy": policy, "reference": policy, "rollout": policy, "critic": critic}
    if reward is not None:
        out["reward"] = reward
    return out


def _shape(cfg: RLHFConfig) -> Shape:
    new_tokens = cfg.rollout.sampling.max_new_tokens
    return Shape(cfg.data.max_prompt_length + new_tokens, new_tokens)


def _nccl_groups(cfg: RLHFConfig, role: str) -> int:
    """NCCL communicators one rank of `role` joins on CUDA: its own group when it has several ranks (the ZeRO
    group, the sharded reference's), plus the weight-sync broadcast (policy rank 0; counted on every rank)."""
    if cfg.cluster.device != "cuda":
        return 0
    grouped = role in ("policy", "critic") or (role == "reference" and cfg.ppo.reference_zero_stage == 3)
    return int(grouped and actor_count(cfg, role) > 1) + int(role == "policy" and cfg.rollout.sync_backend == "nccl")


def _sleep_levels(cfg: RLHFConfig) -> tuple[int, int] | None:
    """(first sleep's level, later sleeps' level) where the engines sleep (config/topology.py), else None."""
    if not engines_sleep(cfg):
        return None
    adapter = wants_adapter_sync(cfg)
    return engine_sleep_level(True, adapter), engine_sleep_level(False, adapter)


def role_memory(cfg: RLHFConfig, facts: dict[str, ModelFacts], active: set[str], hw: Hardware) -> dict[str, Memory]:
    """Per-actor memory of every active role (per device for a TP-sharded rollout engine)."""
    device, ppo, data = cfg.cluster.device, cfg.ppo, cfg.data
    shape = _shape(cfg)
    pf = facts["policy"]
    out = {
        "policy": trainer_memory("policy", pf, pf.num_params, ppo.policy_train, cfg.policy.dtype,
                                 cfg.cluster.policy.num_actors, cfg.policy.lora, shape,
                                 cfg.policy.gradient_checkpointing, lm_head=True, device=device,
                                 inference_chunk=inference_chunk_size(cfg),
                                 sync=sync_plan(pf, cfg.rollout, cfg.policy.dtype), entropy=True,
                                 nccl_groups=_nccl_groups(cfg, "policy")),
        "reference": inference_memory("reference", pf, pf.num_params, cfg.policy.dtype,
                                      inference_chunk_size(cfg), shape, lm_head=True, device=device,
                                      shards=cfg.cluster.reference.num_actors if ppo.reference_zero_stage == 3 else 0,
                                      nccl_groups=_nccl_groups(cfg, "reference")),
        "rollout": rollout_memory(pf, pf.num_params, cfg.rollout, cfg.policy.dtype, device,
                                  hw.gpu_mem_gib * GIB, shape, sleep=_sleep_levels(cfg)),
    }
    if "critic" in active:
        cf = facts["critic"]  # CriticWorker trains in critic_dtype(cfg)
        out["critic"] = trainer_memory("critic", cf, cf.backbone_params, ppo.critic_train, critic_dtype(cfg),
                                       cfg.cluster.critic.num_actors, cfg.critic.lora, shape,
                                       cfg.critic.gradient_checkpointing,
                                       lm_head=False, device=device, inference_chunk=inference_chunk_size(cfg),
                                       nccl_groups=_nccl_groups(cfg, "critic"))
    if "reward" in active:
        rf = facts["reward"]
        rm_shape = Shape(min(data.max_length, shape.seq), 1)
        out["reward"] = inference_memory("reward", rf, rf.backbone_params, cfg.reward_model.dtype,
                                         cfg.reward_model.score_batch_size,
                                         rm_shape, lm_head=False, device=device)
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _role_infos(cfg: RLHFConfig, facts: dict[str, ModelFacts], active: set[str]) -> list[RoleInfo]:
    ppo = cfg.ppo
    samples = ppo.rollout_batch_size * cfg.rollout.sampling.samples_per_prompt
    infos = []
    for role in ROLES:
        res, n = resources(cfg, role), actor_count(cfg, role)
        if role not in active:
            infos.append(RoleInfo(role, 0, 0.0, 0.0, "-", "not used, nothing reserved "
                                  f"({'advantage is not gae' if role == 'critic' else 'no model reward source'})"))
            continue
        f = facts[role]
        params = f.backbone_params if role in ("critic", "reward") else f.num_params
        size = f"{params / 1e9:.2f}B" if params >= 1e8 else f"{params / 1e6:.2f}M"
        model = f"{size} params ({f.source})"
        if role in ("policy", "critic"):
            t = ppo.policy_train if role == "policy" else ppo.critic_train
            accum = t.global_batch_size // (t.micro_batch_size * n)
            stage = f"ZeRO-{t.zero_stage}" if t.backend == "deepspeed" else "torch"
            off = "+".join(k for k, on in (("optimizer", t.offload_optimizer), ("params", t.offload_params)) if on)
            parallel = (f"data-parallel {n} ({stage}{', offload ' + off if off else ''}): micro {t.micro_batch_size}"
                        f" x accum {accum} x {n} = global {t.global_batch_size}; "
                        f"{_plural(ppo.ppo_epochs * samples // t.global_batch_size, 'optimizer step')} per PPO step")
        elif role == "rollout":
            tp = cfg.rollout.tensor_parallel_size
            parallel = (f"{n} {cfg.rollout.backend} engine{'s' if n > 1 else ''} x TP {tp}: "
                        f"{samples} samples/step, ~{-(-samples // n)} per engine")
        else:
            chunk = inference_chunk_size(cfg) if role == "reference" else cfg.reward_model.score_batch_size
            held = ("ZeRO-3 sharded, 1/{} each".format(n) if role == "reference" and ppo.reference_zero_stage == 3
                    else "full replica each")
            parallel = f"data-parallel {n} ({held}): {samples} sequences/step, chunks of {chunk}"
        infos.append(RoleInfo(role, n, res.gpus_per_actor, res.cpus_per_actor, model, parallel))
    return infos


KEPT = "the actors' own peaks"  # phase label of a device load: each allocator keeps its peak (see _load)


def _load(name: str, members: list[tuple[str, int]], parts: list[tuple[float, dict[str, float]]],
          capacity: float, kept: bool) -> DeviceLoad:
    """kept (device memory): every actor keeps its own peak, so the peaks add up (memory.py says why).
    Else (host memory, freed to the OS): resident sum plus the worst phase's transient sum."""
    resident = sum(r for r, _ in parts)
    if kept:
        extra = sum(max(t.values(), default=0.0) for _, t in parts)
        return DeviceLoad(name, members, resident, KEPT if extra else "-", resident + extra, capacity)
    phases: dict[str, float] = {}
    for _, transient in parts:
        for phase, value in transient.items():
            phases[phase] = phases.get(phase, 0.0) + value
    phase = max(phases, key=phases.__getitem__) if phases else "-"
    return DeviceLoad(name, members, resident, phase, resident + phases.get(phase, 0.0), capacity)


def _device_loads(plan: Plan) -> None:
    """Sum the actors on each GPU (and host RAM per node), or on each node's RAM on CPU."""
    cuda, hw = plan.cfg.cluster.device == "cuda", plan.hardware
    per_device: dict[tuple[int, int], list] = {}
    per_node: dict[int, list] = {n: [] for n in range(hw.nodes)}
    for bundle in (b for bs in plan.groups.values() for b in bs):
        if bundle.node is None or (cuda and bundle.gpu > 0 and not bundle.devices):
            continue  # not placed (a problem is already reported)
        placed = actor_devices(bundle) if cuda else {(r, k): [] for r, k, _ in bundle.actors}
        for (role, rank), devices in placed.items():
            mem = plan.memory[role]
            # a TP engine's estimate is per device (over TP devices); other roles use one device
            used = devices[: plan.cfg.rollout.tensor_parallel_size] if role == "rollout" else devices[:1]
            for d in used:
                per_device.setdefault((bundle.node, d), []).append((role, rank, mem.resident, mem.transient(rank)))
            host = mem.host_phases(rank)
            if not cuda:  # on CPU the model lives in RAM: device and host parts add up; loading is in place
                host["load"] = max(0.0, host.get("load", 0.0) - mem.params)
                dev = mem.transient(rank)
                host = {p: host.get(p, 0.0) + dev.get(p, 0.0) for p in {*host, *dev}}
            per_node[bundle.node].append((role, rank, mem.host + (0.0 if cuda else mem.resident), host))
    for (node, d), items in sorted(per_device.items()):
        plan.devices.append(_load(f"node{node} gpu{d}", [(r, k) for r, k, _, _ in items],
                                  [(res, tr) for _, _, res, tr in items], hw.gpu_mem_gib * GIB, kept=True))
    ram = hw.ram_gib * GIB if hw.ram_gib else float("inf")
    for node, items in per_node.items():
        load = _load(f"node{node} ram", [(r, k) for r, k, _, _ in items],
                     [(NODE_BASE_HOST, {})] + [(res, tr) for _, _, res, tr in items], ram, kept=False)
        (plan.hosts if cuda else plan.devices).append(load)


def group_loads(loads: list[DeviceLoad]) -> list[tuple[str, DeviceLoad]]:
    """Collapse consecutive alike devices of one node: ('node0 gpu0-7 (8 alike)', first load)."""
    runs: list[list] = []
    for load in loads:
        node, _, dev = load.name.partition(" ")
        key = (node, tuple(sorted({r for r, _ in load.members})), round(load.peak / GIB, 1), load.phase)
        if runs and runs[-1][0] == key:
            runs[-1][2].append(dev)
        else:
            runs.append([key, load, [dev]])
    out = []
    for (node, *_), load, devs in runs:
        last = devs[-1].removeprefix("gpu")
        out.append((f"{node} {devs[0]}" if len(devs) == 1 else f"{node} {devs[0]}-{last} ({len(devs)} alike)", load))
    return out


def _check(plan: Plan) -> None:
    cfg, problems = plan.cfg, plan.problems
    for label, load in group_loads(plan.devices) + group_loads(plan.hosts):
        if load.peak > load.capacity:
            roles = ", ".join(sorted({r for r, _ in load.members})) or "none"
            problems.append(f"{label}: peak {load.peak / GIB:.1f} GiB (during {load.phase}) > capacity "
                            f"{load.capacity / GIB:.1f} GiB each; roles there: {roles}")
    ro = plan.memory.get("rollout")
    if cfg.cluster.device == "cuda" and ro is not None:
        seq = cfg.data.max_prompt_length + cfg.rollout.sampling.max_new_tokens
        if ro.kv_cache <= 0:
            problems.append(f"rollout: vLLM weights {ro.vllm_weights / GIB:.1f} GiB/device + overheads exceed "
                            f"rollout.gpu_memory_utilization {cfg.rollout.gpu_memory_utilization} x "
                            f"{plan.hardware.gpu_mem_gib:g} GiB: raise it or rollout.tensor_parallel_size")
        elif (ro.kv_tokens or 0) < seq:
            problems.append(f"rollout: the KV cache holds {ro.kv_tokens} tokens, less than one sequence ({seq})")
    for role, field_name, train in (("policy", "ppo.policy_train", cfg.ppo.policy_train),
                                    ("critic", "ppo.critic_train", cfg.ppo.critic_train)):
        one_rank = getattr(cfg.cluster, role).num_actors == 1
        if role in plan.memory and one_rank and train.backend == "deepspeed" and train.zero_stage > 0 \
                and not train.offload_optimizer:
            plan.notes.append(f"{field_name}.zero_stage {train.zero_stage} on a one-rank group partitions nothing "
                              "and costs time (gradient bucket copies): zero_stage 0 is faster unless you offload")
    for role in ("policy", "critic", "reference", "reward"):
        gpus = getattr(cfg.cluster, role).gpus_per_actor
        if role in plan.memory and gpus > 1:
            plan.notes.append(f"cluster.{role}.gpus_per_actor is {gpus:g} but a {role} actor uses one device: "
                              f"{gpus - 1:g} GPUs idle per actor")


def _arch_checks(plan: Plan, facts: dict[str, ModelFacts]) -> None:
    cfg = plan.cfg
    tp = cfg.rollout.tensor_parallel_size
    if facts["rollout"].heads % tp:
        plan.problems.append(f"rollout.tensor_parallel_size {tp} must divide the policy's "
                             f"{facts['rollout'].heads} attention heads (vLLM)")


def _driver_eval(plan: Plan, facts: dict[str, ModelFacts]) -> None:
    """A note on where the evaluation after PPO runs: on the cluster (eval.placement; 'auto' on CUDA), in the
    shapes of PPO's roles once those are gone, or in the driver process on a GPU of its own."""
    cfg = plan.cfg
    if cfg.cluster.device != "cuda":
        return
    if evaluates_on_cluster(cfg):
        plan.notes.append("driver: holds no model; the evaluation after PPO runs on the cluster (eval.placement): "
                          "two rollout engines (cluster.rollout), two frozen policies (cluster.reference), the reward "
                          "actors (cluster.reward), placed once PPO's roles are gone")
        return
    rf = facts.get("reward")
    need = driver_eval_bytes(facts["policy"], facts["policy"].num_params, cfg.policy.dtype, cfg.eval.batch_size,
                             _shape(cfg), (rf, rf.backbone_params, cfg.reward_model.dtype) if rf else None)
    cap = plan.hardware.gpu_mem_gib * GIB
    verdict = "fits" if need <= cap else f"too big for one GPU ({need / cap:.1f}x): use eval.placement cluster"
    plan.notes.append(f"driver: eval.placement driver holds the trained and the starting policy in the driver "
                      f"process on one GPU: {need / GIB:.1f} GiB of {cap / GIB:g} GiB, {verdict}")


def make_plan(cfg: RLHFConfig, hw: Hardware) -> Plan:
    """The placement and memory plan of `cfg`'s PPO stage on `hw`; `plan.problems` lists what does not fit."""
    if cfg.cluster.device == "cuda" and hw.gpus_per_node < 1:
        raise PlanError("cluster.device is 'cuda': give the GPUs with --cluster gpus_per_node=N")
    active = set(active_roles(cfg))
    try:
        facts = _role_facts(cfg, active)
    except FactsError as err:
        raise PlanError(str(err)) from None
    groups = make_groups(cfg)
    plan = Plan(cfg, hw, _role_infos(cfg, facts, active), groups, role_memory(cfg, facts, active, hw))
    plan.problems += place(groups, hw, cfg.cluster.device)
    _arch_checks(plan, facts)
    _device_loads(plan)
    _check(plan)
    _driver_eval(plan, facts)
    for mem in plan.memory.values():
        plan.notes += [f"{mem.role}: {n}" for n in mem.notes]
    return plan
